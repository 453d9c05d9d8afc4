"""An MLP whose hidden layers stay at their random initialisation.

Only the output layer trains, which makes this a random-features model: a
useful step between the linear baseline and a full MLP.
"""

from __future__ import annotations

from dataclasses import dataclass

from .mlp import MLP, MLPConfig


@dataclass
class MLPFixedConfig(MLPConfig):
    name: str = "mlp_fixed"


class MLPFixed(MLP):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Frozen parameters get no gradient, and the training model only hands
        # trainable parameters to the optimizer (so no weight decay on them either).
        self.hidden.requires_grad_(False)
