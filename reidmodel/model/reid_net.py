"""CSAM-ReID: a ResNet with CBAM after chosen stages, global average pooling and a BNNeck head.

``bnneck=False`` is the "Baseline" of the paper's Table 1: the pooled feature goes straight to the
bias-free classifier and is also the test feature. It is the same module with an identity in place of
the BatchNorm, so both settings share every line of the forward pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn
from torchvision.models.resnet import ResNet

from reidmodel.config import ATTENTION_STAGES, ModelConfig
from reidmodel.model.attention import CBAM
from reidmodel.model.backbone import STAGE_LAYERS, build_backbone, stage_channels


class ReIDOutput(NamedTuple):
    logits: torch.Tensor  # [B, num_classes], for the ID loss
    global_feat: torch.Tensor  # [B, D] pooled feature f_t, for the triplet loss
    bn_feat: torch.Tensor  # [B, D] after-BN feature f_i, the test feature


class ReIDNet(nn.Module):
    def __init__(
        self,
        backbone: ResNet,
        num_classes: int,
        attention: Sequence[str] = ATTENTION_STAGES,
        attention_reduction: int = 16,
        bnneck: bool = True,
    ) -> None:
        super().__init__()
        unknown = sorted(set(attention) - set(ATTENTION_STAGES))
        if unknown:
            raise ValueError(
                f"unknown attention stage(s) {unknown}: use a subset of {list(ATTENTION_STAGES)}"
            )
        channels = stage_channels(backbone)
        self.feature_dim = channels["conv5"]
        self.stem = nn.Sequential(backbone.conv1, backbone.bn1, backbone.relu, backbone.maxpool)
        self.stages = nn.ModuleDict(
            {stage: getattr(backbone, layer) for stage, layer in STAGE_LAYERS.items()}
        )
        # Built in stage order, so the state dict does not depend on how the list was written.
        self.attention = nn.ModuleDict(
            {
                stage: CBAM(channels[stage], attention_reduction)
                for stage in ATTENTION_STAGES
                if stage in attention
            }
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        if bnneck:
            self.bottleneck = nn.BatchNorm1d(self.feature_dim)
            # Frozen zero shift: the ID loss then sees a feature centred like the one the triplet loss shapes.
            self.bottleneck.bias.requires_grad_(False)
        else:
            self.bottleneck = nn.Identity()
        self.reset_classifier(num_classes)

    def reset_classifier(self, num_classes: int, weight: torch.Tensor | None = None) -> None:
        """A new bias-free classifier: the label set changes every adaptation cycle."""
        if num_classes < 1:
            raise ValueError(f"num_classes={num_classes} must be at least 1")
        classifier = nn.Linear(self.feature_dim, num_classes, bias=False)
        if weight is None:
            nn.init.normal_(classifier.weight, std=0.001)
        else:
            if tuple(weight.shape) != (num_classes, self.feature_dim):
                raise ValueError(
                    f"classifier weight has shape {tuple(weight.shape)}, expected ({num_classes}, "
                    f"{self.feature_dim}): pass one row per class of the feature dimension"
                )
            with torch.no_grad():
                classifier.weight.copy_(weight)
        reference = next(self.stem.parameters())  # follow the model's device and dtype
        self.classifier = classifier.to(device=reference.device, dtype=reference.dtype)

    def forward(self, x: torch.Tensor) -> ReIDOutput | torch.Tensor:
        """Training: ``ReIDOutput``; eval: the test feature [B, D]."""
        x = self.stem(x)
        for stage, layer in self.stages.items():
            x = layer(x)
            if stage in self.attention:
                x = self.attention[stage](x)
        global_feat = torch.flatten(self.pool(x), 1)
        bn_feat = self.bottleneck(global_feat)
        if not self.training:
            return bn_feat
        return ReIDOutput(self.classifier(bn_feat), global_feat, bn_feat)


def build_model(cfg: ModelConfig, num_classes: int) -> ReIDNet:
    backbone = build_backbone(cfg.backbone, cfg.pretrained, cfg.last_stride)
    return ReIDNet(backbone, num_classes, cfg.attention, cfg.attention_reduction, cfg.bnneck)
