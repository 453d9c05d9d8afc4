"""TensorBoard scalars: noted by the training thread, written in batches by the background writer.

torch's ``SummaryWriter`` hands every event to a thread of its own, which
opens, appends to and closes the event file for it.  Made from the training
thread, each event cost a small model's training 0.1-0.4 ms on the 2-core CI
machine: 1-2% of an epoch at 15 events per epoch.  So the training thread only
notes ``(tag, value, step)``; the trainer hands the notes to its background
writer (``take``) at every epoch end, before every checkpoint and at the first
logged step once the oldest note is ``max_delay_s`` old (the curves of a long
epoch still move).  There an epoch's scalars become one event, and each batch
is one write to an event file kept open, through TensorBoard's own
``RecordWriter`` and protocol buffers: one file write per batch instead of a
reopened file and a woken thread per event.  (On a machine with no spare core
the background writer's work still takes its time from the training; there is
just far less of it.)
"""

from __future__ import annotations

import functools
import itertools
import os
import socket
import time
from pathlib import Path
from typing import Any, Callable

from .checkpoint import names_file

_file_numbers = itertools.count()  # event file names must differ within a process, as TensorBoard's do


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
        self._writers: dict[str, Any] = {}  # RecordWriters, opened by the first write (in the background writer)
        self._paths: dict[str, Path] = {}  # their files, named in a failed write's error
        self._noted: list[tuple[str, str, float, int, float]] = []  # (axis, tag, value, step, time.time())
        self._oldest = 0.0  # time.monotonic() of the first note in _noted

    def add(self, axis: str, tag: str, value: float, step: int) -> None:
        """Note a scalar (training thread; no disk, no TensorBoard call)."""
        if not self._noted:
            self._oldest = time.monotonic()
        self._noted.append((axis, tag, value, step, time.time()))  # TensorBoard's wall-time axis

    def overdue(self) -> bool:
        """Has the oldest note waited ``max_delay_s``?"""
        return bool(self._noted) and time.monotonic() - self._oldest >= self.max_delay_s

    def take(self) -> Callable[[], None] | None:
        """A job that writes the scalars noted since the last ``take`` (None if there are none)."""
        if not self._noted:
            return None
        noted, self._noted = self._noted, []
        return functools.partial(self._write, noted)

    def close(self) -> None:
        """Close the event files (a failed flush was already reported by the job that wrote them)."""
        for writer in self._writers.values():
            try:
                writer.close()
            except OSError:
                pass
        self._writers.clear()

    def _write(self, noted: list[tuple[str, str, float, int, float]]) -> None:
        """Write the noted scalars: one event per axis and x value, then one flush per file."""
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary

        events: dict[tuple[str, int], tuple[float, list]] = {}  # (axis, step) -> (first note's time, values)
        for axis, tag, value, step, wall_time in noted:
            events.setdefault((axis, step), (wall_time, []))[1].append(Summary.Value(tag=tag, simple_value=value))
        for (axis, step), (wall_time, values) in events.items():
            event = Event(wall_time=wall_time, step=step, summary=Summary(value=values))
            writer = self._writer(axis)
            with names_file(self._paths[axis]):
                writer.write(event.SerializeToString())
        for axis in {axis for axis, _ in events}:
            with names_file(self._paths[axis]):
                self._writers[axis].flush()  # to the OS: TensorBoard sees the points now, and after a kill

    def _writer(self, axis: str):
        """The axis's event file, opened with the events TensorBoard expects first."""
        if axis not in self._writers:
            from tensorboard.compat.proto.event_pb2 import Event, SessionLog
            from tensorboard.summary.writer.record_writer import RecordWriter

            folder = Path(self.folders[axis])
            folder.mkdir(parents=True, exist_ok=True)
            name = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}.{next(_file_numbers)}"
            path = self._paths[axis] = folder / name
            writer = RecordWriter(open(path, "xb"))  # "x": never truncate another process's file
            self._writers[axis] = writer  # closed by close(), also if the writes below fail
            step, now = self.purge_steps[axis], time.time()
            with names_file(path):
                writer.write(Event(wall_time=now, step=step, file_version="brain.Event:2").SerializeToString())
                # TensorBoard drops the events at or after `step` that were written before this one.
                start = SessionLog(status=SessionLog.START)
                writer.write(Event(wall_time=now, step=step, session_log=start).SerializeToString())
        return self._writers[axis]
