"""The cross-domain loop: source pre-training, then cycles of ULA -> fine-tune -> KD merge -> evaluate.

Every row of the paper's Tables 1 and 2 is a setting of this one function:
Baseline = ``model.attention=[] model.bnneck=false adapt.cycles=0``; CSAM-ReID = ``adapt.cycles=0``;
+ULA(K) = ``kd.enabled=false``; +KD(mu) = ``kd.mu=mu``. "No ULA" is ``ula.enabled=false`` (fine-tuning is then
skipped and only KD-free evaluation remains, i.e. source-only per cycle).

Ground-truth target identities are read for ULA's diagnostics only (pseudo-label precision, purity, NMI); labels,
templates and training never see them (tests/test_pipeline.py shuffles them to prove it).
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import logging
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reidmodel.config import ExperimentConfig, to_yaml
from reidmodel.cycle_metrics import LOSS_KEYS, ULA_KEYS, cycle_metric_names
from reidmodel.data import (
    ReIDDataset,
    build_test_loader,
    build_train_loader,
    ensure_synthetic,
    load_images,
    resolve_dataset,
    verify_image,
)
from reidmodel.data.synthetic import SYNTHETIC_DOMAINS
from reidmodel.engine import (
    build_optimizers,
    check_finite,
    epoch_seed,
    resolve_device,
    seed_everything,
    step_schedule,
    train_one_epoch,
)
from reidmodel.evaluation import evaluate_features, evaluate_rank, extract_features
from reidmodel.kd import merge_weights
from reidmodel.losses import ReIDLoss
from reidmodel.model import ReIDNet, build_model
from reidmodel.rerank import re_ranking_features
from reidmodel.ula import label_adaptation, resolve_num_classes

log = logging.getLogger(__name__)

# Bump when the meaning of a saved source checkpoint changes, so caches keyed on the signature miss.
PRETRAIN_FORMAT = 1
Report = Callable[[dict[str, Any], Path], None]


@dataclasses.dataclass
class Domain:
    """One dataset with its images decoded once (when ``data.in_memory``) for every loader that reads it."""

    dataset: ReIDDataset
    images: dict[str, torch.Tensor | None]


def load_domain(config: ExperimentConfig, name: str) -> Domain:
    data = config.data
    if data.root is None:
        if name not in SYNTHETIC_DOMAINS:
            raise ValueError(
                f"dataset {name!r} needs data.root (the folder holding it); without a root only the synthetic "
                f"domains {', '.join(SYNTHETIC_DOMAINS)} exist"
            )
        root = ensure_synthetic(
            Path(data.synthetic_cache).expanduser(), num_ids=data.synthetic_ids, seed=data.synthetic_seed
        )
    else:
        root = Path(data.root).expanduser()
    dataset = resolve_dataset(name, root)
    log.info("loaded %s from %s\n%s", name, root, dataset.summary())
    images: dict[str, torch.Tensor | None] = {"train": None, "query": None, "gallery": None}
    for split in images:
        records = getattr(dataset, split)
        if data.in_memory:
            images[split] = load_images(records, data.height, data.width)
        else:
            # Decode every image once now (about 0.25 ms per 128x64 JPEG), so that a corrupt file stops the run
            # here, named, instead of in a loader worker after pre-training.
            for record in records:
                verify_image(record.path)
    return Domain(dataset, images)


def pretrain_signature(config: ExperimentConfig) -> dict[str, Any]:
    """Everything stage 1 depends on: two configs with equal signatures share one source checkpoint."""
    data = config.data
    root = None if data.root is None else str(Path(data.root).expanduser().resolve())
    return {
        "format": PRETRAIN_FORMAT,
        "data": {
            "root": root,
            "source": data.source,
            "synthetic": None if root else [data.synthetic_ids, data.synthetic_seed],
            "size": [data.height, data.width],
            "batch": [data.batch_size, data.num_instances],
            "augment": [data.flip_prob, data.pad, data.color_jitter, data.random_erasing_prob],
        },
        "model": dataclasses.asdict(config.model),
        "loss": dataclasses.asdict(config.loss),
        "source": dataclasses.asdict(config.source),
        "seed": config.runtime.seed,
    }


def pretrain_source(
    config: ExperimentConfig, out_path: Path, progress: bool = False, source: Domain | None = None
) -> dict[str, float]:
    """Stage 1: supervised training on the labelled source domain; writes the checkpoint to ``out_path``."""
    _setup_runtime(config)
    device = resolve_device(config.runtime.device)
    source = source or load_domain(config, config.data.source)
    model = build_model(config.model, source.dataset.num_train_pids).to(device)
    _channels_last(model, config)
    criterion = ReIDLoss(config.loss, source.dataset.num_train_pids, model.feature_dim).to(device)
    optimizer, center_optimizer = build_optimizers(
        model, criterion, config.source.lr, config.source.weight_decay, config.loss.center_lr
    )
    schedule = step_schedule(
        optimizer, config.source.step_size, config.source.gamma, config.source.warmup_epochs
    )
    history = []
    start = time.perf_counter()
    for epoch in range(config.source.epochs):
        loader = build_train_loader(
            source.dataset.train,
            config.data,
            seed=epoch_seed(config.runtime.seed, "source", 0, epoch),
            images=source.images["train"],
        )
        torch.manual_seed(epoch_seed(config.runtime.seed, "source", 0, epoch))
        bar = _progress(progress, len(loader), f"source epoch {epoch + 1}/{config.source.epochs}")
        losses = train_one_epoch(
            model, loader, criterion, optimizer, center_optimizer, device,
            config.loss.center_weight, config.runtime.amp, config.runtime.channels_last, bar, lr_key="source.lr",
        )
        _close(bar)
        schedule.step()
        history.append({"stage": "source", "cycle": 0, "epoch": epoch + 1, **losses})
        log.info("source epoch %d/%d %s", epoch + 1, config.source.epochs, _fmt(losses))
    elapsed = time.perf_counter() - start
    # A diverged model must never be saved: the pre-training cache would share it with every trial of its key.
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point():
            check_finite(tensor, f"source model weights ({name})", "lower source.lr")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "model": model.state_dict(),
            "num_classes": source.dataset.num_train_pids,
            "signature": pretrain_signature(config),
            "history": history,
            "train_seconds": elapsed,
        },
        out_path,
    )
    return {"source_train_seconds": elapsed, **(history[-1] if history else {})}


def run_experiment(
    config: ExperimentConfig,
    report: Report | None = None,
    *,
    workdir: Path,
    source_checkpoint: Path | None = None,
    resume_from: Path | None = None,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Run (or resume) one experiment; ``report(metrics, checkpoint_dir)`` is called once per cycle.

    Cycle 0 is the source-only model right after pre-training. ``checkpoint_dir`` holds what ``resume_from``
    needs to continue after that cycle, plus ``history.csv`` (per-epoch losses) and ``cycles.csv``.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    _setup_runtime(config)
    device = resolve_device(config.runtime.device)
    source = load_domain(config, config.data.source)
    target = source if config.data.target == config.data.source else load_domain(config, config.data.target)

    if resume_from is not None:
        state = torch.load(Path(resume_from) / "state.pt", map_location="cpu", weights_only=True)
        history = _read_csv(Path(resume_from) / "history.csv")
        cycles = _read_csv(Path(resume_from) / "cycles.csv")
        first_cycle = int(state["cycle"]) + 1
        target_model = _model_from_state(config, state["target"], state["target_classes"], device)
        intermediate = (
            _model_from_state(config, state["intermediate"], state["intermediate_classes"], device)
            if state["intermediate"] is not None
            else None
        )
        log.info("resumed after cycle %d from %s", first_cycle - 1, resume_from)
    else:
        if source_checkpoint is None:
            source_checkpoint = workdir / "source.pt"
            pretrain_source(config, source_checkpoint, progress=progress, source=source)
        checkpoint = torch.load(source_checkpoint, map_location="cpu", weights_only=True)
        if checkpoint.get("signature") != pretrain_signature(config):
            raise ValueError(
                f"source checkpoint {source_checkpoint} was trained with another pre-training config: "
                "delete it or pass the matching one"
            )
        target_model = _model_from_state(config, checkpoint["model"], checkpoint["num_classes"], device)
        intermediate = None
        history = list(checkpoint["history"])
        cycles = []
        first_cycle = 0

    num_classes = resolve_num_classes(config.ula, target.dataset.num_train_pids)
    true_ids = np.array([record.pid for record in target.dataset.train])
    for cycle in range(first_cycle, config.adapt.cycles + 1):
        start = time.perf_counter()
        ula: dict[str, Any] = {}
        losses: dict[str, float] = {}
        if cycle > 0 and config.ula.enabled:
            features = extract_features(
                target_model, _test_loader(config, target, "train"), device
            )
            check_finite(features, f"cycle {cycle}: target training features", "lower adapt.lr")
            result = label_adaptation(features, config.ula, num_classes, true_ids=true_ids)
            ula = result.diagnostics
            if ula["degenerate"]:
                log.warning("cycle %d: ULA is degenerate, the model is left unchanged: %s", cycle, ula["reason"])
            else:
                intermediate = intermediate or copy.deepcopy(target_model)
                losses = _fine_tune(config, intermediate, target, result, cycle, history, device, progress)
                merge_weights(target_model, intermediate, merge_factor(config))
        if cycle == 0 and history:  # the source-only model reports pre-training's last losses
            losses = {key: history[-1][key] for key in LOSS_KEYS}
        metrics = _every_metric({
            **_evaluate_cycle(config, target_model, source, target, device),
            "cycle": cycle,
            "epoch": config.source.epochs + cycle * config.adapt.cycle_epochs,
            "time_s": time.perf_counter() - start,
            **{f"ula_{key}": float(ula[key]) for key in ULA_KEYS if ula.get(key) is not None},
            **losses,
        })
        cycles.append(metrics)
        log.info("cycle %d %s", cycle, _fmt(metrics))
        checkpoint_dir = _save_cycle(workdir, config, cycle, target_model, intermediate, history, cycles)
        if report is not None:
            report(dict(metrics), checkpoint_dir)
        if ula.get("degenerate") and config.adapt.stop_on_degenerate:
            log.warning("stopping after cycle %d: adapt.stop_on_degenerate is set", cycle)
            break
    return cycles


def merge_factor(config: ExperimentConfig) -> float:
    """The KD factor mu actually applied: without KD the target simply becomes the fine-tuned model."""
    return config.kd.mu if config.kd.enabled else 1.0


def _fine_tune(config, model: ReIDNet, target: Domain, result, cycle, history, device, progress) -> dict:
    """Train the intermediate model on the pseudo-labelled target set for one cycle."""
    templates = torch.as_tensor(result.templates, dtype=torch.float32)
    model.reset_classifier(len(templates), weight=templates)
    model.to(device)
    criterion = ReIDLoss(config.loss, len(templates), model.feature_dim).to(device)
    criterion.center.set_centers(templates)
    optimizer, center_optimizer = build_optimizers(
        model, criterion, config.adapt.lr, config.adapt.weight_decay, config.loss.center_lr
    )
    losses: dict[str, float] = {}
    for epoch in range(config.adapt.cycle_epochs):
        seed = epoch_seed(config.runtime.seed, "adapt", cycle, epoch)
        loader = build_train_loader(
            target.dataset.train, config.data, labels=result.pseudo_labels, seed=seed, images=target.images["train"]
        )
        torch.manual_seed(seed)
        bar = _progress(progress, len(loader), f"cycle {cycle} epoch {epoch + 1}/{config.adapt.cycle_epochs}")
        losses = train_one_epoch(
            model, loader, criterion, optimizer, center_optimizer, device,
            config.loss.center_weight, config.runtime.amp, config.runtime.channels_last, bar, lr_key="adapt.lr",
        )
        _close(bar)
        history.append({"stage": "adapt", "cycle": cycle, "epoch": epoch + 1, **losses})
    return losses


def _evaluate_cycle(config, model, source: Domain, target: Domain, device) -> dict[str, float]:
    metrics = {f"target_{k}": v for k, v in evaluate_domain(config, model, target, device).items()}
    if config.eval.eval_source:
        metrics.update({f"source_{k}": v for k, v in evaluate_domain(config, model, source, device).items()})
    return metrics


def _every_metric(measured: dict[str, Any]) -> dict[str, Any]:
    """Every registered metric in report order, NaN where this cycle measured nothing (no ULA at cycle 0, no
    fine-tuning after a degenerate ULA, no source evaluation), so that every cycle's row has the same columns."""
    return {name: measured.get(name, math.nan) for name in cycle_metric_names()}


def evaluate_domain(config: ExperimentConfig, model, domain: Domain, device) -> dict[str, float]:
    """Query/gallery evaluation under the Market protocol; rank metrics in percent, as the paper's tables."""
    query = extract_features(model, _test_loader(config, domain, "query"), device)
    gallery = extract_features(model, _test_loader(config, domain, "gallery"), device)
    for split, features in (("query", query), ("gallery", gallery)):
        check_finite(features, f"{domain.dataset.name} {split} features")
    dataset = domain.dataset
    ids = (
        np.array([r.pid for r in dataset.query]),
        np.array([r.pid for r in dataset.gallery]),
        np.array([r.camid for r in dataset.query]),
        np.array([r.camid for r in dataset.gallery]),
    )
    if config.eval.rerank:
        distance = re_ranking_features(query, gallery, metric=config.eval.distance)
        result = evaluate_rank(distance, *ids, max_rank=config.eval.max_rank)
    else:  # distances computed a chunk of queries at a time, never the full matrix
        result = evaluate_features(query, gallery, *ids, max_rank=config.eval.max_rank, metric=config.eval.distance)
    cmc = result["cmc"]
    return {
        "mAP": 100 * result["mAP"],
        "R1": 100 * float(cmc[0]),
        "R5": 100 * float(cmc[min(4, len(cmc) - 1)]),
        "R10": 100 * float(cmc[min(9, len(cmc) - 1)]),
        "mINP": 100 * result["mINP"],
    }


def _test_loader(config: ExperimentConfig, domain: Domain, split: str):
    return build_test_loader(
        getattr(domain.dataset, split), config.data, images=domain.images[split], batch_size=config.eval.batch_size
    )


def _model_from_state(config: ExperimentConfig, state: dict, num_classes: int, device) -> ReIDNet:
    model = build_model(dataclasses.replace(config.model, pretrained="none"), num_classes)
    model.load_state_dict(state)
    model.to(device)
    _channels_last(model, config)
    return model


def _save_cycle(workdir: Path, config, cycle, target_model, intermediate, history, cycles) -> Path:
    """Write this cycle's resumable state into a fresh folder and drop the previous one."""
    folder = workdir / "checkpoints" / f"cycle_{cycle:03d}"
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    # Without KD (mu = 1) the intermediate equals the target up to its classifier, which every cycle
    # rebuilds: saving it would double the checkpoint for nothing.
    if merge_factor(config) == 1.0:
        intermediate = None
    torch.save(
        {
            "cycle": cycle,
            "target": target_model.state_dict(),
            "target_classes": target_model.classifier.out_features,
            "intermediate": None if intermediate is None else intermediate.state_dict(),
            "intermediate_classes": None if intermediate is None else intermediate.classifier.out_features,
        },
        tmp / "state.pt",
    )
    _write_csv(tmp / "history.csv", history)
    _write_csv(tmp / "cycles.csv", cycles)
    (tmp / "config.yaml").write_text(to_yaml(config))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    for older in (workdir / "checkpoints").glob("cycle_*"):
        if older != folder:
            shutil.rmtree(older, ignore_errors=True)
    return folder


def _write_csv(path: Path, rows: list[dict]) -> None:
    fields: list[str] = []
    for row in rows:
        fields.extend(k for k in row if k not in fields)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(handle)]


def _number(text: str):
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value


def _setup_runtime(config: ExperimentConfig) -> None:
    seed_everything(config.runtime.seed)
    if config.runtime.threads > 0:
        torch.set_num_threads(config.runtime.threads)


def _channels_last(model, config) -> None:
    if config.runtime.channels_last:
        model.to(memory_format=torch.channels_last)


def _progress(enabled: bool, total: int, desc: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)


def _close(bar) -> None:
    if bar is not None:
        bar.close()


def _fmt(metrics: dict) -> str:
    return " ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
        for k, v in metrics.items()
        if not (isinstance(v, float) and math.isnan(v))
    )
