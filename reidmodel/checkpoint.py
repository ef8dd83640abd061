"""What a run leaves on disk to be shared or resumed: the source model after pre-training (``source.pt``), and after
each cycle a folder ``checkpoints/cycle_NNN`` holding ``state.pt`` (the models), ``history.csv`` (per-epoch losses),
``cycles.csv`` (per-cycle metrics) and ``config.yaml``.

A cycle's folder is written under a temporary name and then swapped in, so that a run killed mid-write leaves the
previous cycle's folder intact; only the newest folder is kept. torch is imported only where a model is read or
written, so that the CLI can find the last cycle of a run before paying the seconds torch takes to import.
"""

from __future__ import annotations

import csv
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHECKPOINTS = "checkpoints"
STATE, HISTORY, CYCLES, CONFIG = "state.pt", "history.csv", "cycles.csv", "config.yaml"


@dataclass
class SourceCheckpoint:
    """Stage 1's output, shared by every run whose ``pretrain_signature`` it carries."""

    model: dict[str, Any]  # state dict
    num_classes: int
    signature: dict[str, Any]
    history: list[dict]  # per-epoch losses
    train_seconds: float


@dataclass
class CycleCheckpoint:
    """All that resuming after ``cycle`` needs; ``intermediate`` is None before the first fine-tuning or when it
    would equal the target (no KD)."""

    cycle: int
    target: dict[str, Any]  # state dict
    target_classes: int
    intermediate: dict[str, Any] | None
    intermediate_classes: int | None
    history: list[dict]
    cycles: list[dict]
    pseudo_labels: Any = None  # int64 tensor [N]: the last ULA's, for the next cycle's pseudo-label stability
    teacher_steps: int = 0  # the mean teacher's updates so far (kd.teacher=ema); absent from older checkpoints


def save_source(path: Path, checkpoint: SourceCheckpoint) -> None:
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(vars(checkpoint), path)


def load_source(path: Path, signature: dict[str, Any]) -> SourceCheckpoint:
    """The source checkpoint at ``path``, which must have been trained for ``signature``."""
    import torch

    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("signature") != signature:
        raise ValueError(
            f"source checkpoint {path} was trained with another pre-training config: delete it or pass the matching one"
        )
    return SourceCheckpoint(**payload)


def save_cycle(workdir: Path, checkpoint: CycleCheckpoint, config_yaml: str) -> Path:
    """Write the cycle's folder under a temporary name, swap it in and drop the previous cycle's; returns it."""
    import torch

    folder = Path(workdir) / CHECKPOINTS / f"cycle_{checkpoint.cycle:03d}"
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    state = {key: value for key, value in vars(checkpoint).items() if key not in ("history", "cycles")}
    torch.save(state, tmp / STATE)
    write_csv(tmp / HISTORY, checkpoint.history)
    write_csv(tmp / CYCLES, checkpoint.cycles)
    (tmp / CONFIG).write_text(config_yaml)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    for older in folder.parent.glob("cycle_*"):
        if older != folder:
            shutil.rmtree(older, ignore_errors=True)
    return folder


def load_cycle(folder: Path) -> CycleCheckpoint:
    import torch

    folder = Path(folder)
    state = torch.load(folder / STATE, map_location="cpu", weights_only=True)
    return CycleCheckpoint(**state, history=read_csv(folder / HISTORY), cycles=read_csv(folder / CYCLES))


def last_cycle(workdir: Path) -> Path | None:
    """The folder of the last finished cycle under ``workdir``, None when no cycle finished."""
    folders = sorted(p for p in (Path(workdir) / CHECKPOINTS).glob("cycle_*") if not p.name.endswith(".tmp"))
    return folders[-1] if folders else None


def write_csv(path: Path, rows: list[dict]) -> None:
    """Rows with the union of their keys as columns, in first-seen order (a missing value is an empty cell)."""
    fields: list[str] = []
    for row in rows:
        fields.extend(k for k in row if k not in fields)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def read_csv(path: Path) -> list[dict]:
    """The rows ``write_csv`` wrote, numbers parsed back (ints stay ints, so a resumed run writes the same text)."""
    with open(path, newline="") as handle:
        return [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(handle)]


def _number(text: str):
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value
