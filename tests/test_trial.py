"""A trial's typed context and its config, built once per trial on the driver, without Ray running."""

import pickle

import study.trial
from study.paths import StudyPaths
from study.spaces import load_space
from study.trial import TrialConfigs, TrialContext, trial_config
from tests.tiny_studies import trial_context

# The keys a trial's params held under "study" before TrialContext: a study saved then must still resume.
SAVED_KEYS = ["name", "space", "preset", "fixed", "tracking_uri", "parent_run_id", "cache_dir", "cpus_per_trial",
              "scheduler"]


def test_context_travels_as_the_dict_saved_studies_hold(tmp_path):
    space = load_space("smoke")
    paths = StudyPaths.resolve("smoke_try", tmp_path)
    context = TrialContext.for_study(space, paths, parent_run_id="p1")
    param = context.as_param()
    assert list(param) == SAVED_KEYS
    assert param["cache_dir"] == str(tmp_path.resolve() / "cache" / "pretrain") and param["name"] == "smoke_try"
    assert TrialContext.of({"study": param}) == context


def test_driver_builds_each_trial_config_once_and_saves_none(monkeypatch):
    built = []
    monkeypatch.setattr(study.trial, "trial_config", lambda params: built.append(params["seed"]) or params["seed"])
    configs = TrialConfigs()
    params = {"study": trial_context(), "direction": "synthetic_duke->synthetic_market", "seed": 3}
    assert [configs.get("t1", params) for _ in range(3)] == [3, 3, 3]
    assert configs.get("t2", {**params, "seed": 4}) == 4
    assert built == [3, 4]
    restored = pickle.loads(pickle.dumps(configs))
    assert restored.get("t1", {**params, "seed": 5}) == 5  # rebuilt from the params after a resume


def test_cached_config_is_the_trial_config():
    params = {"study": trial_context(fixed={"adapt.cycles": 2}), "direction": "synthetic_duke->synthetic_market",
              "seed": 1, "variant": {"name": "v", "set": {"kd.mu": 0.3}}}
    assert TrialConfigs().get("t", params).flat() == trial_config(params).flat()
