"""Records -> tensors -> DataLoaders. Decode errors always surface as a DatasetError naming the file."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from reidmodel.config import DataConfig
from reidmodel.data.datasets import ImageRecord, decode_image
from reidmodel.data.sampler import IdentitySampler
from reidmodel.data.transforms import build_test_transform, build_train_transform


def read_image(path: str) -> torch.Tensor:
    """An RGB image as a uint8 [3, H, W] tensor; a file that cannot be decoded is a DatasetError naming it."""
    return F.pil_to_tensor(decode_image(path))


def load_images(records: Sequence[ImageRecord], height: int, width: int) -> torch.Tensor:
    """Decode and resize every image once into a uint8 [N, 3, H, W] store, for datasets that fit in memory.

    The resize is the one the transforms apply, so a stored image goes through them unchanged.
    """
    resize = v2.Resize((height, width), antialias=True)
    store = torch.empty((len(records), 3, height, width), dtype=torch.uint8)
    for i, record in enumerate(records):
        store[i] = resize(read_image(record.path))
    return store


class ImageDataset(Dataset):
    """Records (optionally pre-decoded) with a transform; ``labels`` replaces the pids, e.g. pseudo labels."""

    def __init__(
        self,
        records: Sequence[ImageRecord],
        transform: Callable[[torch.Tensor], torch.Tensor],
        images: torch.Tensor | None = None,
        labels: Sequence[int] | None = None,
    ) -> None:
        if images is not None and (images.dtype != torch.uint8 or images.ndim != 4 or len(images) != len(records)):
            raise ValueError(
                f"images must be a uint8 [N, 3, H, W] tensor with N={len(records)} (one per record), "
                f"got {images.dtype} {tuple(images.shape)}: build it with load_images(records, ...)"
            )
        if labels is not None and len(labels) != len(records):
            raise ValueError(f"labels has {len(labels)} entries for {len(records)} records: pass one label per record")
        self.records = list(records)
        self.transform = transform
        self.images = images
        self.labels = [r.pid for r in self.records] if labels is None else [int(label) for label in labels]

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int, int]:
        image = self.images[index] if self.images is not None else read_image(self.records[index].path)
        return self.transform(image), self.labels[index], self.records[index].camid, index


def build_train_loader(
    records: Sequence[ImageRecord],
    cfg: DataConfig,
    *,
    labels: Sequence[int] | None = None,
    seed: int = 0,
    images: torch.Tensor | None = None,
) -> DataLoader:
    """P x K batches over the records whose label is >= 0; call ``loader.sampler.set_epoch(epoch)`` per epoch."""
    if images is None and cfg.in_memory:
        images = load_images(records, cfg.height, cfg.width)
    dataset = ImageDataset(records, build_train_transform(cfg), images=images, labels=labels)
    sampler = IdentitySampler(dataset.labels, cfg.batch_size, cfg.num_instances, seed=seed,
                              max_batches=cfg.max_batches)
    return _loader(dataset, cfg, cfg.batch_size, sampler=sampler, drop_last=True, seed=seed)


def build_test_loader(
    records: Sequence[ImageRecord],
    cfg: DataConfig,
    *,
    images: torch.Tensor | None = None,
    batch_size: int | None = None,
) -> DataLoader:
    """All records in order, so features line up with the records for evaluation."""
    if images is None and cfg.in_memory:
        images = load_images(records, cfg.height, cfg.width)
    dataset = ImageDataset(records, build_test_transform(cfg), images=images)
    return _loader(dataset, cfg, batch_size or cfg.batch_size, sampler=None, drop_last=False, seed=0)


def _loader(
    dataset: ImageDataset,
    cfg: DataConfig,
    batch_size: int,
    *,
    sampler: IdentitySampler | None,
    drop_last: bool,
    seed: int,
) -> DataLoader:
    # The generator seeds the workers' RNGs (the augmentations), so a seed fixes them too.
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        shuffle=False,
        drop_last=drop_last,
        num_workers=cfg.workers,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=cfg.workers > 0,
        generator=torch.Generator().manual_seed(seed),
    )
