"""A linear model: the simplest baseline."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .common import num_features


class Linear(nn.Module):
    def __init__(self, input_shape: Sequence[int], output_shape: int):
        super().__init__()
        self.fc = nn.Linear(num_features(input_shape), output_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))
