"""The re-ID network: ResNet backbone, CBAM attention, BNNeck head."""

from reidmodel.model.attention import CBAM, ChannelAttention, SpatialAttention
from reidmodel.model.backbone import BACKBONES, STAGE_LAYERS, build_backbone, stage_channels
from reidmodel.model.reid_net import ReIDNet, ReIDOutput, build_model

__all__ = [
    "BACKBONES",
    "CBAM",
    "ChannelAttention",
    "ReIDNet",
    "ReIDOutput",
    "STAGE_LAYERS",
    "SpatialAttention",
    "build_backbone",
    "build_model",
    "stage_channels",
]
