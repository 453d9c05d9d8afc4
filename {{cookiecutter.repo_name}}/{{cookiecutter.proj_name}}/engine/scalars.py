"""TensorBoard scalars: noted by the training thread, written in batches by the background writer.

Each event costs torch's ``SummaryWriter`` a protobuf, a CRC computed in pure
Python and an open-append-close of the event file, and it wakes the writer's
own thread.  Made from the training thread, each cost a small model's training
0.1-0.4 ms on the 2-core CI machine: 1-2% of an epoch at 15 events per epoch.
So the training thread only notes ``(tag, value, step)``, an epoch's scalars
become one event, and the trainer hands
what was noted to the background writer (``take``) at every epoch end, before
every checkpoint and whenever the oldest note is ``max_delay_s`` old, so the
curves of a long epoch still move.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any, Callable


class ScalarLog:
    """Scalars for a few TensorBoard event folders, one per x axis (``"epochs"``, ``"steps"``).

    Args:
        folders: the event folder of each axis.
        purge_steps: the first x value of each axis that this process writes.
            TensorBoard hides the events at or after it that a killed run wrote
            after the checkpoint this one resumed from, so no point appears twice.
        max_delay_s: the longest a noted scalar waits before ``overdue`` says so.
    """

    def __init__(self, folders: dict[str, Path], purge_steps: dict[str, int], max_delay_s: float = 10.0):
        self.folders, self.purge_steps, self.max_delay_s = folders, purge_steps, max_delay_s
        self._writers: dict[str, Any] = {}  # SummaryWriters, opened by the first write (in the background writer)
        self._noted: list[tuple[str, str, float, int]] = []  # (axis, tag, value, step), not handed over yet
        self._oldest = 0.0  # time.monotonic() of the first note in _noted

    def add(self, axis: str, tag: str, value: float, step: int) -> None:
        """Note a scalar (training thread; no disk, no TensorBoard call)."""
        if not self._noted:
            self._oldest = time.monotonic()
        self._noted.append((axis, tag, value, step))

    def overdue(self) -> bool:
        """Has the oldest note waited ``max_delay_s``?"""
        return bool(self._noted) and time.monotonic() - self._oldest >= self.max_delay_s

    def take(self) -> Callable[[], None] | None:
        """A job that writes the scalars noted since the last ``take`` (None if there are none)."""
        if not self._noted:
            return None
        noted, self._noted = self._noted, []
        return functools.partial(self._write, noted)

    def flush(self) -> None:
        """Make the event files hold every scalar written so far (before a checkpoint: see ``purge_steps``)."""
        for writer in self._writers.values():
            writer.flush()

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()

    def _write(self, noted: list[tuple[str, str, float, int]]) -> None:
        """Write the noted scalars: one event per axis and x value (an epoch's row is one event, not ten)."""
        from tensorboard.compat.proto.summary_pb2 import Summary  # what SummaryWriter.add_scalar writes

        events: dict[tuple[str, int], list] = {}
        for axis, tag, value, step in noted:
            events.setdefault((axis, step), []).append(Summary.Value(tag=tag, simple_value=value))
        for (axis, step), values in events.items():
            self._writer(axis).file_writer.add_summary(Summary(value=values), step)

    def _writer(self, axis: str):
        if axis not in self._writers:
            from torch.utils.tensorboard import SummaryWriter  # imported here: slow, and only training needs it

            self._writers[axis] = SummaryWriter(str(self.folders[axis]), purge_step=self.purge_steps[axis])
        return self._writers[axis]
