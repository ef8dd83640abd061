"""ResNet backbones from torchvision, with the strong baseline's last stride and offline-friendly weights.

``pretrained`` is "none", "imagenet" (torchvision's IMAGENET1K_V1 through its weights API: read from the
torch hub cache, downloaded only when it is not there) or the path of a torchvision state dict, so that
machines without internet can still start from ImageNet weights.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn
from torchvision import models
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from reidmodel.messages import one_line

# Paper stage name (conv2_x..conv5_x) -> torchvision layer.
STAGE_LAYERS = {"conv2": "layer1", "conv3": "layer2", "conv4": "layer3", "conv5": "layer4"}

_TORCHVISION_RESNETS = {
    "resnet18": (models.resnet18, models.ResNet18_Weights.IMAGENET1K_V1),
    "resnet34": (models.resnet34, models.ResNet34_Weights.IMAGENET1K_V1),
    "resnet50": (models.resnet50, models.ResNet50_Weights.IMAGENET1K_V1),
}
BACKBONES = ("resnet10", *_TORCHVISION_RESNETS)


def build_backbone(name: str, pretrained: str = "none", last_stride: int = 1) -> ResNet:
    """A torchvision ResNet; its ``fc`` is left as built (the re-ID head replaces it)."""
    if name == "resnet10":
        # The small setting of the synthetic CPU benchmark: one BasicBlock per stage.
        backbone = ResNet(BasicBlock, [1, 1, 1, 1])
        weights = None
    elif name in _TORCHVISION_RESNETS:
        factory, weights = _TORCHVISION_RESNETS[name]
        backbone = factory(weights=None)
    else:
        raise ValueError(f"unknown backbone {name!r}: set model.backbone to one of {', '.join(BACKBONES)}")

    if pretrained == "imagenet":
        if weights is None:
            raise ValueError(f"there are no ImageNet weights for {name}: use model.pretrained=none or a PATH")
        state = _imagenet_state_dict(name, weights)
        _load_backbone_state(backbone, state, source=f"ImageNet weights for {name}")
    elif pretrained != "none":
        path = Path(pretrained).expanduser()
        _load_backbone_state(backbone, _read_state_dict(path), source=str(path))
    _set_last_stride(backbone, last_stride)
    return backbone


def stage_channels(backbone: ResNet) -> dict[str, int]:
    """Output channels of conv2..conv5 (64..512 for BasicBlock nets, 256..2048 for resnet50)."""
    return {stage: _out_channels(getattr(backbone, layer)) for stage, layer in STAGE_LAYERS.items()}


def _out_channels(layer: nn.Sequential) -> int:
    last = layer[-1]
    return last.conv3.out_channels if isinstance(last, Bottleneck) else last.conv2.out_channels


def _set_last_stride(backbone: ResNet, last_stride: int) -> None:
    """Stride 1 in layer4 doubles the final map (16x8 at 256x128) as in the strong baseline."""
    if last_stride not in (1, 2):
        raise ValueError(f"last_stride={last_stride!r} is not supported: set model.last_stride to 1 or 2")
    if last_stride == 2:
        return
    block = backbone.layer4[0]
    # BasicBlock strides conv1, Bottleneck (v1.5) strides conv2; both stride the downsample conv.
    for conv in block.modules():
        if isinstance(conv, nn.Conv2d) and conv.stride == (2, 2):
            conv.stride = (1, 1)
    block.stride = 1


def _imagenet_state_dict(name: str, weights: models.WeightsEnum) -> dict[str, torch.Tensor]:
    """torch hub's cache and download (atomic, hash-checked); a failure becomes one line saying what to set."""
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name
    try:
        state = weights.get_state_dict(progress=False, check_hash=True, weights_only=True)
    except Exception as exc:
        raise RuntimeError(
            f"ImageNet weights for {name} could not be loaded ({one_line(exc)}): without internet, set "
            f"model.pretrained to the path of a local torchvision state dict ({path.name}, or put it at "
            f"{path}) or to none"
        ) from exc
    return _checked_state_dict(state, path)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ValueError(
            f"model.pretrained={str(path)!r} does not exist: point it at a torchvision ResNet state dict"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(
            f"{path} could not be read as a torch state dict ({one_line(exc)}): "
            "point model.pretrained at a torchvision ResNet state dict"
        ) from exc
    return _checked_state_dict(state, path)


def _checked_state_dict(state: object, path: Path) -> dict[str, torch.Tensor]:
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(
            f"{path} is not a state dict (name -> tensor): point model.pretrained at a torchvision one"
        )
    return state


def _load_backbone_state(backbone: ResNet, state: dict[str, torch.Tensor], source: str) -> None:
    """Strict on every key but ``fc.*`` (ImageNet's classifier is never used for re-ID)."""
    state = {key: value for key, value in state.items() if not key.startswith("fc.")}
    expected = {key: value.shape for key, value in backbone.state_dict().items() if not key.startswith("fc.")}
    for key, shape in expected.items():
        # Old torchvision files predate num_batches_tracked; BatchNorm fills it in on load.
        if key not in state and not key.endswith("num_batches_tracked"):
            raise ValueError(
                f"{source} has no {key!r}: it is not a state dict of this backbone (check model.backbone)"
            )
        if key in state and state[key].shape != shape:
            raise ValueError(
                f"{source} gives {key!r} shape {tuple(state[key].shape)}, the backbone needs {tuple(shape)}: "
                "it belongs to another architecture (check model.backbone)"
            )
    unexpected = sorted(set(state) - set(expected))
    if unexpected:
        raise ValueError(
            f"{source} has unexpected key {unexpected[0]!r}: it is not a state dict of this backbone "
            "(check model.backbone)"
        )
    backbone.load_state_dict(state, strict=False)
