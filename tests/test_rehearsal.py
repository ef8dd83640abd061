"""The real-data spaces on a stand-in data root: a CI-sized rehearsal of the paper preset's whole loop (source
pre-training, ULA, fine-tuning, KD, evaluation) through the config the ablation-paper space builds for a trial."""

from __future__ import annotations

import pytest

from reidmodel.config import apply_overrides
from reidmodel.data.synthetic import generate_benchmark
from reidmodel.pipeline import pretrain_signature, run_experiment
from study.spaces import load_space
from study.trial import trial_config
from tests.tiny_studies import trial_context

# The paper preset except: no ImageNet download, one epoch of one P x K batch of 4 x 4, no loader processes, and
# the stand-in images' own 128x64 (256x128 forward passes run at about 2 images/s on the 2-core CI machine).
CI_SIZED = {"model.pretrained": "none", "source.epochs": 1, "adapt.cycles": 1, "adapt.cycle_epochs": 1,
            "data.max_batches": 1, "data.batch_size": 16, "data.workers": 0, "data.height": 128, "data.width": 64,
            "eval.eval_source": False, "runtime.threads": 2}


@pytest.fixture(scope="module")
def stand_in_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("reid")
    return generate_benchmark(root, height=128, width=64, real_scale=0.005)


def test_a_paper_preset_trial_runs_end_to_end_on_the_stand_in(stand_in_root, tmp_path):
    space = load_space("ablation-paper", stand_in_root, overrides=CI_SIZED)
    variant = next(v for v in space.variants if v.name == "ULA(750)+KD(0.5)")
    config = trial_config({"study": trial_context(preset=space.preset, fixed=space.fixed),
                           "direction": "dukemtmc->market1501", "variant": {"set": variant.set}})
    assert (config.preset, config.model.backbone, config.data.source, config.data.target) == (
        "paper", "resnet50", "dukemtmc", "market1501")
    cycles = run_experiment(config, workdir=tmp_path)
    assert [row["cycle"] for row in cycles] == [0, 1]
    assert all(0 <= row["target_mAP"] <= 100 for row in cycles)


def test_the_epoch_cap_is_part_of_the_pretraining_key():
    config = load_space("smoke").base_config()
    capped = apply_overrides(config, {"data.max_batches": 2})
    assert pretrain_signature(capped) != pretrain_signature(config)
    assert pretrain_signature(capped)["data.max_batches"] == 2 and pretrain_signature(config)["data.max_batches"] is None
