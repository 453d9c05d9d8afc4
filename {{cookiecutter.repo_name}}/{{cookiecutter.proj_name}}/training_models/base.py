"""BaseModel: what is optimised and how.

The loss, the optimizer, the learning rate and its schedule, the weight
initialisation and one batch step all live here.  To compare training
strategies, subclass it and override one method (see ``xavier_init.py``).
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..engine.cli import ConfigError, suggest

if TYPE_CHECKING:
    from ..configs import ExperimentConfig

# The losses that fit each task; the first is the default (loss=auto).  Add yours to its task.
LOSSES = {
    "classification": ("CrossEntropyLoss", "NLLLoss", "MultiMarginLoss"),  # class scores, integer labels
    "binary": ("BCEWithLogitsLoss",),  # one logit per sample, 0/1 labels
    "regression": ("MSELoss", "L1Loss", "HuberLoss", "SmoothL1Loss"),  # values, float targets
}
AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def _classes(module, base: type) -> list[str]:
    """Names of the public subclasses of ``base`` in ``module`` (torch.nn losses, torch.optim optimizers)."""
    return sorted(n for n, c in vars(module).items() if isinstance(c, type) and issubclass(c, base) and n[0] != "_")


def loss_name(task: str, loss: str) -> str:
    """The loss of ``task``: ``loss``, checked to be a torch.nn loss that fits the task, or its default (auto)."""
    if loss == "auto":
        return LOSSES[task][0]
    loss_cls = getattr(nn, loss, None)
    if not (isinstance(loss_cls, type) and issubclass(loss_cls, nn.modules.loss._Loss)):
        hint = suggest(loss, _classes(nn, nn.modules.loss._Loss))
        raise ConfigError(f"loss {loss!r} is not a torch.nn loss{hint}; for task={task} use {', '.join(LOSSES[task])}")
    if loss not in LOSSES[task]:
        fits = [name for name, losses in LOSSES.items() if loss in losses]
        hint = f" (it fits task={fits[0]})" if fits else ""
        raise ConfigError(f"loss={loss} does not fit task={task}{hint}; for task={task} use {', '.join(LOSSES[task])}")
    return loss


def optimizer_class(name: str) -> type[torch.optim.Optimizer]:
    """``torch.optim.<name>``, checked to be an optimizer."""
    optim_cls = getattr(torch.optim, name, None)
    if not (isinstance(optim_cls, type) and issubclass(optim_cls, torch.optim.Optimizer)):
        choices = [n for n in _classes(torch.optim, torch.optim.Optimizer) if n != "Optimizer"]
        raise ConfigError(
            f"optimizer.name {name!r} is not a torch.optim optimizer{suggest(name, choices)}; "
            f"choose one of: {', '.join(choices)}"
        )
    return optim_cls


def make_optimizer(params, cfg) -> torch.optim.Optimizer:
    """``torch.optim.<cfg.name>`` with lr, weight_decay, momentum (if it takes one) and ``cfg.extra``."""
    optim_cls = optimizer_class(cfg.name)
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
        cfg: the whole experiment config (``loss``, ``optimizer``, ``lr_schedule``
            and the speed keys ``precision``, ``compile``, ``channels_last``,
            ``grad_clip_norm``, ``nonfinite_loss`` are read).
    """

    def __init__(self, network: nn.Module, cfg: ExperimentConfig):
        self.network = network
        self.device = next(network.parameters()).device
        self.loss_fn = getattr(nn, loss_name(cfg.task, cfg.loss))()
        self.binary = cfg.task == "binary"  # one logit per sample, labels 0/1
        self.base_lr = cfg.optimizer.lr
        self.lr_schedule = sorted((int(epoch), float(lr)) for epoch, lr in cfg.lr_schedule)
        self.init_weights()
        # Frozen parameters (mlp_fixed) are left out, so nothing can change them.
        self.params = [p for p in network.parameters() if p.requires_grad]
        self.optimizer = make_optimizer(self.params, cfg.optimizer)
        self.grad_clip_norm = cfg.grad_clip_norm
        self.skip_nonfinite = cfg.nonfinite_loss == "skip"
        self.skipped_steps = 0
        self.autocast_dtype = AUTOCAST_DTYPES[cfg.precision]
        # fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none.
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.precision == "fp16")
        self.channels_last = cfg.channels_last
        if self.channels_last:
            network.to(memory_format=torch.channels_last)
        # The compiled module shares the weights; ``network`` keeps the plain state-dict keys.
        self.forward = torch.compile(network) if cfg.compile else network

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

    def outputs(self, x: torch.Tensor) -> torch.Tensor:
        """The network's outputs for a batch, in the configured precision and memory format."""
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.autocast_dtype is None:
            return self.forward(x)
        with torch.autocast(self.device.type, dtype=self.autocast_dtype):
            return self.forward(x)

    def loss(self, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean loss of a batch, computed in full precision (also under autocast)."""
        if outputs.dtype != torch.float32:
            outputs = outputs.float()
        if self.binary:
            return self.loss_fn(outputs.squeeze(1), y.to(outputs.dtype))
        return self.loss_fn(outputs, y)

    def train_step(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor, int]:
        """One optimisation step over ``batches`` (more than one with gradient accumulation).

        Returns the mean loss and the network's outputs for the step's samples
        (detached device tensors, not read back: the loop gives them to the
        metrics) and the number of samples the step counted (0 if skipped).
        """
        self.optimizer.zero_grad(set_to_none=True)
        total = sum(y.shape[0] for _, y in batches)  # not len(y): Tensor.__len__ is Python code, every step
        if self.skip_nonfinite:  # a skipped step must not leave NaN in BatchNorm's running statistics either
            buffers = [buffer.clone() for buffer in self.network.buffers()]
        losses, kept = [], []
        for x, y in batches:
            outputs = self.outputs(x)
            loss = self.loss(outputs, y)
            if len(batches) > 1:  # each batch weighs by its share of samples: accumulating = one step on all
                loss = loss * (y.shape[0] / total)
            self.scaler.scale(loss).backward()
            losses.append(loss.detach())
            kept.append(outputs.detach())
        loss, outputs = (losses[0], kept[0]) if len(batches) == 1 else (sum(losses), torch.cat(kept))
        if self.skip_nonfinite and not torch.isfinite(loss):  # reads the loss back: a sync, in this mode only
            self.skipped_steps += 1
            for buffer, saved in zip(self.network.buffers(), buffers, strict=True):
                buffer.copy_(saved)
            return torch.zeros_like(loss), outputs[:0], 0
        if self.grad_clip_norm > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.params, self.grad_clip_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss, outputs, total

    @torch.no_grad()
    def eval_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean loss and outputs of a batch (device tensors)."""
        outputs = self.outputs(x)
        return self.loss(outputs, y), outputs

    def state_dict(self) -> dict[str, Any]:
        """Everything but the weights that resume needs (the loop saves the weights)."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "skipped_steps": self.skipped_steps,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        if state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        self.skipped_steps = state["skipped_steps"]
