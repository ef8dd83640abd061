import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from reidmodel import pipeline
from reidmodel.config import apply_overrides
from reidmodel.engine import machine_description
from reidmodel.model import build_model
from reidmodel.pipeline import pretrain_signature, run_experiment
from study.spaces import load_space
from study.trial import trial_config
from tests.tiny_studies import trial_context

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


def test_runs_every_cycle_and_reports_each(tiny_config, tmp_path, caplog):
    reported = []

    def report(metrics, folder):
        # The folder must be complete when reported: a tracker copies it right away.
        assert {p.name for p in folder.iterdir()} == {"state.pt", "history.csv", "cycles.csv", "config.yaml"}
        reported.append(metrics)

    with caplog.at_level("INFO", logger="reidmodel.pipeline"):
        cycles = run_experiment(tiny_config, report, workdir=tmp_path)
    assert [m["cycle"] for m in cycles] == [0, 1, 2]
    assert f"computing on {machine_description(torch.device('cpu'))}" in caplog.messages  # where the numbers came from
    assert len(reported) == 3
    for metrics in reported:
        assert 0 <= metrics["target_mAP"] <= 100 and 0 <= metrics["source_mAP"] <= 100
    assert math.isnan(cycles[0]["ula_num_classes"])
    assert cycles[1]["ula_num_classes"] >= 1
    assert 0 <= cycles[1]["ula_precision"] <= 1
    assert not math.isnan(cycles[1]["loss_total"])
    # Every cycle's model validators, DEV included (the source evaluation is on).
    for metrics in cycles:
        assert all(math.isfinite(metrics[key]) for key in ("snd", "class_ami", "info_max", "bnm", "dev"))
    # IM's classifier has the cycle's ULA class count, which the benchmark derives IM / log K of for older studies.
    assert cycles[1]["ula_degenerate"] == 0
    assert cycles[1]["info_max_ratio"] == pytest.approx(cycles[1]["info_max"] / math.log(cycles[1]["ula_num_classes"]))
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
    """Each ablation row changes exactly the keys it declares, and the pipeline acts on them."""
    space = load_space("ablation")
    variants = {v.name: v for v in space.variants}

    def trial(variant=None):
        params = {"study": trial_context(preset=space.preset, fixed=space.fixed), "direction": space.directions[0]}
        return trial_config({**params, "variant": {"set": variant.set}} if variant else params).flat()

    base = trial()
    for variant in space.variants:
        row = trial(variant)
        declared = {key: "+".join(v) if isinstance(v, list) else v for key, v in variant.set.items()}
        assert {key for key in row if row[key] != base[key]} <= set(declared), variant.name
        assert {key: row[key] for key in declared} == declared, variant.name

    def tiny_row(name, **more):
        return apply_overrides(tiny_config, {**space.fixed, **variants[name].set, **more})

    def weights(path):
        return torch.load(path, map_location="cpu", weights_only=True)

    assert [m["cycle"] for m in run_experiment(tiny_row("Baseline"), workdir=tmp_path / "baseline")] == [0]
    baseline = weights(tmp_path / "baseline" / "source.pt")["model"]
    assert not any(key.startswith(("attention.", "bottleneck.")) for key in baseline)
    assert [m["cycle"] for m in run_experiment(tiny_row("CSAM-ReID"), workdir=tmp_path / "csam")] == [0]
    source = weights(tmp_path / "csam" / "source.pt")["model"]
    assert {key.split(".")[1] for key in source if key.startswith("attention.")} == {"conv3", "conv4", "conv5"}
    assert "bottleneck.running_mean" in source

    # KD: the target after a cycle is the source moved mu of the way to the fine-tuned intermediate.
    kd = tiny_row("ULA(750)+KD(0.3)", **{"adapt.cycles": 1})
    cycles = run_experiment(kd, workdir=tmp_path / "kd", source_checkpoint=tmp_path / "csam" / "source.pt")
    assert [m["cycle"] for m in cycles] == [0, 1] and cycles[1]["ula_degenerate"] == 0
    state = weights(tmp_path / "kd" / "checkpoints" / "cycle_001" / "state.pt")
    target, intermediate = state["target"], state["intermediate"]
    merged = [key for key in target if target[key].is_floating_point() and not key.startswith("classifier.")]
    assert merged and not torch.equal(intermediate["stem.0.weight"], source["stem.0.weight"])
    for key in merged:
        torch.testing.assert_close(target[key], source[key].lerp(intermediate[key], 0.3), msg=key)


def test_stop_on_degenerate_ends_the_run_after_that_cycle(tiny_config, tmp_path):
    source = tmp_path / "source.pt"
    pipeline.pretrain_source(tiny_config, source)
    # One base class is always degenerate: the cycle leaves the model as it was.
    degenerate = apply_overrides(tiny_config, {"ula.num_classes": 1, "adapt.cycles": 2})
    kept_going = run_experiment(degenerate, workdir=tmp_path / "on", source_checkpoint=source)
    assert [m["cycle"] for m in kept_going] == [0, 1, 2]
    assert [m["ula_degenerate"] for m in kept_going[1:]] == [1.0, 1.0]
    assert kept_going[2]["target_mAP"] == pytest.approx(kept_going[0]["target_mAP"])

    reported = []
    stopping = apply_overrides(degenerate, {"adapt.stop_on_degenerate": True})
    stopped = run_experiment(stopping, lambda metrics, _: reported.append(metrics["cycle"]), workdir=tmp_path / "off",
                             source_checkpoint=source)
    assert [m["cycle"] for m in stopped] == reported == [0, 1]


def test_rerank_distance_is_the_one_evaluated(tiny_config, monkeypatch):
    config = apply_overrides(tiny_config, {"eval.rerank": True})
    domain = pipeline.load_domain(config, config.data.target)
    model = build_model(config.model, num_classes=4)
    cpu = torch.device("cpu")
    reranked = pipeline.evaluate_domain(config, model, domain, cpu)
    assert all(0 <= value <= 100 for value in reranked.values())

    query = np.array([r.pid for r in domain.dataset.query])
    gallery = np.array([r.pid for r in domain.dataset.gallery])
    shapes = []

    def oracle(query_features, gallery_features, metric):
        shapes.append((tuple(query_features.shape), tuple(gallery_features.shape), metric))
        return (query[:, None] != gallery[None, :]).astype(np.float32)

    monkeypatch.setattr(pipeline, "re_ranking_features", oracle)
    perfect = pipeline.evaluate_domain(config, model, domain, cpu)
    dim = model.feature_dim
    assert shapes == [((len(query), dim), (len(gallery), dim), config.eval.distance)]
    assert perfect["mAP"] == perfect["R1"] == 100
    plain = pipeline.evaluate_domain(apply_overrides(config, {"eval.rerank": False}), model, domain, cpu)
    assert len(shapes) == 1 and plain["mAP"] < 100


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


def test_the_pretraining_key_is_every_setting_marked_for_stage_one():
    from pydantic import Field

    from reidmodel.config import SOURCE_STAGE, ExperimentConfig, RuntimeConfig, preset

    class Runtime(RuntimeConfig):
        stage_one_knob: int = Field(0, json_schema_extra=SOURCE_STAGE, description="read by pre-training")
        later_knob: int = Field(0, description="read by the cycles only")

    class Experiment(ExperimentConfig):
        runtime: Runtime = Field(default_factory=Runtime)

    base = Experiment(**preset("cpu").model_dump(exclude={"runtime"}))
    key = pretrain_signature(base)
    assert pretrain_signature(base.model_copy(update={"runtime": Runtime(stage_one_knob=1)})) != key
    assert pretrain_signature(base.model_copy(update={"runtime": Runtime(later_knob=1)})) == key
    config = preset("cpu")
    for stage_one in ({"runtime.amp": True}, {"source.lr": 1e-3}, {"data.pad": 0}, {"model.bnneck": False}):
        assert pretrain_signature(apply_overrides(config, stage_one)) != pretrain_signature(config), stage_one
    for later in ({"adapt.cycles": 3}, {"eval.rerank": True}, {"data.workers": 0}, {"data.target": "x"}):
        assert pretrain_signature(apply_overrides(config, later)) == pretrain_signature(config), later
    relative = apply_overrides(config, {"data.root": "."})
    assert pretrain_signature(relative)["data.root"] == str(Path.cwd())  # one key however the root is written


def test_k_of_the_clusters_runs_the_loop_without_the_identity_count(tiny_config, tmp_path):
    """ula.class_ratio_of=clusters: each cycle's K is class_ratio x the clusters that step found, whatever the
    target's identity count."""
    config = apply_overrides(tiny_config, {"ula.num_classes": None, "ula.class_ratio": 0.5,
                                           "ula.class_ratio_of": "clusters", "adapt.cycles": 1})
    cycle = run_experiment(config, workdir=tmp_path)[1]
    assert cycle["ula_requested_classes"] == max(1, round(0.5 * cycle["ula_num_clusters"]))
