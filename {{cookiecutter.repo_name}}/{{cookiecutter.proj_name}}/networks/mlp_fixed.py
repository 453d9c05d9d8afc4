"""An MLP whose hidden layers stay at their random initialisation.

Only the output layer trains, which makes this a random-features model: a
useful step between the linear baseline and a full MLP.
"""

from __future__ import annotations

from typing import Sequence

from .mlp import MLP


class MLPFixed(MLP):
    def __init__(
        self,
        input_shape: Sequence[int],
        output_shape: int,
        hidden_size: int = 64,
        num_hidden_layers: int = 1,
        dropout: float = 0.0,
    ):
        super().__init__(input_shape, output_shape, hidden_size, num_hidden_layers, dropout)
        # Frozen parameters get no gradient, and the training model only hands
        # trainable parameters to the optimizer (so no weight decay on them either).
        self.hidden.requires_grad_(False)
