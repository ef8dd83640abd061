"""The later methods as pipeline options: a mean teacher (kd.teacher=ema) and a cluster memory
(adapt.loss=cluster_memory) train end to end, deterministically, resume exactly, and leave the paper's default
untouched."""

import math

import numpy as np
import pytest
import torch

from reidmodel import pipeline
from reidmodel.config import apply_overrides
from reidmodel.losses import ReIDLoss
from reidmodel.memory import ClusterMemoryLoss
from reidmodel.pipeline import pretrain_signature, run_experiment
from reidmodel.ula import ULAResult
from tests.test_pipeline import _equal, _stable

EMA = {"kd.teacher": "ema", "kd.ema_momentum": 0.9}
MEMORY = {"adapt.loss": "cluster_memory", "memory.triplet": True}


@pytest.fixture
def source(tiny_config, tmp_path):
    path = tmp_path / "source.pt"
    pipeline.pretrain_source(tiny_config, path)
    return path


def weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def test_defaults_are_the_papers_and_the_options_share_its_pretraining(tiny_config):
    assert (tiny_config.kd.teacher, tiny_config.adapt.loss) == ("weight_merge", "ce_triplet")
    for option in (EMA, MEMORY):
        assert pretrain_signature(apply_overrides(tiny_config, option)) == pretrain_signature(tiny_config)


@pytest.mark.parametrize("option", [EMA, MEMORY, {**EMA, **MEMORY}], ids=["ema", "memory", "ema+memory"])
def test_each_option_trains_end_to_end_and_is_deterministic(tiny_config, source, tmp_path, option):
    config = apply_overrides(tiny_config, option)
    first = run_experiment(config, workdir=tmp_path / "a", source_checkpoint=source)
    second = run_experiment(config, workdir=tmp_path / "b", source_checkpoint=source)
    _equal(_stable(first), _stable(second))
    assert [row["ula_degenerate"] for row in first[1:]] == [0.0, 0.0]
    assert all(math.isfinite(row["loss_id"]) and math.isfinite(row["target_mAP"]) for row in first[1:])
    assert math.isnan(first[-1]["loss_center"]) == ("adapt.loss" in option)  # the memory has no centre loss
    state = weights(tmp_path / "a" / "checkpoints" / "cycle_002" / "state.pt")
    moved = state["target"]["stem.0.weight"] - weights(source)["model"]["stem.0.weight"]
    assert moved.abs().max() > 0  # the evaluated model learned


def test_the_mean_teacher_is_updated_every_step_and_resumes_exactly(tiny_config, source, tmp_path):
    config = apply_overrides(tiny_config, EMA)
    steps = []
    unbroken = run_experiment(config, lambda _, folder: steps.append(weights(folder / "state.pt")["teacher_steps"]),
                              workdir=tmp_path / "full", source_checkpoint=source)
    assert steps[0] == 0 and steps[1] > 0 and steps[2] > steps[1]  # one update per training batch
    state = weights(tmp_path / "full" / "checkpoints" / "cycle_002" / "state.pt")
    assert not torch.equal(state["target"]["stem.0.weight"], state["intermediate"]["stem.0.weight"])

    # A one-cycle run, continued for a second cycle from its checkpoint, must train as the unbroken run did.
    first_cycle = apply_overrides(config, {"adapt.cycles": 1})
    run_experiment(first_cycle, workdir=tmp_path / "broken", source_checkpoint=source)
    resumed = run_experiment(config, workdir=tmp_path / "broken",
                             resume_from=tmp_path / "broken" / "checkpoints" / "cycle_001")
    _equal(_stable(resumed), _stable(unbroken))


def test_a_pseudo_label_change_between_cycles_rebuilds_the_memory(tiny_config, monkeypatch):
    config = apply_overrides(tiny_config, MEMORY)
    run = pipeline.start_run(config)
    model = pipeline.build_model(config.model, num_classes=4).to(run.device)
    built = []

    def spy(*args):
        criterion = pipeline_target_loss(*args)
        built.append((criterion, criterion.memory.centroids.clone()))
        return criterion

    pipeline_target_loss = pipeline.target_loss
    monkeypatch.setattr(pipeline, "target_loss", spy)
    images = len(run.target.dataset.train)
    rng = np.random.default_rng(0)
    results = []
    for num_classes in (6, 5):  # the second cycle's clustering: other classes, other members
        labels = np.arange(images) % num_classes
        templates = torch.nn.functional.normalize(torch.as_tensor(rng.normal(size=(num_classes, model.feature_dim)),
                                                                  dtype=torch.float32), dim=1)
        results.append(ULAResult(rng.permutation(labels), templates.numpy(), {}))
        pipeline.fine_tune(run, model, results[-1], cycle=len(results))
    (first, first_start), (second, second_start) = built
    assert isinstance(first, ClusterMemoryLoss) and first is not second
    torch.testing.assert_close(first_start, torch.as_tensor(results[0].templates))
    torch.testing.assert_close(second_start, torch.as_tensor(results[1].templates))  # not cycle 1's centroids
    assert not torch.equal(first.memory.centroids, first_start)  # cycle 1 did move its memory


def test_the_papers_loss_is_built_by_default(tiny_config):
    templates = torch.nn.functional.normalize(torch.randn(3, 8), dim=1)
    criterion = pipeline.target_loss(tiny_config, templates, feature_dim=8)
    assert isinstance(criterion, ReIDLoss)
    torch.testing.assert_close(criterion.center.centers.detach(), templates)


def test_the_modern_space_pairs_every_row_with_the_final_setting_on_its_pretraining():
    from study.spaces import load_space

    space = load_space("modern")
    assert len(space.trials()) == 6 * 2 * 3
    base = space.base_config()
    assert (base.kd.teacher, base.adapt.loss, base.kd.mu) == ("weight_merge", "ce_triplet", 0.5)
    for variant in space.variants:
        assert pretrain_signature(apply_overrides(base, variant.set)) == pretrain_signature(base), variant.name
    for table in space.tables:
        assert {row.reference for row in table.rows if row.variant != "final"} == {"final"}, table.id
