"""The trainable's decisions without Ray running: tags, labels, how a trial ended, the degenerate-ULA stopper."""

import pickle

from reidmodel.config import apply_overrides, preset
from study.tracking import TrialLogger
from study.trainable import DegenerateULAStopper
from study.trial import TrialConfigs, trial_label, trial_outcome, trial_tags
from tests.tiny_studies import trial_context

STUDY = trial_context(name="abl", space="ablation", preset="cpu", fixed={"adapt.cycles": 3}, scheduler="asha")


def grid_params(**extra):
    return {"study": STUDY, "direction": "synthetic_duke->synthetic_market", "seed": 2,
            "variant": {"name": "ULA(750)", "set": {"kd.enabled": False}}, **extra}


def test_tags_and_label_say_what_the_trial_is():
    assert trial_tags(grid_params()) == {"study": "abl", "space": "ablation", "direction":
                                         "synthetic_duke->synthetic_market", "seed": "2", "variant": "ULA(750)"}
    assert trial_label(grid_params()) == "ULA(750) | D->M | seed 2"
    sampled = {"study": STUDY, "direction": "synthetic_market->synthetic_duke", "seed": 0, "kd.mu": 0.123456,
               "model.attention": "conv4+conv5"}
    assert trial_label(sampled) == "mu=0.123, attention=conv4+conv5 | M->D | seed 0"


def test_outcome_of_a_trial_that_ended_without_error():
    config = apply_overrides(preset("cpu"), {"adapt.cycles": 3, "adapt.stop_on_degenerate": True})
    assert trial_outcome(config, {"cycle": 3}, "asha") == ("FINISHED", {})
    assert trial_outcome(config, {"cycle": 1}, "asha") == ("KILLED", {"stop_reason": "asha", "stopped_at_cycle": 1})
    assert trial_outcome(config, {"cycle": 2, "ula_degenerate": 1}, "asha") == (
        "KILLED", {"stop_reason": "degenerate_ula", "stopped_at_cycle": 2})
    assert trial_outcome(config, {"cycle": 0}, "none") == ("KILLED", {"stop_reason": "stopper", "stopped_at_cycle": 0})


def test_degenerate_stopper_follows_the_trial_config():
    stopper = DegenerateULAStopper(TrialConfigs())
    stopping = {"study": STUDY, "direction": "synthetic_duke->synthetic_market", "seed": 0,
                "variant": {"name": "v", "set": {"adapt.stop_on_degenerate": True}}}
    going_on = {**stopping, "variant": {"name": "w", "set": {"adapt.stop_on_degenerate": False}}}
    assert not stopper("t1", {"ula_degenerate": 0, "config": stopping})
    assert stopper("t1", {"ula_degenerate": 1, "config": stopping})
    assert not stopper("t2", {"ula_degenerate": 1, "config": going_on})
    assert not stopper.stop_all()


def test_stopper_and_callback_share_the_configs_after_a_resume():
    configs = TrialConfigs()
    saved = pickle.dumps([DegenerateULAStopper(configs), TrialLogger("sqlite:///x", "p", "abl", "none", configs)])
    stopper, callback = pickle.loads(saved)
    assert stopper.configs is callback.configs


def test_a_study_saved_before_the_shared_configs_still_resumes():
    stopper = DegenerateULAStopper.__new__(DegenerateULAStopper)
    stopper.__setstate__({"_stop_flags": {}})  # what tuner.pkl held for the stopper before
    params = {"study": STUDY, "direction": "synthetic_duke->synthetic_market", "seed": 0,
              "variant": {"name": "v", "set": {"adapt.stop_on_degenerate": True}}}
    assert stopper("t1", {"ula_degenerate": 1, "config": params})
