"""The training step and epoch loop shared by source pre-training and target fine-tuning."""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from reidmodel.config import ConfigError

log = logging.getLogger(__name__)


class DivergenceError(ArithmeticError):
    """Training went numerically wrong (a NaN or infinite loss, weight or feature): every later number of the
    run would be meaningless, and the same config and seed diverge again, so it is an error, never a result."""


def check_finite(values: torch.Tensor, what: str, fix: str = "lower the learning rate") -> None:
    """Raise DivergenceError naming ``what`` when ``values`` holds a NaN or an infinity."""
    if not bool(torch.isfinite(values).all()):
        kind = "NaN" if bool(torch.isnan(values).any()) else "infinite values"
        raise DivergenceError(f"{what} contain {kind}: the model diverged; {fix}")


def resolve_device(name: str) -> torch.device:
    """``auto`` takes the GPU that is visible (Ray sets CUDA_VISIBLE_DEVICES per trial), else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"runtime.device={name!r} but no CUDA device is visible: set runtime.device=cpu or auto")
    return device


def cpu_model() -> str:
    """The CPU's model name as Linux reports it, else "unknown"."""
    try:
        with open("/proc/cpuinfo") as handle:
            return next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown"


def machine_description(device: torch.device) -> str:
    """Where a run computes, in one line: the same config and seed give the same numbers only on the same
    kernels, thread count and device (results/determinism.md), so a result says which it had."""
    if device.type == "cuda":
        where = torch.cuda.get_device_name(device)
    else:
        where = f"{cpu_model()} ({torch.backends.cpu.get_cpu_capability()} kernels)"
    return f"{where}, {torch.get_num_threads()} thread(s), torch {torch.__version__}"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def epoch_seed(seed: int, stage: str, cycle: int, epoch: int) -> int:
    """A seed per epoch, so a run resumed at a cycle boundary draws the same batches as an unbroken one."""
    return (seed * 1_000_003 + {"source": 0, "adapt": 1}[stage] * 10_007 + cycle * 101 + epoch) % (2**31)


def build_optimizers(
    model: nn.Module, criterion: nn.Module, lr: float, weight_decay: float, center_lr: float
) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer | None]:
    """Adam for the network (strong baseline) and plain SGD for the centre-loss centres."""
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay)
    centers = [p for p in criterion.parameters() if p.requires_grad]
    center_optimizer = torch.optim.SGD(centers, lr=center_lr) if centers else None
    return optimizer, center_optimizer


def step_schedule(optimizer: torch.optim.Optimizer, step_size: int, gamma: float, warmup_epochs: int):
    """Linear warm-up, then x gamma every step_size epochs (the strong baseline's WarmupMultiStepLR shape)."""

    def factor(epoch: int) -> float:
        warm = min(1.0, (epoch + 1) / warmup_epochs) if warmup_epochs > 0 else 1.0
        return warm * gamma ** (epoch // step_size)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@dataclass
class TrainStep:
    """What an optimisation step needs besides the model and the batch; one per training stage."""

    criterion: nn.Module  # (output, labels) -> (loss, parts): ReIDLoss or memory.ClusterMemoryLoss
    optimizer: torch.optim.Optimizer
    center_optimizer: torch.optim.Optimizer | None
    center_weight: float
    device: torch.device
    amp: bool = False
    channels_last: bool = False
    lr_key: str = "the learning rate"  # the setting a divergence error tells the user to lower
    after_step: Callable[[torch.Tensor], None] | None = None  # called with each batch after its step (EMA teacher)


def train_epochs(
    model: nn.Module,
    step: TrainStep,
    loaders: Callable[..., Iterable],
    *,
    epochs: int,
    seed: int,
    stage: str,
    cycle: int = 0,
    schedule: torch.optim.lr_scheduler.LRScheduler | None = None,
    progress: bool = False,
) -> list[dict]:
    """The epoch loop of pre-training (stage "source") and of a cycle's fine-tuning (stage "adapt"); returns one
    history row (stage, cycle, epoch and the mean losses) per epoch.

    ``loaders(seed=...)`` builds each epoch's loader: the batches and torch's draws (augmentations, dropout)
    depend on ``epoch_seed`` only, so a run resumed at a cycle boundary trains exactly as an unbroken one.
    """
    name = "source" if stage == "source" else f"cycle {cycle}"
    rows = []
    for epoch in range(epochs):
        seed_of_epoch = epoch_seed(seed, stage, cycle, epoch)
        loader = loaders(seed=seed_of_epoch)
        torch.manual_seed(seed_of_epoch)
        with _progress_bar(progress, loader, f"{name} epoch {epoch + 1}/{epochs}") as bar:
            losses = train_one_epoch(model, loader, step, progress=bar)
        if schedule is not None:
            schedule.step()
        rows.append({"stage": stage, "cycle": cycle, "epoch": epoch + 1, **losses})
        log.info("%s epoch %d/%d %s", name, epoch + 1, epochs, " ".join(f"{k}={v:.4g}" for k, v in losses.items()))
    return rows


def train_one_epoch(model: nn.Module, loader: Iterable, step: TrainStep, progress=None) -> dict[str, float]:
    """One pass over ``loader``; returns the mean of each loss part. A NaN or infinite loss raises
    DivergenceError before its step can spread it to the weights."""
    model.train()
    use_amp = step.amp and step.device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    totals: dict[str, float] = {}
    batches = 0
    for images, labels, _camids, _index in loader:
        images = _on_device(images, step)
        loss, parts = _forward(model, images, labels, step, use_amp=use_amp)
        if not math.isfinite(parts["loss_total"]):
            raise DivergenceError(
                f"training loss is {parts['loss_total']} at batch {batches + 1}: the model diverged; "
                f"lower {step.lr_key}"
            )
        _backward_and_step(loss, step, scaler)
        if step.after_step is not None:
            step.after_step(images)
        for key, value in parts.items():
            totals[key] = totals.get(key, 0.0) + value
        batches += 1
        if progress is not None:
            progress.update(1)
            progress.set_postfix(loss=f"{parts['loss_total']:.3f}")
    if batches == 0:
        raise RuntimeError(
            "the training loader yielded no batch: fewer labelled images than one P x K batch; "
            "lower data.batch_size or check the dataset"
        )
    return {key: value / batches for key, value in totals.items()}


def _on_device(images: torch.Tensor, step: TrainStep) -> torch.Tensor:
    images = images.to(step.device, non_blocking=True)
    return images.contiguous(memory_format=torch.channels_last) if step.channels_last else images


def _forward(model: nn.Module, images, labels, step: TrainStep, *, use_amp: bool):
    """The loss of one batch (a tensor to backpropagate) and its parts as numbers."""
    labels = labels.to(step.device, non_blocking=True)
    step.optimizer.zero_grad(set_to_none=True)
    if step.center_optimizer is not None:
        step.center_optimizer.zero_grad(set_to_none=True)
    with torch.autocast(device_type=step.device.type, enabled=use_amp):
        output = model(images)
    return step.criterion(_to_float(output), labels)


def _backward_and_step(loss: torch.Tensor, step: TrainStep, scaler: torch.amp.GradScaler) -> None:
    scaler.scale(loss).backward()
    scaler.step(step.optimizer)
    if step.center_optimizer is not None and step.center_weight > 0:
        # Undo beta on the centres' gradient so their learning rate does not depend on it (strong baseline).
        scaler.unscale_(step.center_optimizer)
        for param in step.center_optimizer.param_groups[0]["params"]:
            if param.grad is not None:
                param.grad.mul_(1.0 / step.center_weight)
        scaler.step(step.center_optimizer)
    scaler.update()


@contextmanager
def _progress_bar(enabled: bool, loader, desc: str):
    """A tqdm bar over the loader's batches, or None when progress is off."""
    if not enabled:
        yield None
        return
    from tqdm.auto import tqdm

    with tqdm(total=len(loader), desc=desc, leave=False, dynamic_ncols=True) as bar:
        yield bar


def _to_float(output):
    """Losses in float32 even under autocast."""
    return type(output)(*(t.float() for t in output))
