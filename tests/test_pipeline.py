import dataclasses
import math

import pytest
import torch

from reidmodel import pipeline
from reidmodel.config import apply_overrides
from reidmodel.pipeline import pretrain_signature, run_experiment

VOLATILE = {"time_s"}


def _stable(cycles):
    return [{k: v for k, v in row.items() if k not in VOLATILE} for row in cycles]


def _equal(a, b):
    assert len(a) == len(b)
    for row_a, row_b in zip(a, b, strict=True):
        assert row_a.keys() == row_b.keys()
        for key in row_a:
            x, y = row_a[key], row_b[key]
            if isinstance(x, float) and math.isnan(x):
                assert math.isnan(y), key
            else:
                assert x == pytest.approx(y, abs=1e-9), key


def test_runs_every_cycle_and_reports_each(tiny_config, tmp_path):
    reported = []

    def report(metrics, folder):
        # The folder must be complete when reported: a tracker copies it right away.
        assert {p.name for p in folder.iterdir()} == {"state.pt", "history.csv", "cycles.csv", "config.yaml"}
        reported.append(metrics)

    cycles = run_experiment(tiny_config, report, workdir=tmp_path)
    assert [m["cycle"] for m in cycles] == [0, 1, 2]
    assert len(reported) == 3
    for metrics in reported:
        assert 0 <= metrics["target_mAP"] <= 100 and 0 <= metrics["source_mAP"] <= 100
    assert math.isnan(cycles[0]["ula_num_classes"])
    assert cycles[1]["ula_num_classes"] >= 1
    assert 0 <= cycles[1]["ula_precision"] <= 1
    assert not math.isnan(cycles[1]["loss_total"])
    # Only the last cycle's folder is kept.
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["cycle_002"]


def test_same_seed_same_metrics(tiny_config, tmp_path):
    first = run_experiment(tiny_config, workdir=tmp_path / "a")
    second = run_experiment(tiny_config, workdir=tmp_path / "b")
    _equal(_stable(first), _stable(second))


def test_resume_equals_an_unbroken_run(tiny_config, tmp_path):
    unbroken = run_experiment(tiny_config, workdir=tmp_path / "full")

    class Interrupt(Exception):
        pass

    def stop_after_first(metrics, folder):
        if metrics["cycle"] == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        run_experiment(tiny_config, stop_after_first, workdir=tmp_path / "broken")
    resumed = run_experiment(
        tiny_config, workdir=tmp_path / "broken", resume_from=tmp_path / "broken" / "checkpoints" / "cycle_001"
    )
    _equal(_stable(resumed), _stable(unbroken))


def test_training_never_sees_target_identities(tiny_config, tmp_path, monkeypatch):
    """Shuffling the target's true ids changes ULA's diagnostics only, never what is learned."""
    honest = run_experiment(tiny_config, workdir=tmp_path / "honest")
    load_domain = pipeline.load_domain

    def shuffled(config, name):
        domain = load_domain(config, name)
        if name == config.data.target:
            train = domain.dataset.train
            order = torch.randperm(len(train), generator=torch.Generator().manual_seed(1)).tolist()
            domain.dataset.train = [dataclasses.replace(r, pid=train[i].pid) for r, i in zip(train, order, strict=True)]
        return domain

    monkeypatch.setattr(pipeline, "load_domain", shuffled)
    blind = run_experiment(tiny_config, workdir=tmp_path / "blind")
    diagnostics = {"ula_precision", "ula_recall", "ula_purity", "ula_nmi"}
    _equal(
        [{k: v for k, v in row.items() if k not in diagnostics} for row in _stable(honest)],
        [{k: v for k, v in row.items() if k not in diagnostics} for row in _stable(blind)],
    )
    assert honest[1]["ula_precision"] != blind[1]["ula_precision"]


def test_paper_rows_are_settings(tiny_config, tmp_path):
    baseline = apply_overrides(tiny_config, {"model.attention": [], "model.bnneck": False, "adapt.cycles": 0})
    cycles = run_experiment(baseline, workdir=tmp_path / "baseline")
    assert [m["cycle"] for m in cycles] == [0]
    no_kd = apply_overrides(tiny_config, {"kd.enabled": False, "adapt.cycles": 1})
    assert len(run_experiment(no_kd, workdir=tmp_path / "nokd")) == 2


def test_source_checkpoint_is_shared_and_checked(tiny_config, tmp_path):
    path = tmp_path / "source.pt"
    pipeline.pretrain_source(tiny_config, path)
    same_pretraining = apply_overrides(tiny_config, {"kd.mu": 0.3, "ula.similarity_threshold": 0.7})
    assert pretrain_signature(same_pretraining) == pretrain_signature(tiny_config)
    run_experiment(apply_overrides(same_pretraining, {"adapt.cycles": 0}), workdir=tmp_path / "x",
                   source_checkpoint=path)
    other = apply_overrides(tiny_config, {"model.attention": ["conv5"]})
    assert pretrain_signature(other) != pretrain_signature(tiny_config)
    with pytest.raises(ValueError, match="another pre-training config"):
        run_experiment(other, workdir=tmp_path / "y", source_checkpoint=path)
