"""BaseModel: what is optimised and how.

The loss, the optimizer, the learning rate and its schedule, the weight
initialisation and one batch step all live here.  To compare training
strategies, subclass it and override one method (see ``xavier_init.py``).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from ..engine.cli import ConfigError

BINARY_LOSSES = ("BCEWithLogitsLoss",)


def make_loss(name: str) -> nn.Module:
    """``torch.nn.<name>()``, checked to be a loss."""
    loss_cls = getattr(nn, name, None)
    if not (isinstance(loss_cls, type) and issubclass(loss_cls, nn.modules.loss._Loss)):
        raise ConfigError(f"loss {name!r} is not a torch.nn loss (e.g. CrossEntropyLoss, BCEWithLogitsLoss)")
    return loss_cls()


def make_optimizer(params, cfg) -> torch.optim.Optimizer:
    """``torch.optim.<cfg.name>`` with lr, weight_decay, momentum (if it takes one) and ``cfg.extra``."""
    optim_cls = getattr(torch.optim, cfg.name, None)
    if not (isinstance(optim_cls, type) and issubclass(optim_cls, torch.optim.Optimizer)):
        raise ConfigError(f"optimizer.name {cfg.name!r} is not a torch.optim optimizer (e.g. SGD, Adam, AdamW)")
    kwargs: dict[str, Any] = {"lr": cfg.lr, "weight_decay": cfg.weight_decay}
    if "momentum" in inspect.signature(optim_cls).parameters:
        kwargs["momentum"] = cfg.momentum
    kwargs.update(cfg.extra)
    try:
        return optim_cls(params, **kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"optimizer {cfg.name} rejected its arguments {kwargs}: {err}") from None


class BaseModel:
    """Trains ``network`` as the config says; the training loop calls the methods below.

    Args:
        network: the ``nn.Module`` to train, already on its device.
        cfg: the whole experiment config (``loss``, ``optimizer``, ``lr_schedule`` are read).
    """

    def __init__(self, network: nn.Module, cfg):
        self.network = network
        self.loss_fn = make_loss(cfg.loss)
        self.binary = cfg.loss in BINARY_LOSSES  # one logit per sample, labels 0/1
        self.base_lr = cfg.optimizer.lr
        self.lr_schedule = sorted((int(epoch), float(lr)) for epoch, lr in cfg.lr_schedule)
        self.init_weights()
        # Frozen parameters (mlp_fixed) are left out, so nothing can change them.
        self.optimizer = make_optimizer([p for p in network.parameters() if p.requires_grad], cfg.optimizer)

    def init_weights(self) -> None:
        """Initialise the network's weights; the base keeps PyTorch's default initialisation."""

    def lr_at(self, epoch: int) -> float:
        """Learning rate of ``epoch`` (1-based): the last ``[from_epoch, lr]`` pair that has started."""
        lr = self.base_lr
        for start, value in self.lr_schedule:
            if epoch >= start:
                lr = value
        return lr

    def set_epoch(self, epoch: int) -> float:
        lr = self.lr_at(epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def loss_and_correct(self, outputs: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean loss of a batch and its number of correct predictions (a tensor, not synchronised)."""
        if self.binary:
            logits = outputs.squeeze(1)
            return self.loss_fn(logits, y.to(logits.dtype)), ((logits > 0).long() == y).sum()
        return self.loss_fn(outputs, y), (outputs.argmax(1) == y).sum()

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimisation step; returns (summed loss, number correct) of the batch."""
        self.optimizer.zero_grad(set_to_none=True)
        loss, correct = self.loss_and_correct(self.network(x), y)
        loss.backward()
        self.optimizer.step()
        return loss.detach() * len(y), correct

    @torch.no_grad()
    def eval_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loss, correct = self.loss_and_correct(self.network(x), y)
        return loss * len(y), correct

    def state_dict(self) -> dict[str, Any]:
        """Everything but the weights that resume needs (the loop saves the weights)."""
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
