"""An MLP whose hidden layers stay at their random initialisation.

Only the output layer trains, which makes this a random-features model: a
useful step between the linear baseline and a full MLP.
"""

from __future__ import annotations

import functools

from .mlp import MLP


class MLPFixed(MLP):
    @functools.wraps(MLP.__init__)  # MLP's arguments, declared once: its signature is this network's config
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Frozen parameters get no gradient, and the training model only hands
        # trainable parameters to the optimizer (so no weight decay on them either).
        self.hidden.requires_grad_(False)
