"""P identities x K instances per batch, so every batch holds positives and negatives for the triplet loss."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler


class IdentitySampler(Sampler[int]):
    """torchreid's RandomIdentitySampler, made reproducible: the order depends only on (seed, epoch).

    Identities with fewer than K images are drawn with replacement; labels < 0 (unclustered samples)
    are never drawn. Each ``__iter__`` uses the current epoch and then advances it, so forgetting
    ``set_epoch`` still gives a new order every epoch; calling it pins the order to that epoch.
    """

    def __init__(self, labels: Sequence[int], batch_size: int, num_instances: int, seed: int = 0,
                 max_batches: int | None = None) -> None:
        if num_instances < 1 or batch_size % num_instances:
            raise ValueError(
                f"batch_size={batch_size} is not a multiple of num_instances={num_instances}: "
                "set data.batch_size to P x data.num_instances"
            )
        self.batch_size = batch_size
        self.num_instances = num_instances
        self.num_pids_per_batch = batch_size // num_instances
        self.seed = seed
        self.max_batches = max_batches  # an epoch's first batches only (a rehearsal's short schedule)
        self.epoch = 0
        index_of_label: dict[int, list[int]] = defaultdict(list)
        for index, label in enumerate(labels):
            if int(label) >= 0:
                index_of_label[int(label)].append(index)
        self.index_of_label = dict(sorted(index_of_label.items()))
        if len(self.index_of_label) < self.num_pids_per_batch:
            raise ValueError(
                f"only {len(self.index_of_label)} identities (labels >= 0) but a batch needs "
                f"{self.num_pids_per_batch} = batch_size / num_instances: lower data.batch_size"
            )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        indices = self._epoch_indices(self.epoch)
        self.epoch += 1
        return iter(indices)

    def __len__(self) -> int:
        return len(self._epoch_indices(self.epoch))

    def _epoch_indices(self, epoch: int) -> list[int]:
        rng = np.random.default_rng([self.seed, epoch])
        k = self.num_instances
        chunks: dict[int, list[list[int]]] = {}
        for label, indices in self.index_of_label.items():
            if len(indices) < k:
                shuffled = rng.choice(indices, size=k, replace=True)
            else:
                shuffled = rng.permutation(indices)
            # Leftovers (len % K) are dropped, as in torchreid: every chunk has exactly K images.
            chunks[label] = [shuffled[i : i + k].tolist() for i in range(0, len(shuffled) - k + 1, k)]
        available = list(chunks)
        out: list[int] = []
        while len(available) >= self.num_pids_per_batch:
            picked = rng.choice(len(available), size=self.num_pids_per_batch, replace=False)
            for label in [available[i] for i in picked]:
                out.extend(chunks[label].pop())
                if not chunks[label]:
                    available.remove(label)
        return out if self.max_batches is None else out[: self.max_batches * self.batch_size]
