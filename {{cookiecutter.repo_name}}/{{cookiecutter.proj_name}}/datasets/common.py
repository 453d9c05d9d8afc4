"""What every dataset loader returns, and the helpers they share."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch.utils.data import Dataset


class Split(NamedTuple):
    """One split of a dataset as tensors in memory: inputs ``x`` and targets ``y`` (class indices or values)."""

    x: torch.Tensor
    y: torch.Tensor


def carve_validation(data: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    """Split training data into (train, validation) with a seeded shuffle.

    The test set never passes through here: it is loaded only by ``bin/evaluate.py``.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"validation_split must be in [0, 1), got {fraction}")
    order = torch.randperm(len(data.y), generator=torch.Generator().manual_seed(seed))
    n_valid = round(len(order) * fraction)
    valid, train = order[:n_valid], order[n_valid:]
    return Split(data.x[train], data.y[train]), Split(data.x[valid], data.y[valid])


def one_vs_rest(data: Split | Dataset, positive_class: int) -> Split | Dataset:
    """Labels 1 for ``positive_class`` and 0 for every other class (task=binary)."""
    if isinstance(data, Split):
        return Split(data.x, (data.y == positive_class).long())
    return OneVsRest(data, positive_class)


class OneVsRest(Dataset):
    """A dataset of ``(x, class)`` pairs as ``(x, 1 if class == positive_class else 0)``."""

    def __init__(self, dataset: Dataset, positive_class: int):
        self.dataset, self.positive_class = dataset, positive_class

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.dataset[i]
        return x, torch.as_tensor(y == self.positive_class).long()
