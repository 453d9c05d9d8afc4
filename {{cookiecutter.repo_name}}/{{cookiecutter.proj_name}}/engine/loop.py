"""The generic, resumable training loop.

``Trainer.fit`` runs epochs of optimisation steps.  Each epoch ends with a
validation pass, one row in history.csv and TensorBoard (``log.py``) and a
checkpoint (``checkpoint.Checkpointer``).  What a step does belongs to the
training model (``training_models/``), what is measured to the metrics
(``metrics.py``); the loop knows neither the task nor the data.

Exact resume: a checkpoint holds the whole state (weights, optimizer, the
position inside the epoch, the epoch's running loss and metric states, the best
monitored value, every random generator) and the order of an epoch is a
function of ``(seed, epoch)`` (``data.py``), so a run resumed from any
checkpoint computes exactly the numbers of a run that never stopped.

Speed: nothing is read back from the device inside a step (a read-back makes
the CPU wait until the GPU has run everything queued).  The loss sum stays on
the device and is read every ``log_every_steps`` steps.  The test set never
reaches the loop: ``bin/evaluate.py`` is a separate, explicit step.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Protocol

import torch
from tqdm.auto import tqdm

from .checkpoint import Checkpointer, CheckpointMismatch, CheckpointSettings, NonFiniteLoss
from .cli import setting
from .distributed import World
from .log import RunLog
from .results import ResultsDir
from .signals import StopFlag

Batch = tuple[torch.Tensor, torch.Tensor]
# Training outputs wait at most this many steps before they are given to the metrics: a metric's update may read
# the device back (torchmetrics counts classes with bincount), so it is not done at every step.
METRIC_EVERY_STEPS = 32


@dataclass
class TrainingSettings:
    """What the loop reads from the config: the top-level keys that ``configs.ExperimentConfig`` inherits."""

    num_epochs: int = setting(30, low=0)
    grad_accum_steps: int = setting(1, low=1)  # batches per optimisation step (effective batch = batch_size * N)
    log_every_steps: int = setting(50, low=1)  # read the training loss back and log it every N steps
    monitor: str = "valid_loss"  # the history column that picks best_model.pt and drives early stopping
    monitor_mode: str = setting("auto", choices=("auto", "min", "max"))  # auto: from the metric (losses: min)
    early_stopping_patience: int = setting(0, low=0)  # stop after N epochs without a better `monitor` (0: off)
    checkpoint: CheckpointSettings = setting(factory=CheckpointSettings)  # every epoch end, and more often


class Batches(Protocol):
    """A split's batches (``data.InMemoryBatches``, ``data.DataLoaderBatches``)."""

    batch_size: int

    def __len__(self) -> int: ...
    def order(self, epoch: int) -> torch.Tensor: ...
    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[Batch]: ...


class TrainingModel(Protocol):
    """What the loop needs from a training model (``training_models.BaseModel``)."""

    network: torch.nn.Module
    device: torch.device
    skipped_steps: int

    def set_epoch(self, epoch: int) -> float: ...
    def train_step(self, batches: list[Batch]) -> tuple[torch.Tensor, torch.Tensor, int]: ...  # loss, outputs, n
    def eval_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...  # loss, outputs
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class Metrics(Protocol):
    """The chosen metrics (``metrics.TaskMetrics``): fed with outputs and targets, read once per epoch."""

    def update(self, outputs: torch.Tensor, targets: torch.Tensor) -> None: ...
    def compute(self) -> dict[str, float]: ...
    def reset(self) -> None: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...
    def higher_is_better(self, column: str) -> bool: ...


class Trainer:
    """Train ``model`` on ``train`` as ``settings`` say, validating on ``valid`` and writing to ``results``.

    ``stop`` is looked at after every step: once a signal sets it, the trainer
    checkpoints where it stands and ``fit`` returns the signal's name.
    ``early_stop`` (a sweep's pruner) is asked after each epoch with its row:
    True ends the run there, as ``early_stopping_patience`` does.  Under
    data parallelism (``world``) each process runs this same loop on its share
    of every batch; only rank 0 writes, and the processes agree on when to stop.
    """

    def __init__(
        self,
        model: TrainingModel,
        train: Batches,
        valid: Batches | None,
        metrics: tuple[Metrics, Metrics],
        results: ResultsDir,
        settings: TrainingSettings,
        stop: StopFlag | None = None,
        world: World | None = None,
        early_stop: Callable[[dict[str, Any]], bool] | None = None,
        hparams: dict[str, Any] | None = None,
    ):
        self.model, self.train, self.valid, self.results, self.settings = model, train, valid, results, settings
        self.train_metrics, self.valid_metrics = metrics
        self.stop = stop or StopFlag()  # a flag nobody sets unless it is entered
        self.world = world or World()
        self.early_stop = early_stop  # (given to every process or to none; rank 0's answer counts)
        self.hparams = hparams  # the run's config, for TensorBoard's HParams tab
        self.checkpointer = Checkpointer(results.path, settings.checkpoint.keep, model.device, self.world)
        self.maximize = settings.monitor_mode == "max" or (
            settings.monitor_mode == "auto" and self.train_metrics.higher_is_better(settings.monitor)
        )
        # Where the run stands: completed epochs, batches done of the next one, optimisation steps so far.
        self.epoch = self.batch = self.global_step = 0
        self.best_value: float | None = None  # of `monitor`, and the epoch that reached it
        self.best_epoch: int | None = None
        self.stopped_early: str | bool = False  # or why: "patience" (early_stopping_patience), "pruned" (early_stop)
        # The current epoch so far, in this process: loss x samples (on the device) and samples; and the part of
        # both already logged, over all processes.
        self.loss_sum = torch.zeros((), device=model.device)
        self.samples = self.logged_samples = 0
        self.logged_loss = 0.0
        self.pending: list[tuple[torch.Tensor, list[torch.Tensor]]] = []  # (outputs, targets) for the metrics
        self.log: RunLog | None = None  # opened by fit

    # -- the algorithm -----------------------------------------------------------------------
    def fit(self) -> str | None:
        """Train to the last epoch; return None, or the name of the signal that stopped it (after a checkpoint)."""
        num_epochs = self.settings.num_epochs
        if self.batch and self.epoch >= num_epochs:
            raise CheckpointMismatch(
                f"this run stopped inside epoch {self.epoch + 1}; num_epochs={num_epochs} would end it with weights "
                f"from the middle of an epoch: use num_epochs >= {self.epoch + 1}"
            )
        if self.epoch >= num_epochs or self.stopped_early:
            print(f"Nothing to do: {self.epoch} of {num_epochs} epochs are done"
                  + (" (stopped early)." if self.stopped_early else "."))  # fmt: skip
            return None
        # TensorBoard hides the points a killed process wrote after the checkpoint this one resumed from.
        first_step = self.global_step + 1
        self.log = RunLog(self.results, first_step, self.hparams) if self.world.is_main else None
        try:
            stopped_by = self._run_epochs(num_epochs)
        finally:
            if self.log is not None:
                self.log.close()
        if self.world.is_main:
            self.checkpointer.sync()
        return stopped_by

    def _run_epochs(self, num_epochs: int) -> str | None:
        while self.epoch < num_epochs and not self.stopped_early:
            if self._stop_agreed() or not self._train_epoch(self.epoch + 1):
                self.save()  # a no-op where the newest checkpoint already holds this position
                return self.stop.name
            self._end_epoch(self.epoch + 1)
            if self._stop_agreed() and self.epoch < num_epochs:
                return self.stop.name
        return None

    def _stop_agreed(self, checkpoint_due: bool = False) -> bool:
        """Has a stop signal come to any process?  (With ``checkpoint_due``: or is a checkpoint due in any?)
        Every process learns the signal, so that all stop at the same step with the same exit code."""
        if self.world.size == 1:
            return self.stop.requested or checkpoint_due
        signum, due = self.world.max([self.stop.signum or 0, int(checkpoint_due)])
        self.stop.signum = self.stop.signum or signum or None
        return self.stop.requested or bool(due)

    def _train_epoch(self, epoch: int) -> bool:
        """Train the rest of ``epoch``; False if a stop signal came (``fit`` then checkpoints)."""
        self.epoch_start = time.perf_counter()
        self.lr = self.model.set_epoch(epoch)
        self.model.network.train()
        if self.batch == 0:  # a new epoch, not one resumed in its middle
            self.loss_sum.zero_()
            self.samples = self.logged_samples = 0
            self.logged_loss = 0.0
            self.train_metrics.reset()
        bar = tqdm(total=len(self.train), initial=self.batch, desc=f"epoch {epoch}/{self.settings.num_epochs}",
                   file=self.results.terminal, leave=False, disable=None if self.world.is_main else True,
                   mininterval=0.5)  # fmt: skip
        with bar:
            for group in self.step_batches(epoch):
                loss, outputs, count = self.model.train_step(group)
                self.loss_sum.add_(loss, alpha=count)  # the step's mean loss x its samples, on the device
                if count:
                    self.pending.append((outputs, [y for _, y in group]))
                self.samples += count
                self.batch += len(group)
                self.global_step += 1
                bar.update(len(group))
                if len(self.pending) >= METRIC_EVERY_STEPS:
                    self._update_train_metrics()
                if self.global_step % self.settings.log_every_steps == 0:
                    bar.set_postfix(loss=f"{self._log_steps():.4g}", refresh=False)
                if self.batch < len(self.train) and self._stop_agreed(self._checkpoint_due()):
                    self.save()  # (the epoch's end checkpoints anyway)
                    if self.stop.requested:
                        return False
        return True

    def step_batches(self, epoch: int) -> Iterator[list[Batch]]:
        """The batches of each optimisation step of ``epoch``, from batch ``self.batch`` on: one, or
        ``grad_accum_steps`` of them (fewer in the epoch's last step)."""
        group: list[Batch] = []
        for index, batch in enumerate(self.train.epoch(epoch, self.batch), start=self.batch):
            group.append(batch)
            if len(group) == self.settings.grad_accum_steps or index + 1 == len(self.train):
                yield group
                group = []

    def _end_epoch(self, epoch: int) -> None:
        """Validate, write the epoch's row, checkpoint."""
        total, samples = self._epoch_totals(f"epoch {epoch}")
        row: dict[str, Any] = {"epoch": epoch, "train_loss": total / max(samples, 1)}
        self._update_train_metrics()
        if samples:  # (over all processes: each must take part in the metrics' reduction)
            row.update({f"train_{name}": value for name, value in self.train_metrics.compute().items()})
        if self.valid is not None:
            self.world.share_buffers(self.model.network)  # BatchNorm statistics: rank 0's, as in its checkpoint
            row.update(evaluate(self.model, self.valid, self.valid_metrics, prefix="valid_", world=self.world))
        row.update(skipped_steps=self.model.skipped_steps, lr=self.lr)
        row.update(epoch_time_s=round(time.perf_counter() - self.epoch_start, 4))
        row["time"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        self.epoch, self.batch = epoch, 0
        value = row.get(self.settings.monitor)
        if value is not None and (self.best_value is None or self._better(value, self.best_value)):
            self.best_value, self.best_epoch = value, epoch
        patience = self.settings.early_stopping_patience
        waited_enough = bool(patience) and self.best_epoch is not None and epoch - self.best_epoch >= patience
        self.stopped_early = "patience" if waited_enough else False
        if self.early_stop is not None:
            asked = self.world.is_main and self.early_stop(row)
            if self.world.max([int(asked)])[0]:
                self.stopped_early = self.stopped_early or "pruned"
        if self.log is not None:
            self.log.epoch(row, self.global_step, self.settings.num_epochs)
        self.save()
        if waited_enough:
            print(f"Early stopping: {self.settings.monitor} has not improved for {patience} epochs "
                  f"(best: epoch {self.best_epoch})")  # fmt: skip

    def _better(self, value: float, best: float) -> bool:
        return value > best if self.maximize else value < best

    # -- reading the device back: only here ----------------------------------------------------
    def _epoch_totals(self, where: str) -> tuple[float, int]:
        """The epoch's loss x samples and samples so far, over all processes (a read-back).  A NaN or Inf loss
        stops the run."""
        loss_sum, samples = self.world.total(self.loss_sum, self.samples)
        total = loss_sum.item()
        if not math.isfinite(total):
            raise NonFiniteLoss(
                f"the training loss became {total} in {where} (before step {self.global_step}); "
                "stopped without writing a checkpoint from that state (nonfinite_loss=skip skips such steps)"
            )
        return total, samples

    def _log_steps(self) -> float:
        """Log the mean training loss of the steps since the last log (within this epoch); return it."""
        first = self.global_step - self.settings.log_every_steps + 1
        total, samples = self._epoch_totals(f"steps {first}..{self.global_step}")
        value = (total - self.logged_loss) / max(samples - self.logged_samples, 1)
        self.logged_loss, self.logged_samples = total, samples
        if self.log is not None:
            self.log.step(value, self.global_step)
        return value

    def _update_train_metrics(self) -> None:
        """Give the training outputs kept since the last call to the training metrics."""
        if self.pending:
            outputs = torch.cat([outputs for outputs, _ in self.pending])
            self.train_metrics.update(outputs, torch.cat([y for _, ys in self.pending for y in ys]))
            self.pending = []

    # -- checkpoints ---------------------------------------------------------------------------
    def _checkpoint_due(self) -> bool:
        """A checkpoint inside the epoch: every ``every_steps`` steps, or ``every_minutes`` after the last one."""
        every_steps, every_minutes = self.settings.checkpoint.every_steps, self.settings.checkpoint.every_minutes
        if every_steps and self.global_step % every_steps == 0:
            return True
        return bool(every_minutes) and self.checkpointer.seconds_since_save() >= 60 * every_minutes

    def save(self) -> None:
        """Checkpoint where the run stands."""
        self._update_train_metrics()
        self._epoch_totals(f"epoch {self.epoch + 1}" if self.batch else f"epoch {self.epoch}")  # never save a NaN
        if self.log is not None:  # a checkpoint must not outlive its history rows: resume cannot write them again
            self.log.sync()
        self.checkpointer.save(self)

    def resume(self) -> bool:
        """Continue from the newest readable checkpoint, if there is one (see ``Checkpointer.load``)."""
        path = self.checkpointer.load(self)
        if self.world.is_main:
            self.results.truncate_history(self.epoch)  # rows written after that checkpoint are written again
        if path is not None:
            where = f"epoch {self.epoch} done"
            if self.batch:
                where += f", then {self.batch} of {len(self.train)} batches of epoch {self.epoch + 1}"
            print(f"Resuming from {path.relative_to(self.results.path)} ({where})")  # (other ranks print nowhere)
        return path is not None

    def state_dict(self) -> tuple[dict, dict, dict]:
        """``(weights, other tensors, JSON-able loop state)`` of this moment; the tensors are live, not copies.
        Under ``rank`` what differs between processes (the checkpoint keeps every process's)."""
        tensors = {
            "training_model": self.model.state_dict(),
            "rank": {"loss_sum": self.loss_sum, "train_metrics": self.train_metrics.state_dict()},
        }
        loop = {
            "epoch": self.epoch,
            "batch": self.batch,
            "global_step": self.global_step,
            "rank": {"samples": self.samples},
            "logged_samples": self.logged_samples,
            "logged_loss": self.logged_loss,
            "monitor": self.settings.monitor,
            "best_value": self.best_value,
            "best_epoch": self.best_epoch,
            "is_best": self.best_epoch == self.epoch and not self.batch,  # best_model.pt takes these weights
            "stopped_early": self.stopped_early,
        }
        return self.model.network.state_dict(), tensors, loop

    def load_state_dict(self, weights: dict, tensors: dict, loop: dict) -> None:
        self.model.network.load_state_dict(weights)
        self.model.load_state_dict(tensors["training_model"])
        self.loss_sum = tensors["rank"]["loss_sum"].to(self.model.device)
        self.train_metrics.load_state_dict(tensors["rank"]["train_metrics"])
        self.epoch, self.batch, self.global_step = loop["epoch"], loop["batch"], loop["global_step"]
        self.samples = loop["rank"]["samples"]
        self.logged_samples, self.logged_loss = loop["logged_samples"], loop["logged_loss"]
        if loop["monitor"] == self.settings.monitor:  # a new monitor starts its best afresh
            self.best_value, self.best_epoch = loop["best_value"], loop["best_epoch"]
        self.stopped_early = loop["stopped_early"]


@torch.no_grad()
def evaluate(
    model: TrainingModel, data: Batches, metrics: Metrics, prefix: str = "", world: World | None = None
) -> dict[str, float]:
    """Mean loss and every metric of ``model`` over ``data`` (one pass in eval mode; over every process's share)."""
    world = world or World()
    model.network.eval()
    metrics.reset()
    loss_sum, samples = torch.zeros((), device=model.device), 0
    for x, y in data.epoch(0):
        if y.shape[0]:  # (a process's share of the last batch may be empty)
            loss, outputs = model.eval_step(x, y)
            loss_sum += loss * y.shape[0]
            samples += y.shape[0]
            metrics.update(outputs, y)
    loss_sum, samples = world.total(loss_sum, samples)
    values = {"loss": loss_sum.item() / max(samples, 1), **(metrics.compute() if samples else {})}
    return {f"{prefix}{name}": value for name, value in values.items()}
