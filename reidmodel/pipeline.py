"""The cross-domain loop: source pre-training, then cycles of ULA -> fine-tune -> KD merge -> evaluate.

Every row of the paper's Tables 1 and 2 is a setting of this one function:
Baseline = ``model.attention=[] model.bnneck=false adapt.cycles=0``; CSAM-ReID = ``adapt.cycles=0``;
+ULA(K) = ``kd.enabled=false``; +KD(mu) = ``kd.mu=mu``. "No ULA" is ``ula.enabled=false`` (fine-tuning is then
skipped and only KD-free evaluation remains, i.e. source-only per cycle).

The loop is a few named stages over one typed state (``AdaptState``): ``start_run`` (seed, device, data), then
``source_model`` (stage 1) or ``resume``, and per cycle ``run_cycle`` (``pseudo_labels`` -> ``fine_tune`` ->
``kd_merge`` -> ``evaluate_cycle``) and ``save``; ``reidmodel.checkpoint`` owns what goes on disk.

Ground-truth target identities are read for ULA's diagnostics only (pseudo-label precision, purity, NMI) and, when
``data.target_val_ids`` holds some identities out as a labelled validation split, for that split's evaluation; labels,
templates, training and the label-free validators (``reidmodel.validators``) never see them (tests/test_pipeline.py
shuffles them to prove it).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from reidmodel.checkpoint import (
    CycleCheckpoint,
    SourceCheckpoint,
    load_cycle,
    load_source,
    save_cycle,
    save_source,
)
from reidmodel.config import SOURCE_STAGE, ExperimentConfig, marked_settings, to_yaml
from reidmodel.cycle_metrics import (
    EVAL_KEYS,
    LOSS_KEYS,
    TARGET_VAL_KEYS,
    ULA_KEYS,
    cmc_rank,
    cycle_metric_names,
    metric,
)
from reidmodel.data import (
    ReIDDataset,
    build_test_loader,
    build_train_loader,
    decode_image,
    ensure_synthetic,
    load_images,
    resolve_dataset,
)
from reidmodel.data.synthetic import SYNTHETIC_DOMAINS
from reidmodel.engine import (
    TrainStep,
    build_optimizers,
    check_finite,
    machine_description,
    resolve_device,
    seed_everything,
    step_schedule,
    train_epochs,
)
from reidmodel.evaluation import evaluate_features, evaluate_rank, extract_features
from reidmodel.kd import merge_weights
from reidmodel.losses import ReIDLoss
from reidmodel.memory import ClusterMemoryLoss
from reidmodel.model import ReIDNet, build_model
from reidmodel.rerank import re_ranking_features
from reidmodel.teacher import EMATeacher
from reidmodel.ula import ULAResult, label_adaptation, resolve_num_classes
from reidmodel.validators import clustering_validators, model_validators, sample_indices

log = logging.getLogger(__name__)

# Bump when the meaning of a saved source checkpoint changes, so caches keyed on the signature miss.
PRETRAIN_FORMAT = 1
# The target validation identities are drawn from the dataset alone, the same for every training seed.
TARGET_VAL_SEED = 0
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
                decode_image(record.path)
    return Domain(dataset, images)


def pretrain_signature(config: ExperimentConfig) -> dict[str, Any]:
    """Everything stage 1 depends on, the settings reidmodel/config.py marks SOURCE_STAGE (the data root
    resolved): two configs with equal signatures share one source checkpoint."""
    settings = marked_settings(config, SOURCE_STAGE)
    root = settings["data.root"]
    settings["data.root"] = None if root is None else str(Path(root).expanduser().resolve())
    return {"format": PRETRAIN_FORMAT, **settings}


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
    step = _train_step(config, model, criterion, stage="source", device=device)
    schedule = step_schedule(
        step.optimizer, config.source.step_size, config.source.gamma, config.source.warmup_epochs
    )
    start = time.perf_counter()
    history = train_epochs(
        model, step, _loaders(config, source), epochs=config.source.epochs, seed=config.runtime.seed,
        stage="source", schedule=schedule, progress=progress,
    )
    elapsed = time.perf_counter() - start
    # A diverged model must never be saved: the pre-training cache would share it with every trial of its key.
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point():
            check_finite(tensor, f"source model weights ({name})", "lower source.lr")
    checkpoint = SourceCheckpoint(
        model=model.state_dict(), num_classes=source.dataset.num_train_pids, signature=pretrain_signature(config),
        history=history, train_seconds=elapsed,
    )
    save_source(out_path, checkpoint)
    return {"source_train_seconds": elapsed, **(history[-1] if history else {})}


@dataclasses.dataclass
class Run:
    """What every stage of one experiment reads and none changes."""

    config: ExperimentConfig
    device: torch.device
    source: Domain
    target: Domain  # its training set is ULA's pool: without the validation identities, when some are held out
    target_val: Domain | None = None  # the labelled target validation split (data.target_val_ids), query/gallery
    progress: bool = False


@dataclasses.dataclass
class AdaptState:
    """What the cycles change: the models, the per-epoch and per-cycle records, and where to go on."""

    target_model: ReIDNet
    intermediate: ReIDNet | None  # the fine-tuned model KD merges from; None before the first fine-tuning
    history: list[dict]  # per-epoch losses, pre-training's first
    cycles: list[dict]  # per-cycle metrics
    next_cycle: int
    pseudo_labels: np.ndarray | None = None  # the last ULA's, for the next cycle's pseudo-label stability
    teacher_steps: int = 0  # updates of the mean teacher so far (kd.teacher=ema): they ramp its momentum


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
    run = start_run(config, progress)
    state = resume(run, resume_from) if resume_from is not None else source_model(run, source_checkpoint, workdir)
    for cycle in range(state.next_cycle, config.adapt.cycles + 1):
        metrics, degenerate = run_cycle(run, state, cycle)
        checkpoint_dir = save(run, state, workdir)
        if report is not None:
            report(dict(metrics), checkpoint_dir)
        if degenerate and config.adapt.stop_on_degenerate:
            log.warning("stopping after cycle %d: adapt.stop_on_degenerate is set", cycle)
            break
    return state.cycles


def start_run(config: ExperimentConfig, progress: bool = False) -> Run:
    """Seed, pick the device and decode both domains once."""
    _setup_runtime(config)
    device = resolve_device(config.runtime.device)
    log.info("computing on %s", machine_description(device))  # the same seed gives other numbers elsewhere
    source = load_domain(config, config.data.source)
    target = source if config.data.target == config.data.source else load_domain(config, config.data.target)
    target_val = None
    if config.data.target_val_ids:
        target, target_val = hold_out_identities(target, config.data.target_val_ids, TARGET_VAL_SEED)
    return Run(config, device, source, target, target_val, progress)


def hold_out_identities(domain: Domain, num_ids: int, seed: int) -> tuple[Domain, Domain]:
    """(ULA's pool, a labelled validation split): ``num_ids`` training identities, drawn by a generator of their
    own, leave the training set with all their images, which become a query/gallery split (one query per identity
    and camera, the rest gallery). The test split is untouched; its identities are never training identities in
    the supported datasets, so the two splits share no identity."""
    train = domain.dataset.train
    pids = sorted({record.pid for record in train})
    if num_ids >= len(pids):
        raise ValueError(f"data.target_val_ids={num_ids} leaves no identity of the target's {len(pids)} for ULA: "
                         "lower it")
    rng = np.random.default_rng(seed)
    held = set(rng.choice(pids, num_ids, replace=False).tolist())
    pool = [i for i, record in enumerate(train) if record.pid not in held]
    query, gallery, seen = [], [], set()
    for i in rng.permutation([i for i, record in enumerate(train) if record.pid in held]).tolist():
        key = (train[i].pid, train[i].camid)
        (gallery if key in seen else query).append(i)
        seen.add(key)

    def part(indices: list[int], split: str) -> dict:
        images = domain.images["train"]
        return {split: None if images is None else images[torch.as_tensor(indices, dtype=torch.long)]}

    pool_domain = Domain(dataclasses.replace(domain.dataset, train=[train[i] for i in pool]),
                         {**domain.images, **part(pool, "train")})
    val_dataset = dataclasses.replace(domain.dataset, name=f"{domain.dataset.name} validation identities", train=[],
                                      query=[train[i] for i in query], gallery=[train[i] for i in gallery])
    return pool_domain, Domain(val_dataset, {"train": None, **part(query, "query"), **part(gallery, "gallery")})


def source_model(run: Run, source_checkpoint: Path | None, workdir: Path) -> AdaptState:
    """The state before cycle 0: stage 1's model as the target model, pre-trained now into ``workdir/source.pt``
    unless a source checkpoint is given."""
    if source_checkpoint is None:
        source_checkpoint = workdir / "source.pt"
        pretrain_source(run.config, source_checkpoint, progress=run.progress, source=run.source)
    checkpoint = load_source(source_checkpoint, pretrain_signature(run.config))
    target_model = _model_from_state(run, checkpoint.model, checkpoint.num_classes)
    return AdaptState(target_model, intermediate=None, history=list(checkpoint.history), cycles=[], next_cycle=0)


def resume(run: Run, folder: Path) -> AdaptState:
    """The state after the cycle saved in ``folder``."""
    saved = load_cycle(folder)
    intermediate = None
    if saved.intermediate is not None:
        intermediate = _model_from_state(run, saved.intermediate, saved.intermediate_classes)
    log.info("resumed after cycle %d from %s", saved.cycle, folder)
    labels = None if saved.pseudo_labels is None else saved.pseudo_labels.numpy()
    return AdaptState(
        _model_from_state(run, saved.target, saved.target_classes), intermediate, saved.history, saved.cycles,
        next_cycle=int(saved.cycle) + 1, pseudo_labels=labels, teacher_steps=int(saved.teacher_steps),
    )


def run_cycle(run: Run, state: AdaptState, cycle: int) -> tuple[dict[str, Any], bool]:
    """One cycle of the paper's loop: ULA -> fine-tune -> KD merge (from cycle 1, when ULA is on), then evaluation.
    Returns the cycle's metrics and whether ULA was degenerate (the model is then left unchanged)."""
    started = time.perf_counter()
    ula: dict[str, Any] = {}
    clustering: dict[str, float] = {}
    losses = _losses(state.history[-1]) if cycle == 0 and state.history else {}  # pre-training's last epoch
    if cycle > 0 and run.config.ula.enabled:
        result = pseudo_labels(run, state.target_model, cycle)
        ula = result.diagnostics
        clustering = validate_clustering(run, state, result)
        if ula["degenerate"]:
            log.warning("cycle %d: ULA is degenerate, the model is left unchanged: %s", cycle, ula["reason"])
        else:
            state.intermediate = state.intermediate or copy.deepcopy(state.target_model)
            teacher = mean_teacher(run.config, state)
            rows = fine_tune(run, state.intermediate, result, cycle, teacher)
            state.history.extend(rows)
            losses = _losses(rows[-1]) if rows else {}
            kd_merge(run.config, state, teacher)
    evaluation, source_queries = evaluate_cycle(run, state.target_model)
    metrics = _every_metric({
        **evaluation,
        **clustering,
        **validate_model(run, state, source_queries),
        "cycle": cycle,
        "epoch": run.config.source.epochs + cycle * run.config.adapt.cycle_epochs,
        "time_s": time.perf_counter() - started,
        **{f"ula_{key}": float(ula[key]) for key in ULA_KEYS if ula.get(key) is not None},
        **losses,
    })
    state.cycles.append(metrics)
    state.next_cycle = cycle + 1
    log.info("cycle %d %s", cycle, _fmt(metrics))
    return metrics, bool(ula.get("degenerate"))


def pseudo_labels(run: Run, model: ReIDNet, cycle: int) -> ULAResult:
    """ULA on the target training set's features; its true identities feed the diagnostics only."""
    features = extract_features(model, _test_loader(run.config, run.target, "train"), run.device)
    check_finite(features, f"cycle {cycle}: target training features", "lower adapt.lr")
    num_classes = resolve_num_classes(run.config.ula, run.target.dataset.num_train_pids)
    true_ids = np.array([record.pid for record in run.target.dataset.train])
    return label_adaptation(features, run.config.ula, num_classes, true_ids=true_ids)


def fine_tune(
    run: Run, model: ReIDNet, result: ULAResult, cycle: int, teacher: EMATeacher | None = None
) -> list[dict]:
    """Train the intermediate model on the pseudo-labelled target set for one cycle; its history rows. A mean
    teacher is updated after every step."""
    templates = torch.as_tensor(result.templates, dtype=torch.float32)
    model.reset_classifier(len(templates), weight=templates)
    model.to(run.device)
    criterion = target_loss(run.config, templates, model.feature_dim).to(run.device)
    step = _train_step(run.config, model, criterion, stage="adapt", device=run.device)
    step.after_step = None if teacher is None else teacher.after_step
    loaders = _loaders(run.config, run.target, labels=result.pseudo_labels)
    return train_epochs(
        model, step, loaders, epochs=run.config.adapt.cycle_epochs, seed=run.config.runtime.seed,
        stage="adapt", cycle=cycle, progress=run.progress,
    )


def target_loss(config: ExperimentConfig, templates: torch.Tensor, feature_dim: int) -> torch.nn.Module:
    """adapt.loss: the paper's losses with the centre loss's centres at the templates, or a cluster memory
    built from them; either is built afresh every cycle, as the pseudo labels change."""
    if config.adapt.loss == "cluster_memory":
        return ClusterMemoryLoss(templates, config.memory, config.loss.triplet_margin)
    criterion = ReIDLoss(config.loss, len(templates), feature_dim)
    criterion.center.set_centers(templates)
    return criterion


def mean_teacher(config: ExperimentConfig, state: AdaptState) -> EMATeacher | None:
    """kd.teacher=ema: the target model as the mean teacher of the intermediate; None for the paper's merge."""
    if config.kd.teacher != "ema":
        return None
    return EMATeacher(state.target_model, state.intermediate, config.kd.ema_momentum, steps=state.teacher_steps)


def kd_merge(config: ExperimentConfig, state: AdaptState, teacher: EMATeacher | None = None) -> None:
    """Knowledge distillation in weight space: the target model moves mu of the way to the fine-tuned one. A mean
    teacher moved after every step of fine-tuning instead: only its step count is kept."""
    if teacher is not None:
        state.teacher_steps = teacher.steps
        return
    merge_weights(state.target_model, state.intermediate, merge_factor(config))


def merge_factor(config: ExperimentConfig) -> float:
    """The KD factor mu actually applied: without KD the target simply becomes the fine-tuned model."""
    return config.kd.mu if config.kd.enabled else 1.0


def evaluate_cycle(run: Run, model: ReIDNet) -> tuple[dict[str, float], tuple[torch.Tensor, np.ndarray] | None]:
    """target_* always, source_* when eval.eval_source is set, target_val_* when data.target_val_ids holds some
    target identities out; and the source's query features with each query's AP, which DEV weighs (None without
    the source evaluation)."""
    metrics = {f"target_{k}": v for k, v in evaluate_domain(run.config, model, run.target, run.device).items()}
    source_queries = None
    if run.config.eval.eval_source:
        source, source_queries = rank_domain(run.config, model, run.source, run.device)
        metrics.update({f"source_{k}": v for k, v in source.items()})
    if run.target_val is not None:
        held_out = evaluate_domain(run.config, model, run.target_val, run.device)
        metrics.update({f"target_val_{k}": held_out[k] for k in TARGET_VAL_KEYS})
    return metrics, source_queries


def validate_clustering(run: Run, state: AdaptState, result: ULAResult) -> dict[str, float]:
    """The label-free validators of this cycle's ULA step (silhouette, noise, stability against the previous
    cycle's pseudo labels), which it then keeps for the next cycle; none when eval.validator_samples is 0."""
    previous, state.pseudo_labels = state.pseudo_labels, result.pseudo_labels
    if not run.config.eval.validator_samples:
        return {}
    return clustering_validators(result.cluster_ids, result.distance_rows, result.pseudo_labels, previous,
                                 samples=run.config.eval.validator_samples, seed=run.config.runtime.seed)


def validate_model(run: Run, state: AdaptState,
                   source_queries: tuple[torch.Tensor, np.ndarray] | None = None) -> dict[str, float]:
    """The label-free validators of the target model after the cycle, on a seeded sample of the target training
    images (the same every cycle), with the classifier fine-tuning trains: the intermediate model's, initialised
    from ULA's templates (the source classifier before the first fine-tuning); DEV with the source queries. None
    when eval.validator_samples is 0."""
    samples, seed = run.config.eval.validator_samples, run.config.runtime.seed
    if not samples:
        return {}
    train, images = run.target.dataset.train, run.target.images["train"]
    chosen = sample_indices(len(train), samples, seed)
    loader = build_test_loader(
        [train[i] for i in chosen], run.config.data, batch_size=run.config.eval.batch_size,
        images=None if images is None else images[torch.from_numpy(chosen)],
    )
    features = extract_features(state.target_model, loader, run.device)
    classifier = (state.intermediate or state.target_model).classifier
    logits = features @ classifier.weight.detach().float().cpu().T
    return model_validators(features, logits, seed, source_queries)


def evaluate_domain(config: ExperimentConfig, model, domain: Domain, device) -> dict[str, float]:
    """Query/gallery evaluation under the Market protocol; rank metrics in percent, as the paper's tables."""
    return rank_domain(config, model, domain, device)[0]


def rank_domain(config: ExperimentConfig, model, domain: Domain,
                device) -> tuple[dict[str, float], tuple[torch.Tensor, np.ndarray]]:
    """``evaluate_domain``'s metrics, and the query features with each query's AP (NaN: skipped)."""
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
    metrics = {key: 100 * (result[key] if cmc_rank(key) is None else float(cmc[min(cmc_rank(key), len(cmc)) - 1]))
               for key in EVAL_KEYS}
    return metrics, (query, result["query_ap"])


def save(run: Run, state: AdaptState, workdir: Path) -> Path:
    """Checkpoint the state after its last cycle; returns the cycle's folder."""
    # Without KD (mu = 1) the intermediate equals the target up to its classifier, which every cycle
    # rebuilds: saving it would double the checkpoint for nothing.
    same = run.config.kd.teacher == "weight_merge" and merge_factor(run.config) == 1.0
    intermediate = None if same else state.intermediate
    checkpoint = CycleCheckpoint(
        cycle=state.next_cycle - 1,
        target=state.target_model.state_dict(),
        target_classes=state.target_model.classifier.out_features,
        intermediate=None if intermediate is None else intermediate.state_dict(),
        intermediate_classes=None if intermediate is None else intermediate.classifier.out_features,
        history=state.history,
        cycles=state.cycles,
        pseudo_labels=None if state.pseudo_labels is None else torch.from_numpy(state.pseudo_labels),
        teacher_steps=state.teacher_steps,
    )
    return save_cycle(workdir, checkpoint, to_yaml(run.config))


def _every_metric(measured: dict[str, Any]) -> dict[str, Any]:
    """Every registered metric in report order, NaN where this cycle measured nothing (no ULA at cycle 0, no
    fine-tuning after a degenerate ULA, no source evaluation), so that every cycle's row has the same columns."""
    return {name: measured.get(name, math.nan) for name in cycle_metric_names()}


def _losses(history_row: dict[str, Any]) -> dict[str, float]:
    """The last epoch's losses; a part the cycle's loss lacks (no centre loss in adapt.loss=cluster_memory) is NaN."""
    return {key: history_row.get(key, math.nan) for key in LOSS_KEYS}


def _train_step(
    config: ExperimentConfig, model: ReIDNet, criterion: torch.nn.Module, *, stage: str, device
) -> TrainStep:
    """Fresh optimizers for one training stage ("source" or "adapt"), with that stage's lr and weight decay."""
    settings = getattr(config, stage)
    optimizer, center_optimizer = build_optimizers(
        model, criterion, settings.lr, settings.weight_decay, config.loss.center_lr
    )
    return TrainStep(
        criterion, optimizer, center_optimizer, config.loss.center_weight, device,
        amp=config.runtime.amp, channels_last=config.runtime.channels_last, lr_key=f"{stage}.lr",
    )


def _loaders(config: ExperimentConfig, domain: Domain, labels=None) -> Callable[..., DataLoader]:
    """``loaders(seed=...)``: a training loader over the domain's training set, per epoch."""
    return functools.partial(
        build_train_loader, domain.dataset.train, config.data, labels=labels, images=domain.images["train"]
    )


def _test_loader(config: ExperimentConfig, domain: Domain, split: str):
    return build_test_loader(
        getattr(domain.dataset, split), config.data, images=domain.images[split], batch_size=config.eval.batch_size
    )


def _model_from_state(run: Run, state: dict, num_classes: int) -> ReIDNet:
    model = build_model(run.config.model.model_copy(update={"pretrained": "none"}), num_classes)
    model.load_state_dict(state)
    model.to(run.device)
    _channels_last(model, run.config)
    return model


def _setup_runtime(config: ExperimentConfig) -> None:
    seed_everything(config.runtime.seed)
    if config.runtime.threads > 0:
        torch.set_num_threads(config.runtime.threads)


def _channels_last(model, config) -> None:
    if config.runtime.channels_last:
        model.to(memory_format=torch.channels_last)


def _fmt(metrics: dict[str, Any]) -> str:
    """The measured metrics, each in its registered format, for the log."""
    return " ".join(
        f"{name}={metric(name).format(value)}"
        for name, value in metrics.items()
        if not (isinstance(value, float) and math.isnan(value))
    )
