"""XavierInitModel: BaseModel with Xavier (Glorot) initialisation; nothing else changes."""

from __future__ import annotations

from torch import nn

from .base import BaseModel


class XavierInitModel(BaseModel):
    def init_weights(self) -> None:
        """Xavier-uniform weights and zero biases for every linear and conv layer."""
        for module in self.network.modules():
            if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
