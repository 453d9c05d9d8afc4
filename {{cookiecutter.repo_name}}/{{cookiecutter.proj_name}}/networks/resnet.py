"""torchvision's ResNet-18, adapted to 32x32 images (as usual for CIFAR-10)."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class ResNet18(nn.Module):
    def __init__(self, input_shape: Sequence[int], output_shape: int):
        super().__init__()
        from torchvision.models import resnet18  # imported here: torchvision is slow to import

        self.net = resnet18(weights=None, num_classes=output_shape)
        # The ImageNet stem (7x7 stride-2 conv + max-pool) would shrink a 32x32
        # image to 8x8 before the first block; a 3x3 stride-1 conv keeps detail.
        self.net.conv1 = nn.Conv2d(input_shape[0], 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.net.maxpool = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
