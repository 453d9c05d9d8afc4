"""The generic, resumable training loop.

It knows nothing about the task: a *training model* (see ``training_models/``)
provides ``network``, ``set_epoch``, ``train_step``, ``eval_step``,
``state_dict`` and ``load_state_dict``.  The loop runs epochs, logs one row per
epoch to history.csv and TensorBoard, and checkpoints after every epoch.

Note that the loop is never given the test set: test metrics come from
``bin/evaluate.py``, an explicit, separate step.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from typing import Any, Protocol

import torch
from tqdm.auto import tqdm

from . import checkpoint
from .data import InMemoryBatches
from .results import ResultsDir


class TrainingModel(Protocol):
    network: torch.nn.Module

    def set_epoch(self, epoch: int) -> float: ...
    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...
    def eval_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class Trainer:
    """Train ``model`` for ``num_epochs`` epochs, resuming from ``results`` if it holds a checkpoint."""

    def __init__(
        self,
        model: TrainingModel,
        train: InMemoryBatches,
        valid: InMemoryBatches | None,
        results: ResultsDir,
        num_epochs: int,
        keep_checkpoints: int = 2,
    ):
        self.model, self.train, self.valid, self.results = model, train, valid, results
        self.num_epochs, self.keep_checkpoints = num_epochs, keep_checkpoints
        self.epoch = 0  # completed epochs
        self.global_step = 0
        self.best_valid_loss = math.inf
        self.best_epoch: int | None = None

    # -- state ---------------------------------------------------------------------------
    def state_dict(self) -> tuple[dict, dict, dict]:
        """``(model weights, other tensors, JSON-able loop state)`` of the current moment."""
        rng_tensors, rng_plain = checkpoint.capture_rng()
        tensors = {"training_model": self.model.state_dict(), "rng": rng_tensors}
        loop = {
            "epoch": self.epoch,
            "global_step": self.global_step,
            "best_valid_loss": None if math.isinf(self.best_valid_loss) else self.best_valid_loss,
            "best_epoch": self.best_epoch,
            "rng": rng_plain,
        }
        return self.model.network.state_dict(), tensors, loop

    def load_state_dict(self, weights: dict, tensors: dict, loop: dict) -> None:
        self.model.network.load_state_dict(weights)
        self.model.load_state_dict(tensors["training_model"])
        self.epoch, self.global_step = loop["epoch"], loop["global_step"]
        best = loop["best_valid_loss"]
        self.best_valid_loss = math.inf if best is None else best
        self.best_epoch = loop["best_epoch"]
        checkpoint.restore_rng(tensors["rng"], loop["rng"])

    def resume(self) -> bool:
        """Load the newest checkpoint, if any, and drop history rows written after it."""
        found = checkpoint.list_checkpoints(self.results.path)
        if not found:
            self.results.truncate_history(0)
            return False
        self.load_state_dict(*checkpoint.load_checkpoint(found[-1]))
        self.results.truncate_history(self.epoch)
        print(f"Resuming from {found[-1].relative_to(self.results.path)} (epoch {self.epoch} done)")
        return True

    def save(self) -> None:
        weights, tensors, loop = self.state_dict()
        checkpoint.save_checkpoint(self.results.path, self.global_step, weights, tensors, loop, self.keep_checkpoints)

    # -- training ----------------------------------------------------------------------------
    def fit(self) -> None:
        if self.epoch >= self.num_epochs:
            print(f"Nothing to do: {self.epoch} of {self.num_epochs} epochs are done.")
            return
        from torch.utils.tensorboard import SummaryWriter  # imported here: slow, and only training needs it

        # purge_step drops events a killed run wrote after its last checkpoint.
        writer = SummaryWriter(str(self.results.path), purge_step=self.epoch + 1 if self.epoch else None)
        try:
            for epoch in range(self.epoch + 1, self.num_epochs + 1):
                row = self._run_epoch(epoch)
                self.epoch = epoch
                if row.get("valid_loss", math.inf) < self.best_valid_loss:
                    self.best_valid_loss, self.best_epoch = row["valid_loss"], epoch
                self.results.append_history(row)
                for key, value in row.items():
                    if key != "epoch" and isinstance(value, float):
                        writer.add_scalar(key, value, epoch)
                writer.flush()
                self.save()
                print(_summary(row, self.num_epochs))
        finally:
            writer.close()

    def _run_epoch(self, epoch: int) -> dict[str, Any]:
        start = time.perf_counter()
        lr = self.model.set_epoch(epoch)
        self.model.network.train()
        # Sums stay on the device: reading them every step (.item()) would synchronise.
        loss_sum = correct = torch.zeros((), device=self.train.x.device)
        bar = tqdm(
            total=len(self.train),
            desc=f"epoch {epoch}/{self.num_epochs}",
            file=self.results.terminal,
            leave=False,
            disable=None,  # no bar when the terminal is not a TTY (CI, nohup)
            mininterval=0.5,
        )
        for x, y in self.train.epoch(epoch):
            step_loss, step_correct = self.model.train_step(x, y)
            loss_sum, correct = loss_sum + step_loss, correct + step_correct
            self.global_step += 1
            bar.update()
        bar.close()
        row: dict[str, Any] = {
            "epoch": epoch,
            "train_loss": loss_sum.item() / self.train.num_samples,
            "train_acc": correct.item() / self.train.num_samples,
        }
        if self.valid is not None:
            row.update(evaluate(self.model, self.valid, prefix="valid_"))
        row.update(lr=lr, epoch_time_s=round(time.perf_counter() - start, 4))
        row["time"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        return row


@torch.no_grad()
def evaluate(model: TrainingModel, data: InMemoryBatches, prefix: str = "") -> dict[str, float]:
    """Mean loss and accuracy of ``model`` over ``data`` (one pass, eval mode)."""
    model.network.eval()
    loss_sum = correct = torch.zeros((), device=data.x.device)
    for x, y in data.epoch(0):
        step_loss, step_correct = model.eval_step(x, y)
        loss_sum, correct = loss_sum + step_loss, correct + step_correct
    return {f"{prefix}loss": loss_sum.item() / data.num_samples, f"{prefix}acc": correct.item() / data.num_samples}


def _summary(row: dict[str, Any], num_epochs: int) -> str:
    parts = [f"epoch {row['epoch']}/{num_epochs}"]
    parts += [f"{k} {v:.4g}" for k, v in row.items() if k not in ("epoch", "time") and isinstance(v, float)]
    return "  ".join(parts)
