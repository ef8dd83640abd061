"""Re-ID data: dataset folders -> records -> transforms -> P x K loaders."""

import importlib

from reidmodel.data.datasets import (
    DatasetError,
    ImageRecord,
    ReIDDataset,
    decode_image,
    load_dataset,
    relabel,
    resolve_dataset,
)
from reidmodel.data.synthetic import ensure_synthetic

# The torch side is imported on first use, so parsing folders (and ``python -m reidmodel.data``)
# does not pay the seconds it takes to import torch.
_TORCH_SIDE = {
    "IMAGENET_MEAN": "transforms",
    "IMAGENET_STD": "transforms",
    "build_test_transform": "transforms",
    "build_train_transform": "transforms",
    "IdentitySampler": "sampler",
    "ImageDataset": "loader",
    "build_test_loader": "loader",
    "build_train_loader": "loader",
    "load_images": "loader",
    "read_image": "loader",
}


def __getattr__(name: str):
    if name not in _TORCH_SIDE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_TORCH_SIDE[name]}"), name)


__all__ = [
    "DatasetError",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IdentitySampler",
    "ImageDataset",
    "ImageRecord",
    "ReIDDataset",
    "build_test_loader",
    "build_test_transform",
    "build_train_loader",
    "build_train_transform",
    "decode_image",
    "ensure_synthetic",
    "load_dataset",
    "load_images",
    "read_image",
    "relabel",
    "resolve_dataset",
]
