"""Image pipelines of the strong re-ID baseline, on uint8 CHW tensors (torchvision ``transforms.v2``)."""

from __future__ import annotations

import torch
from torchvision.transforms import v2

from reidmodel.config import DataConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def build_train_transform(cfg: DataConfig) -> v2.Compose:
    """Resize, flip, pad + crop, colour jitter, normalise, random erasing (docs/method.md section 7).

    Erasing runs after normalisation with value 0, i.e. it paints the ImageNet mean colour, as the
    strong baseline's RandomErasing does.
    """
    steps: list[torch.nn.Module] = [
        v2.Resize((cfg.height, cfg.width), antialias=True),
        v2.RandomHorizontalFlip(p=cfg.flip_prob),
        v2.RandomCrop((cfg.height, cfg.width), padding=cfg.pad or None),
    ]
    if cfg.color_jitter > 0:
        strength = cfg.color_jitter
        steps.append(v2.ColorJitter(brightness=strength, contrast=strength, saturation=strength))
    steps += [
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        v2.RandomErasing(p=cfg.random_erasing_prob, value=0),
    ]
    return v2.Compose(steps)


def build_test_transform(cfg: DataConfig) -> v2.Compose:
    return v2.Compose(
        [
            v2.Resize((cfg.height, cfg.width), antialias=True),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
