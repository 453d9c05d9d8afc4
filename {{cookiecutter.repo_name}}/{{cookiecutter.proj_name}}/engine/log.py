"""What a run reports: a row per epoch in history.csv, TensorBoard scalars, a line on the console.

TensorBoard's x axis is the optimisation step for every scalar: ``step/...``
tags every ``log_every_steps`` steps, ``epoch/...`` tags (the history row) at
each epoch's last step.  One axis lets a resumed run hide, with TensorBoard's
``purge_step``, every point a killed process wrote after the checkpoint it
resumes from, so no point appears twice.

The run's config goes to TensorBoard's HParams tab, in the run's own event
file (``SummaryWriter.add_hparams`` would write a subfolder: a second run);
its metrics there are the last values of these scalars.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

from .checkpoint import names_file
from .cli import flatten
from .results import ResultsDir


def _quiet_tensorboard_thread(args: threading.ExceptHookArgs, previous=threading.excepthook) -> None:
    """No traceback from TensorBoard's writer thread: its error (a full disk) is raised again, with one line, by
    the next write, flush or close in the training thread."""
    if type(args.thread).__name__ != "_AsyncWriterThread":
        previous(args)


threading.excepthook = _quiet_tensorboard_thread


class RunLog:
    """history.csv, TensorBoard and the console for one training session, from step ``first_step`` on;
    ``hparams``, the run's config, for TensorBoard's HParams tab."""

    def __init__(self, results: ResultsDir, first_step: int, hparams: dict[str, Any] | None = None):
        from torch.utils.tensorboard import SummaryWriter  # imported here: a second of start-up elsewhere

        self.results = results
        self.events = results.path / "events.out.tfevents.*"  # for error messages
        self.tensorboard = None
        try:
            os.fsencode(results.path).decode("utf-8")
        except UnicodeDecodeError:  # TensorBoard encodes its paths as UTF-8
            print("warning: no TensorBoard events under a path that is not UTF-8; history.csv has every value",
                  file=sys.stderr)  # fmt: skip
            return
        with names_file(self.events):  # it writes its first events at once: a full disk fails here
            self.tensorboard = SummaryWriter(results.path, purge_step=first_step)
            if hparams is not None:
                self._write_hparams(hparams)

    def _write_hparams(self, config: dict[str, Any]) -> None:
        """The config, flattened (null values left out), as the session-start summary of TensorBoard's HParams.

        Of the three summaries of torch's ``hparams()`` only this one is written.  With no experiment summary
        TensorBoard builds the table from every run: each run's hyperparameters, and its scalars as metrics.
        An experiment summary in each run would make it take the first run's keys and metrics for all runs,
        and the session-end summary says "success" whatever becomes of the run.  Each session writes it again;
        TensorBoard keeps the first (a config changed on resume is in config.json, not there).
        """
        from torch.utils.tensorboard.summary import hparams

        values = {key: value for key, value in flatten(config).items() if value is not None}
        _, session_start, _ = hparams(values, {})
        self.tensorboard.file_writer.add_summary(session_start)

    def step(self, train_loss: float, step: int) -> None:
        self._scalar("step/train_loss", train_loss, step)

    def _scalar(self, tag: str, value: float, step: int) -> None:
        if self.tensorboard is not None:
            with names_file(self.events):
                self.tensorboard.add_scalar(tag, value, step)

    def epoch(self, row: dict[str, Any], step: int, num_epochs: int) -> None:
        """Write an epoch's row (history.csv, TensorBoard at ``step``) and print it."""
        self.results.append_history(row)
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (float, int)):
                self._scalar(f"epoch/{key}", value, step)
        parts = [f"epoch {row['epoch']}/{num_epochs}"]
        parts += [f"{k} {v:.4g}" for k, v in row.items() if k not in ("epoch", "time") and isinstance(v, float)]
        print("  ".join(parts))

    def sync(self) -> None:
        """Put everything logged so far on disk (the loop calls it before each checkpoint)."""
        if self.tensorboard is not None:
            with names_file(self.events):
                self.tensorboard.flush()
        self.results.sync_history()

    def close(self) -> None:
        """Close the event file; a failure is a warning (it must not hide the error that ends a run)."""
        try:
            if self.tensorboard is not None:
                self.tensorboard.close()
        except OSError as err:
            try:
                print(f"warning: TensorBoard's event file could not be written: {err}", file=sys.stderr)
            except OSError:  # stderr.txt is on the same full disk
                pass
