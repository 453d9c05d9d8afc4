"""A multi-layer perceptron."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .common import num_features


class MLP(nn.Module):
    """``num_hidden_layers`` x (Linear, ReLU, Dropout), then a linear output layer."""

    def __init__(
        self,
        input_shape: Sequence[int],
        output_shape: int,
        hidden_size: int = 64,
        num_hidden_layers: int = 1,
        dropout: float = 0.0,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        width = num_features(input_shape)
        for _ in range(num_hidden_layers):
            layers += [nn.Linear(width, hidden_size), nn.ReLU(), nn.Dropout(dropout)]
            width = hidden_size
        self.hidden = nn.Sequential(*layers)
        self.output = nn.Linear(width, output_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.hidden(x.flatten(1)))
