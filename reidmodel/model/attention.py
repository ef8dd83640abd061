"""CBAM-style channel and spatial attention (the CAM and SAM of docs/method.md section 3).

Identity initialisation, our reading (docs/method.md 8): a plain sigmoid gate starts at 0.5 and would halve
the activations of a pretrained backbone at every stage that carries attention. Each gate here is
``2 * sigmoid(z)`` and the last layer producing ``z`` (the MLP's second 1x1 conv; the 7x7 conv) starts
at zero, so ``z == 0``, the gate is exactly 1 and a freshly inserted module is exactly the identity. It
still learns: the gradient reaching the zero-initialised weights is non-zero, and once they move, the
gate ranges over (0, 2) and can damp or amplify channels and positions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ChannelAttention(nn.Module):
    """Which channels matter: avg- and max-pooled descriptors through one shared MLP."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(channels // reduction, 8)
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, hidden, kernel_size=1, bias=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, kernel_size=1, bias=False),
        )
        nn.init.zeros_(self.mlp[-1].weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.mlp(F.adaptive_avg_pool2d(x, 1)) + self.mlp(F.adaptive_max_pool2d(x, 1))
        return x * (2 * torch.sigmoid(z))


class SpatialAttention(nn.Module):
    """Where the person is: channel mean and max maps through one large conv."""

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size={kernel_size} must be odd so the gate keeps the map size")
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        nn.init.zeros_(self.conv.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        descriptors = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * (2 * torch.sigmoid(self.conv(descriptors)))


class CBAM(nn.Module):
    """Channel attention, then spatial attention, as in CBAM."""

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7) -> None:
        super().__init__()
        self.channel = ChannelAttention(channels, reduction)
        self.spatial = SpatialAttention(kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial(self.channel(x))
