"""What every dataset loader returns, and the helpers they share."""

from __future__ import annotations

from typing import NamedTuple

import torch


class Split(NamedTuple):
    """One split of a dataset as plain tensors: inputs ``x`` and integer labels ``y``."""

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


def one_vs_rest(data: Split, positive_class: int) -> Split:
    """Labels 1 for ``positive_class`` and 0 for every other class (for a one-output network)."""
    return Split(data.x, (data.y == positive_class).long())
