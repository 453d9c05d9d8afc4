"""The generic, resumable training loop.

It knows nothing about the task: a *training model* (see ``training_models/``)
provides ``network``, ``set_epoch``, ``train_step``, ``eval_step``,
``state_dict`` and ``load_state_dict``.  The loop runs epochs, logs one row per
epoch to history.csv and TensorBoard, and checkpoints at every epoch end and
every few steps or minutes inside an epoch.

A checkpoint holds the *whole* state: weights, optimizer, grad scaler, the
position inside the epoch, the running sums of the epoch's metrics, the best
validation loss and every random generator.  The data order of an epoch is a
function of ``(seed, epoch)`` (see ``data.py``), so a run resumed from any
checkpoint computes exactly the same numbers as one that was never stopped.

Nothing is read back from the device inside a step: sums stay on the device and
are read once per ``log_every_steps`` steps, at checkpoints and at epoch ends.
Steps do not wait for the disk either: history rows, TensorBoard events
(``scalars.py``) and checkpoints are written by a background thread
(``writer.py``) from a copy of the state.

Note that the loop is never given the test set: test metrics come from
``bin/evaluate.py``, an explicit, separate step.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Protocol

import torch
from tqdm.auto import tqdm

from . import checkpoint, faults
from .results import ResultsDir
from .scalars import ScalarLog
from .signals import StopFlag
from .writer import BackgroundWriter

Batch = tuple[torch.Tensor, torch.Tensor]
# Training outputs kept for the deferred count of correct predictions: at most this many elements
# (4 MB in fp32), so that many classes or a long epoch cannot fill the device's memory.
MAX_KEPT_ELEMENTS = 2**20


class Batches(Protocol):
    """What the loop needs from a data source (``data.InMemoryBatches``, ``data.DataLoaderBatches``)."""

    batch_size: int

    def __len__(self) -> int: ...
    @property
    def num_samples(self) -> int: ...
    def order(self, epoch: int) -> torch.Tensor: ...
    def epoch(self, epoch: int, start_batch: int = 0): ...


class TrainingModel(Protocol):
    network: torch.nn.Module

    def set_epoch(self, epoch: int) -> float: ...
    def train_step(self, batches: list[Batch]) -> tuple[torch.Tensor, torch.Tensor, int]: ...  # loss, outputs, n
    def predictions(self, outputs: torch.Tensor) -> torch.Tensor: ...
    def eval_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class TrainerOptions:
    num_epochs: int
    grad_accum_steps: int = 1  # batches per optimisation step
    checkpoint_every_steps: int = 0  # also checkpoint every N steps inside an epoch (0: off)
    checkpoint_every_minutes: float = 10.0  # ... and when this long has passed since the last one (0: off)
    checkpoint_min_interval_s: float = 1.0  # skip epoch-end checkpoints younger than this (not the last epoch's)
    keep_checkpoints: int = 2
    log_every_steps: int = 50  # read the loss back and log it every N steps
    early_stopping_patience: int = 0  # stop after N epochs without a better valid_loss (0: off)


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite; no checkpoint was written from that state."""


class NoReadableCheckpoint(RuntimeError):
    """Every checkpoint of a results directory failed to load."""


class CheckpointMismatch(RuntimeError):
    """A checkpoint was read but does not fit the model (its code or config changed)."""


class Trainer:
    """Train ``model`` for ``options.num_epochs`` epochs, resuming from ``results`` if it holds a checkpoint.

    ``stop`` is looked at after every optimisation step: once set (by a signal),
    the trainer writes a checkpoint and ``fit`` returns.
    """

    def __init__(
        self,
        model: TrainingModel,
        train: Batches,
        valid: Batches | None,
        results: ResultsDir,
        options: TrainerOptions,
        stop: StopFlag | None = None,
    ):
        self.model, self.train, self.valid, self.results = model, train, valid, results
        self.options = options
        self.stop = stop or StopFlag()  # a flag nobody sets unless it is entered
        self.device = next(model.network.parameters()).device
        # The position: completed epochs, batches done in the next one, optimisation steps so far.
        self.epoch = self.batch = self.global_step = 0
        self.best_valid_loss = math.inf
        self.best_epoch: int | None = None
        self.stopped_early = False
        # Running sums of the current epoch (and of the current log interval), kept on the device.
        self.meters = self._zero_meters()
        self.samples = self.interval_samples = 0
        # Outputs and targets of the steps since the last count of correct predictions: counting them at
        # checkpoints, at epoch ends and every MAX_KEPT_ELEMENTS costs a few operations per epoch instead of
        # three per step (see _count_correct).
        self._outputs: list[torch.Tensor] = []
        self._targets: list[torch.Tensor] = []
        self._kept_elements = 0  # elements in self._outputs
        self._scalars = self._scalar_log()  # TensorBoard scalars; fit() starts a new log from the resumed position
        self._disk = BackgroundWriter()  # history rows, TensorBoard events and checkpoints, in order, off this thread
        self._saved_step = -1  # global step of the newest checkpoint handed to the writer (or loaded)
        # A CPU copy of the best epoch's weights while no checkpoint holds them (its epoch end was skipped):
        # the next checkpoint writes it to best_model.pt.
        self._best_weights: dict[str, torch.Tensor] | None = None
        self._last_save = time.monotonic()
        self._epoch_start = time.perf_counter()

    def _zero_meters(self) -> dict[str, torch.Tensor]:
        zero = torch.zeros((), device=self.device)
        # interval_base: the value of "loss" at the last log, so the interval's sum is loss - interval_base
        # without a third addition per step.
        return {"loss": zero.clone(), "correct": zero.long(), "interval_base": zero.clone()}

    # -- state ---------------------------------------------------------------------------
    def state_dict(self) -> tuple[dict, dict, dict]:
        """``(model weights, other tensors, JSON-able loop state)`` of the current moment."""
        rng_tensors, rng_plain = checkpoint.capture_rng(self.device)
        tensors = {"training_model": self.model.state_dict(), "rng": rng_tensors, "meters": self.meters}
        loop = {
            "epoch": self.epoch,
            "batch": self.batch,
            "global_step": self.global_step,
            "samples": self.samples,
            "interval_samples": self.interval_samples,
            "best_valid_loss": None if math.isinf(self.best_valid_loss) else self.best_valid_loss,
            "best_epoch": self.best_epoch,
            "stopped_early": self.stopped_early,
            "rng": rng_plain,
        }
        return self.model.network.state_dict(), tensors, loop

    def load_state_dict(self, weights: dict, tensors: dict, loop: dict) -> None:
        self.model.network.load_state_dict(weights)
        self.model.load_state_dict(tensors["training_model"])
        self.meters = {name: value.to(self.device) for name, value in tensors["meters"].items()}
        self._outputs, self._targets, self._kept_elements = [], [], 0
        self.epoch, self.batch, self.global_step = loop["epoch"], loop["batch"], loop["global_step"]
        self.samples, self.interval_samples = loop["samples"], loop["interval_samples"]
        best = loop["best_valid_loss"]
        self.best_valid_loss = math.inf if best is None else best
        self.best_epoch, self.stopped_early = loop["best_epoch"], loop["stopped_early"]
        checkpoint.restore_rng(tensors["rng"], loop["rng"], self.device)

    def resume(self) -> bool:
        """Load the newest readable checkpoint, if any, and drop history rows written after it.

        An unreadable checkpoint (truncated, corrupted) is set aside with a
        warning and the one before it is used.  A file that would run code is
        never loaded: ``checkpoint.UntrustedFileError`` stops the run.
        """
        checkpoint.remove_leftovers(self.results.path)  # we hold the lock: nobody else is writing them
        found = checkpoint.list_checkpoints(self.results.path)
        for path in reversed(found):
            try:
                state = checkpoint.load_checkpoint(path)
            except checkpoint.UntrustedFileError:
                raise
            except Exception as err:  # truncated, corrupted: a damaged file, not a damaged run
                aside = checkpoint.set_aside(path)
                print(f"warning: {path.name} is unreadable ({checkpoint.first_line(err)}); kept as {aside.name}, "
                      "trying the one before", file=sys.stderr)  # fmt: skip
                continue
            try:
                self.load_state_dict(*state)
            except Exception as err:  # the files are fine but do not fit this model: the code or config changed
                raise CheckpointMismatch(
                    f"{path} does not fit the model built from this config and code ({checkpoint.first_line(err)}); "
                    "undo the change or train into a new RESULTS_DIR"
                ) from None
            self._saved_step = self.global_step
            # A kill right after the checkpoint's rename may have left model.pt and friends one behind.
            checkpoint.publish_checkpoint(path, state[2])
            if self._at_best_epoch():
                self._publish_best(path)
            self.results.truncate_history(self.epoch)
            where = f"epoch {self.epoch} done"
            if self.batch:
                where += f", then {self.batch} of {len(self.train)} batches of epoch {self.epoch + 1}"
            print(f"Resuming from {path.relative_to(self.results.path)} ({where})")
            return True
        if found or checkpoint.list_unreadable(self.results.path):  # never silently start such a run over
            raise NoReadableCheckpoint(
                f"no checkpoint in {self.results.path / checkpoint.CHECKPOINTS} could be read (see the warnings); "
                "move the results directory away to start again"
            )
        self.results.truncate_history(0)
        return False

    def save(self) -> None:
        """Checkpoint the current moment, unless it is already on disk or on its way there.

        A state holding NaN or Inf is never written (``NonFiniteLoss``).  The
        state is copied to the CPU here and written by the background writer;
        the training goes on meanwhile.
        """
        write = self._capture()
        if write is not None:
            self._hand_over(write)

    def _capture(self) -> Callable[[], None] | None:
        """Copy the current state to the CPU (None if it is already saved); ``_hand_over`` the result."""
        if self.global_step == self._saved_step:
            return None
        self._disk.wait_for_room()  # before the copy: at most one copy waits while another is written
        self._count_correct()
        where = f"epoch {self.epoch + 1}" if self.batch else f"epoch {self.epoch}"
        self._check_finite(self.meters["loss"].item(), where)
        weights, tensors, loop = self.state_dict()  # loop: plain values, built afresh; the tensors are live
        _check_finite_weights(weights, self.global_step)
        weights, tensors = checkpoint.cpu_copy(weights), checkpoint.cpu_copy(tensors)
        best = self._at_best_epoch()
        best_weights = None if best else self._best_weights  # an earlier best that no checkpoint holds
        if best_weights is not None:
            _check_finite_weights(best_weights, self.global_step)
        self._best_weights = None
        return functools.partial(self._write_checkpoint, weights, tensors, loop, best, best_weights)

    def _hand_over(self, write: Callable[[], None]) -> None:
        """Give a captured checkpoint to the background writer, after the TensorBoard scalars it covers."""
        self._hand_over_scalars()
        self._disk.submit(write, checkpoint=True)
        self._saved_step, self._last_save = self.global_step, time.monotonic()

    def _hand_over_scalars(self, unless_failed: bool = False) -> None:
        """Give the TensorBoard scalars noted so far to the background writer (``unless_failed``: not if a write
        failed, and without raising that failure: ``wait`` or ``close`` reports it)."""
        write = self._scalars.take()
        if write is not None and unless_failed:
            self._disk.submit_unless_failed(write)
        elif write is not None:
            self._disk.submit(write)

    def wait_for_disk(self) -> None:
        """Block until every history row and checkpoint handed to the background writer is on disk."""
        self._disk.wait()

    def _keep_best_weights(self) -> None:
        """Keep a CPU copy of the weights for best_model.pt; the next checkpoint checks and writes it."""
        weights = self.model.network.state_dict()
        if self._best_weights is None:
            self._best_weights = checkpoint.cpu_copy(weights)
        else:  # a later best before the next checkpoint: overwrite the copy, no new allocation
            for kept, value in zip(self._best_weights.values(), weights.values(), strict=True):
                kept.copy_(value)

    def _write_checkpoint(
        self, weights: dict, tensors: dict, loop: dict, best: bool, best_weights: dict | None
    ) -> None:
        """In the background writer: fsync history.csv, write and publish the checkpoint.

        ``best_weights`` (an earlier best epoch's) go to best_model.pt first: a
        checkpoint on disk then always has its best epoch's weights there too.

        No tensor operations here: one from a second thread starts a second
        OpenMP thread team, which fights the training's for the cores (epochs
        of an MLP on CIFAR-10-sized images were 35% slower on 2 cores).
        """
        # The rows and TensorBoard events of the steps before this checkpoint were written by earlier jobs;
        # the rows must survive a power cut with it: resume cannot write lost rows again.
        self.results.sync_history()
        if best_weights is not None:
            checkpoint.save_weights(self.results.path / "best_model.pt", best_weights)
        step = loop["global_step"]
        saved = checkpoint.save_checkpoint(
            self.results.path, step, weights, tensors, loop, self.options.keep_checkpoints
        )
        if best:
            self._publish_best(saved)

    def _publish_best(self, folder) -> None:
        """Point best_model.pt at checkpoint ``folder``."""
        checkpoint.publish(folder / "model.pt", self.results.path / "best_model.pt")

    def _at_best_epoch(self) -> bool:
        """Is the current moment the end of the best epoch so far (the one best_model.pt should hold)?"""
        return self.best_epoch == self.epoch and not self.batch

    def _check_finite(self, value: float, where: str) -> None:
        if not math.isfinite(value):
            raise NonFiniteLoss(
                f"the training loss became {value} in {where} (before step {self.global_step}); "
                "stopped without writing a checkpoint from that state (nonfinite_loss=skip skips such steps)"
            )

    # -- training ----------------------------------------------------------------------------
    def fit(self) -> str | None:
        """Train to the last epoch; return None, or the name of the signal that stopped it (after a checkpoint)."""
        if self.batch and self.epoch >= self.options.num_epochs:
            raise CheckpointMismatch(
                f"this run stopped inside epoch {self.epoch + 1}; num_epochs={self.options.num_epochs} would end it "
                f"with weights from the middle of an epoch: use num_epochs >= {self.epoch + 1}"
            )
        if self.epoch >= self.options.num_epochs or self.stopped_early:
            print(f"Nothing to do: {self.epoch} of {self.options.num_epochs} epochs are done"
                  + (" (stopped early)." if self.stopped_early else "."))  # fmt: skip
            return None
        self._scalars = self._scalar_log()
        try:
            stopped_by = self._run_epochs()
            self._disk.wait()  # every file of the run is on disk before fit returns (raises a failed write's error)
            checkpoint.sync_published(self.results.path)  # ... durably, the top-level copies of the last one too
            return stopped_by
        except BaseException as err:
            # After an error, what was handed over before it is still written, and the curves up to the error
            # (they may show its cause). After a second Ctrl-C (KeyboardInterrupt), only the write in progress
            # is finished: the newest complete checkpoint stays.
            if isinstance(err, Exception):
                self._hand_over_scalars(unless_failed=True)  # raising here would hide `err`
            self._disk.close(abandon=not isinstance(err, Exception), in_flight=err)
            raise
        finally:
            self._disk.close()
            self._scalars.close()

    def _scalar_log(self) -> ScalarLog:
        """A TensorBoard log that starts at the current position."""
        # Epoch scalars (x = epoch) and step scalars (x = step) need separate event folders: each folder's
        # purge step hides the events that a killed run wrote after the checkpoint we resume from.
        return ScalarLog(
            folders={"epochs": self.results.path, "steps": self.results.path / "steps"},
            purge_steps={"epochs": self.epoch + 1, "steps": self.global_step + 1},
        )

    def _run_epochs(self) -> str | None:
        if self.stop.requested:  # came while the run was starting: the resumed checkpoint is where it stands
            return self.stop.name
        while self.epoch < self.options.num_epochs and not self.stopped_early:
            if not self._train_epoch(self.epoch + 1):
                return self.stop.name
            self._end_epoch(self.epoch + 1)
            if self.stop.requested and self.epoch < self.options.num_epochs:
                self.save()  # the signal may have come after the epoch end skipped its checkpoint
                return self.stop.name
        return None

    def _train_epoch(self, epoch: int) -> bool:
        """Train the rest of ``epoch``; False if a stop was requested (the position is then checkpointed)."""
        self._epoch_start = time.perf_counter()
        self._lr = self.model.set_epoch(epoch)
        self.model.network.train()
        if self.batch == 0:
            self.meters["interval_base"].sub_(self.meters["loss"])  # carry the open interval over the reset
            self.meters["loss"].zero_()
            self.meters["correct"].zero_()
            self.samples = 0
        n_batches = len(self.train)
        bar = tqdm(total=n_batches, initial=self.batch, desc=f"epoch {epoch}/{self.options.num_epochs}",
                   file=self.results.terminal, leave=False, disable=None, mininterval=0.5)  # fmt: skip
        # The loop below runs once per step: on a small model a step takes a few hundred microseconds and
        # every lookup in it counts, so what it needs is looked up once here.
        train_step, loss_sum, log_every = self.model.train_step, self.meters["loss"], self.options.log_every_steps
        try:
            for group in self._step_groups(epoch):
                loss, outputs, count = train_step(group)
                loss_sum.add_(loss, alpha=count)  # mean loss x samples, in one operation
                if count:  # kept for the deferred count of correct predictions
                    self._outputs.append(outputs)
                    self._targets += [y for _, y in group]
                    self._kept_elements += outputs.numel()
                    if self._kept_elements >= MAX_KEPT_ELEMENTS:  # a long epoch, many classes
                        self._count_correct()
                self.samples += count
                self.interval_samples += count
                self.batch += len(group)
                self.global_step += 1
                bar.update(len(group))
                if self.global_step % log_every == 0:
                    self._log_steps(bar)
                if self.batch < n_batches:  # at the last batch, the epoch-end checkpoint follows anyway
                    if self._checkpoint_due():
                        self.save()
                    if self.stop.requested:
                        self.save()
                        return False
        finally:
            bar.close()
        return True

    def _step_groups(self, epoch: int) -> Iterator[list[Batch]]:
        """The batches of each optimisation step of ``epoch`` from batch ``self.batch`` on.

        One batch per step, or ``grad_accum_steps`` of them (fewer in the
        epoch's last step).  The test faults (``faults.py``) act here.
        """
        accum, n_batches = self.options.grad_accum_steps, len(self.train)
        record = _SampleRecord(self, epoch) if faults.get("record_samples") else None
        nan_step, pause_step = faults.get("nan_at_step"), faults.get("pause_at_step")
        group: list[Batch] = []
        for index, batch in enumerate(self.train.epoch(epoch, self.batch), start=self.batch):
            group.append(batch)
            if len(group) < accum and index + 1 < n_batches:
                continue
            if nan_step == self.global_step + 1:
                group = [(torch.full_like(x, math.nan), y) for x, y in group]
            if record:
                record.write(self.batch, len(group))
            if pause_step == self.global_step + 1:
                time.sleep(60)
            yield group
            group = []

    def _epoch_checkpoint_due(self) -> bool:
        """Checkpoint this epoch end?  Yes at the end of the run, after a stop signal and when every_steps or
        every_minutes says so; otherwise only once checkpoint_min_interval_s has passed since the last checkpoint.

        Epochs of milliseconds (Iris: 6 steps) would otherwise spend more time
        copying and writing checkpoints than training.  A crash then repeats at
        most that many seconds of training, and the resumed run is still exact.
        """
        if self.epoch >= self.options.num_epochs or self.stopped_early or self.stop.requested or self._checkpoint_due():
            return True
        return time.monotonic() - self._last_save >= self.options.checkpoint_min_interval_s

    def _checkpoint_due(self) -> bool:
        every_steps, every_minutes = self.options.checkpoint_every_steps, self.options.checkpoint_every_minutes
        if every_steps and self.global_step % every_steps == 0:
            return True
        return bool(every_minutes) and time.monotonic() - self._last_save >= 60 * every_minutes

    def _count_correct(self) -> None:
        """Add the correct predictions of the steps since the last call to the epoch's count (on the device)."""
        if self._outputs:
            predicted = self.model.predictions(torch.cat(self._outputs))
            self.meters["correct"] += (predicted == torch.cat(self._targets)).sum()
            self._outputs, self._targets, self._kept_elements = [], [], 0

    def _log_steps(self, bar: tqdm) -> None:
        """Read the interval's mean loss back from the device (the only sync between epoch ends) and log it."""
        value = (self.meters["loss"] - self.meters["interval_base"]).item() / max(self.interval_samples, 1)
        first = self.global_step - self.options.log_every_steps + 1
        self._check_finite(value, f"steps {first}..{self.global_step}")
        self._scalars.add("steps", "train_loss", value, self.global_step)
        if self._scalars.overdue():  # a long epoch: its curve must move before the epoch ends
            self._hand_over_scalars()
        bar.set_postfix(loss=f"{value:.4g}", refresh=False)
        self.meters["interval_base"].copy_(self.meters["loss"])
        self.interval_samples = 0

    def _end_epoch(self, epoch: int) -> None:
        """Validate, log the epoch's row, checkpoint."""
        samples = max(self.samples, 1)
        self._count_correct()
        train_loss = self.meters["loss"].item() / samples
        self._check_finite(train_loss, f"epoch {epoch}")
        row: dict[str, Any] = {
            "epoch": epoch,
            "train_loss": train_loss,
            "train_acc": self.meters["correct"].item() / samples,
        }
        if self.valid is not None:
            row.update(evaluate(self.model, self.valid, prefix="valid_"))
        row["skipped_steps"] = getattr(self.model, "skipped_steps", 0)
        row.update(lr=self._lr, epoch_time_s=round(time.perf_counter() - self._epoch_start, 4))
        row["time"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        self.epoch, self.batch = epoch, 0
        if row.get("valid_loss", math.inf) < self.best_valid_loss:
            self.best_valid_loss, self.best_epoch = row["valid_loss"], epoch
        patience = self.options.early_stopping_patience
        if patience and self.best_epoch is not None and epoch - self.best_epoch >= patience:
            self.stopped_early = True
        # Copy the state before handing the row and the scalars to the background writer: copying while
        # they run took 5-10x longer on 2 cores (Iris).
        write = self._capture() if self._epoch_checkpoint_due() else None
        if write is None and self._at_best_epoch():  # best_model.pt needs these weights, no checkpoint has them
            self._keep_best_weights()
        self._disk.submit(functools.partial(self.results.append_history, row))  # before the checkpoint, in order
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (float, int)):
                self._scalars.add("epochs", key, value, epoch)
        self._hand_over_scalars()
        if write is not None:
            self._hand_over(write)
        print(_summary(row, self.options.num_epochs))
        if self.stopped_early:
            print(f"Early stopping: valid_loss has not improved for {patience} epochs (best: epoch {self.best_epoch})")


class _SampleRecord:
    """Test hook (``record_samples`` fault): append ``epoch step sample ids`` of every step to a file."""

    def __init__(self, trainer: Trainer, epoch: int):
        self.trainer, self.epoch = trainer, epoch
        self.order = trainer.train.order(epoch).tolist()
        self.path = trainer.results.path / f"samples_{os.getpid()}.txt"

    def write(self, first_batch: int, n_batches: int) -> None:
        size = self.trainer.train.batch_size
        ids = self.order[first_batch * size : (first_batch + n_batches) * size]
        with open(self.path, "a") as f:
            f.write(f"{self.epoch} {self.trainer.global_step + 1} {' '.join(map(str, ids))}\n")


@torch.no_grad()
def evaluate(model: TrainingModel, data: Batches, prefix: str = "") -> dict[str, float]:
    """Mean loss and accuracy of ``model`` over ``data`` (one pass, eval mode)."""
    model.network.eval()
    device = next(model.network.parameters()).device
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    for x, y in data.epoch(0):
        step_loss, step_correct = model.eval_step(x, y)
        loss_sum += step_loss
        correct += step_correct
    return {f"{prefix}loss": loss_sum.item() / data.num_samples, f"{prefix}acc": correct.item() / data.num_samples}


def _check_finite_weights(weights: dict[str, torch.Tensor], step: int) -> None:
    """Raise NonFiniteLoss if a floating-point weight holds NaN or Inf (one read-back for all of them)."""
    floats = [t for t in weights.values() if t.is_floating_point()]
    if floats and not torch.stack([t.isfinite().all() for t in floats]).all():
        raise NonFiniteLoss(f"the weights hold NaN or Inf at step {step}; no checkpoint was written")


def _summary(row: dict[str, Any], num_epochs: int) -> str:
    parts = [f"epoch {row['epoch']}/{num_epochs}"]
    parts += [f"{k} {v:.4g}" for k, v in row.items() if k not in ("epoch", "time") and isinstance(v, float)]
    return "  ".join(parts)
