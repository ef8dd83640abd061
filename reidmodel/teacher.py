"""A mean teacher (MMT, Ge et al. 2020): the exponential moving average of the student's weights, updated after
every optimisation step, as the alternative to the paper's once-per-cycle weight merge (``reidmodel/kd.py``).

The teacher is the pipeline's target model: it clusters the target domain and is evaluated; the student is the
intermediate model that fine-tuning trains. ``kd.teacher=ema`` selects it (docs/method.md section 10).

Why not ``torch.optim.swa_utils.AveragedModel``: it pairs the two models' parameters by position, classifier
included, whose shape the student changes every cycle; it keeps its own deep copy of the teacher, while the
pipeline's target model (checkpointed, clustered, evaluated) must be the teacher itself; and with
``use_buffers=False`` it copies the student's BatchNorm statistics, which belong to other weights. Its EMA
arithmetic, ``get_ema_multi_avg_fn``, is used as is.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import get_ema_multi_avg_fn

# The classifier is left out: its label set (and shape) changes every cycle, and the teacher never classifies.
EXCLUDED = ("classifier.",)


def ramped_momentum(momentum: float, step: int) -> float:
    """MMT's ``min(1 - 1/(step + 1), momentum)``: the first update copies the student, the next ones average the
    student's iterates equally until that average would forget faster than ``momentum``."""
    return min(1.0 - 1.0 / (step + 1), momentum)


class EMATeacher:
    """``teacher := m teacher + (1 - m) student`` over the parameters after every step; ``steps`` counts the
    updates so far (it ramps m, so a resumed run must start from the saved count).

    BatchNorm running statistics are not averaged: the teacher's own forward pass over each training batch, in
    training mode and without gradients, updates them, as MMT's teacher does. Statistics so gathered belong to
    the teacher's weights; copying the student's (AveragedModel's choice) would pair averaged weights with
    statistics of the newest ones.
    """

    def __init__(self, teacher: nn.Module, student: nn.Module, momentum: float, steps: int = 0) -> None:
        if not 0 < momentum < 1:
            raise ValueError(f"momentum={momentum} must be in (0, 1): set kd.ema_momentum accordingly")
        self.teacher, self.momentum, self.steps = teacher, momentum, steps
        averaged, current = (
            {name: p for name, p in model.named_parameters() if not name.startswith(EXCLUDED)}
            for model in (teacher, student)
        )
        if averaged.keys() != current.keys() or any(averaged[k].shape != current[k].shape for k in averaged):
            raise ValueError("teacher and student must share one architecture (classifier aside)")
        self._averaged, self._current = list(averaged.values()), [current[name] for name in averaged]

    @torch.no_grad()
    def after_step(self, images: torch.Tensor) -> None:
        """The teacher's forward pass on the batch just trained on (its BatchNorm statistics), then the update."""
        was_training = self.teacher.training
        self.teacher.train()
        self.teacher(images)
        self.teacher.train(was_training)
        self.update()

    @torch.no_grad()
    def update(self) -> None:
        """One EMA step of the parameters with the ramped momentum."""
        get_ema_multi_avg_fn(ramped_momentum(self.momentum, self.steps))(self._averaged, self._current, None)
        self.steps += 1
