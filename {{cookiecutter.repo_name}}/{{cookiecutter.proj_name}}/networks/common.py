"""What every network config has: its registry name and the data shapes."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence


@dataclass
class NetworkConfig:
    """Fields shared by all networks; ``None`` shapes are taken from the dataset."""

    name: str = ""
    input_shape: Optional[List[int]] = None  # e.g. [4] for Iris, [3, 32, 32] for CIFAR-10
    output_shape: Optional[int] = None  # number of outputs; 1 = one logit (binary task)


def num_features(input_shape: Sequence[int]) -> int:
    """Size of one flattened sample."""
    return math.prod(input_shape)
