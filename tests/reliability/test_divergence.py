"""Item 2: a NaN or infinite loss, weight or feature stops the trial with DivergenceError; it is FAILED in Ray and
MLflow with that reason, the study goes on, and a diverged source model is never cached."""

import math

import pytest
import torch

from reidmodel.config import apply_overrides
from reidmodel.engine import DivergenceError, resolve_device
from reidmodel.model import build_model
from reidmodel.pipeline import evaluate_domain, load_domain, pretrain_source, run_experiment
from study.cache import PretrainCache

from .helpers import runs, snapshot


def test_source_divergence_is_an_error_and_is_not_cached(tiny_config, tmp_path):
    diverging = apply_overrides(tiny_config, {"source.lr": 1e30})
    cache = PretrainCache(tmp_path / "cache")
    with pytest.raises(DivergenceError, match=r"training loss is nan at batch \d+: .*lower source\.lr"):
        cache.get_or_train({"lr": 1e30}, lambda path: pretrain_source(diverging, path))
    assert [p.suffix for p in (tmp_path / "cache").iterdir()] == [".lock"]


def test_adaptation_divergence_is_an_error(tiny_config, tmp_path):
    config = apply_overrides(tiny_config, {"adapt.lr": 1e30, "adapt.cycles": 1})
    reported = []
    with pytest.raises(DivergenceError, match=r"lower adapt\.lr"):
        run_experiment(config, lambda metrics, _: reported.append(metrics), workdir=tmp_path)
    assert [m["cycle"] for m in reported] == [0]  # the source-only cycle is reported, never a diverged one


def test_nan_features_are_an_error(tiny_config):
    domain = load_domain(tiny_config, tiny_config.data.target)
    model = build_model(tiny_config.model, domain.dataset.num_train_pids)
    with torch.no_grad():
        next(model.parameters()).fill_(math.nan)
    with pytest.raises(DivergenceError, match="query features contain NaN"):
        evaluate_domain(tiny_config, model, domain, resolve_device("cpu"))


@pytest.mark.slow
def test_a_diverging_trial_fails_with_its_reason_and_the_study_goes_on(faulty_study):
    results, proc = faulty_study["results"], faulty_study["proc"]
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "error: study 'faulty' finished with 1 failed trial(s) of 2" in proc.stderr
    assert "Number of trials: 2/2 (1 ERROR, 1 TERMINATED)" in proc.stdout
    _, parent, children = runs(results, "faulty")
    trials = {c.data.tags["variant"]: c for c in children}
    assert parent.info.status == "FAILED"
    assert trials["ULA"].info.status == "FINISHED"  # the study went on
    diverged = trials["diverges"]
    assert diverged.info.status == "FAILED"
    assert "DivergenceError: training loss is nan" in diverged.data.tags["error"]
    assert "pretrain_key" not in diverged.data.tags  # failed in pre-training, yet its run exists
    cached = sorted(p.name for p in (results / "cache" / "pretrain").iterdir() if p.suffix == ".pt")
    assert cached == [f"{trials['ULA'].data.tags['pretrain_key']}.pt"]  # the diverged model was not cached
    # The report of a failed study is partial, and the finished study beside it is untouched.
    assert (results / "faulty.partial" / "README.md").read_text().startswith("> **Partial report**")
    assert not (results / "faulty").exists()
    assert snapshot(faulty_study["finished"]) == faulty_study["finished_before"]
