"""Training models (what is optimised and how), selected with ``--training_model=NAME``.

To try another strategy, subclass ``BaseModel``, override what differs and add
the class to ``TRAINING_MODELS``.
"""

from __future__ import annotations

from .base import BaseModel
from .xavier_init import XavierInitModel

TRAINING_MODELS = {"BaseModel": BaseModel, "XavierInitModel": XavierInitModel}
