"""Batches from tensors held in memory (on the training device).

Small and medium datasets (Iris, CIFAR-10) fit in memory, and slicing a tensor
is far cheaper than a per-sample ``DataLoader``.  The shuffle of epoch ``e`` is
a permutation drawn from a generator seeded with ``(seed, e)``, so any epoch's
order can be rebuilt after a restart without saving it.
"""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np
import torch

BatchTransform = Callable[[torch.Tensor], torch.Tensor]


def epoch_seed(seed: int, epoch: int) -> int:
    """A well-mixed 63-bit seed for ``(seed, epoch)``."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(2, np.uint64)[0] >> np.uint64(1))


class InMemoryBatches:
    """Iterate over ``(x, y)`` batches of two tensors with a seeded, reproducible order.

    Args:
        x, y: inputs and targets, first dimension = samples.
        batch_size: samples per batch (the last batch may be smaller).
        shuffle: draw a new order every epoch (training) or keep the stored order.
        seed: base seed of the per-epoch permutations.
        transform: applied to each input batch (augmentation, normalisation).
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        transform: BatchTransform | None = None,
    ):
        if len(x) != len(y):
            raise ValueError(f"x has {len(x)} samples but y has {len(y)}")
        self.x, self.y = x, y
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.transform = transform

    def __len__(self) -> int:
        """Number of batches per epoch."""
        return -(-len(self.x) // self.batch_size)

    @property
    def num_samples(self) -> int:
        return len(self.x)

    def order(self, epoch: int) -> torch.Tensor:
        """Sample indices of ``epoch`` in the order they are served."""
        if not self.shuffle:
            return torch.arange(len(self.x), device=self.x.device)
        generator = torch.Generator(device=self.x.device).manual_seed(epoch_seed(self.seed, epoch))
        return torch.randperm(len(self.x), generator=generator, device=self.x.device)

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches of ``epoch``, starting at batch ``start_batch`` (to resume mid-epoch)."""
        order = self.order(epoch)
        for start in range(start_batch * self.batch_size, len(order), self.batch_size):
            index = order[start : start + self.batch_size]
            x = self.x[index]
            yield (self.transform(x) if self.transform else x), self.y[index]
