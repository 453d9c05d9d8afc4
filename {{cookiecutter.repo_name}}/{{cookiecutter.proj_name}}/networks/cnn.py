"""A small, fast CNN whose width is ``n_filters`` (the cifar10 default)."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


def _block(c_in: int, c_out: int, pool: bool) -> nn.Sequential:
    layers = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers, nn.MaxPool2d(2)) if pool else nn.Sequential(*layers)


class CNN(nn.Module):
    """Three conv blocks of width n, 2n, 4n (the last two halve the image), then a linear head."""

    def __init__(self, input_shape: Sequence[int], output_shape: int, n_filters: int = 32):
        super().__init__()
        n = n_filters
        self.features = nn.Sequential(
            _block(input_shape[0], n, pool=False),
            _block(n, 2 * n, pool=True),
            _block(2 * n, 4 * n, pool=True),
            nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Linear(4 * n, output_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))
