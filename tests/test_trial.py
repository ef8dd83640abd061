"""A trial's typed context and its config, built once per trial on the driver, without Ray running."""

import pickle

import study.trial
from study.paths import StudyPaths
from study.spaces import load_space
from study.trial import TrialConfigs, TrialContext, trial_config
from tests.tiny_studies import trial_context

# The keys a trial's params hold under "study". Trials need no MLflow since the driver logs them.
KEYS = ["name", "space", "preset", "fixed", "cache_dir", "cpus_per_trial", "scheduler"]


def test_context_travels_as_a_plain_dict_and_reads_the_one_older_studies_saved(tmp_path):
    space = load_space("smoke")
    paths = StudyPaths.resolve("smoke_try", tmp_path)
    context = TrialContext.for_study(space, paths)
    param = context.as_param()
    assert list(param) == KEYS
    assert param["cache_dir"] == str(tmp_path.resolve() / "cache" / "pretrain") and param["name"] == "smoke_try"
    assert TrialContext.of({"study": param}) == context
    # A study started before the driver took over MLflow saved its tracking URI and parent run in every trial.
    saved = {**param, "tracking_uri": "sqlite:///old.db", "parent_run_id": "p1"}
    assert TrialContext.of({"study": saved}) == context


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
