"""Weight-space knowledge distillation: W_target := (1 - mu) W_target + mu W_intermediate (docs/method.md)."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def merge_weights(
    target: nn.Module,
    intermediate: nn.Module,
    mu: float,
    exclude: tuple[str, ...] = ("classifier.",),
) -> list[str]:
    """Merge ``intermediate`` into ``target`` in place; returns the keys written.

    Every floating-point entry of the state dict is interpolated, BatchNorm running statistics
    included (docs/method.md section 8: the merged weights must see matching statistics). Integer buffers
    (``num_batches_tracked``) cannot be interpolated and are taken from the intermediate model. The
    classifier is excluded by default because its label set changes every cycle.
    """
    if not 0 <= mu <= 1:
        raise ValueError(f"mu={mu} must be in [0, 1]: set kd.mu accordingly")
    target_state = target.state_dict()
    intermediate_state = intermediate.state_dict()
    kept = [key for key in target_state if not key.startswith(exclude)]
    for key in intermediate_state:
        if not key.startswith(exclude) and key not in target_state:
            raise ValueError(
                f"{key!r} is in the intermediate model only: both models must share one architecture"
            )
    for key in kept:
        if key not in intermediate_state:
            raise ValueError(f"{key!r} is in the target model only: both models must share one architecture")
        if target_state[key].shape != intermediate_state[key].shape:
            raise ValueError(
                f"{key!r} has shape {tuple(target_state[key].shape)} in the target model and "
                f"{tuple(intermediate_state[key].shape)} in the intermediate: both must share one "
                "architecture"
            )
    for key in kept:
        # state_dict() tensors share storage with the modules, so in-place ops update the model.
        value, other = target_state[key], intermediate_state[key].to(target_state[key])
        if value.is_floating_point():
            value.lerp_(other, mu)
        else:
            value.copy_(other)
    return kept
