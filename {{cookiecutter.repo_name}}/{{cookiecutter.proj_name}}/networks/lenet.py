"""LeNet-5 (LeCun et al., 1998), for small images such as CIFAR-10."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class LeNet(nn.Module):
    def __init__(self, input_shape: Sequence[int], output_shape: int):
        super().__init__()
        channels = input_shape[0]
        self.features = nn.Sequential(
            nn.Conv2d(channels, 6, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        )  # fmt: skip
        with torch.no_grad():  # the flattened size depends on the image size
            flat = self.features(torch.zeros(1, *input_shape)).numel()
        self.classifier = nn.Sequential(
            nn.Linear(flat, 120), nn.ReLU(),
            nn.Linear(120, 84), nn.ReLU(),
            nn.Linear(84, output_shape),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))
