"""A background thread for the run's disk writes, so that training never waits for the disk.

A checkpoint costs a few fsyncs, renames and directory syncs: milliseconds of
waiting for the disk, longer than a whole epoch of a small model.  The loop
takes a copy of its state (microseconds) and hands the write to this thread,
which runs the jobs one at a time, in the order they were handed over: a
history row is on disk before the checkpoint handed over after it, exactly as
if the loop had written them itself.

* Every checkpoint handed over is written.  At most one waits while another
  is being written: handing over a third blocks until the writer has caught
  up, so a disk slower than the training throttles it instead of filling the
  memory with copies of the state.
* The first failing job stops the writer: nothing handed over later is
  written, and its error is raised in the training thread by the next
  ``submit`` or by ``wait``.
* ``wait`` returns when everything handed over is on disk.  The loop calls it
  before ``fit`` returns, so a finished or stopped run has all its files.
"""

from __future__ import annotations

import sys
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Job:
    run: Callable[[], None]
    checkpoint: bool  # holds a copy of the training state: at most one may wait


class BackgroundWriter:
    """Run write jobs in order on one daemon thread, started on the first job and stopped by ``close``."""

    def __init__(self, name: str = "checkpoint-writer"):
        self.name = name
        self._jobs: deque[_Job] = deque()
        self._changed = threading.Condition()
        self._running = False  # a job is being run
        self._error: BaseException | None = None  # raised once in the training thread
        self._failed = False  # once a job failed, nothing more is written
        self._thread: threading.Thread | None = None

    def submit(self, run: Callable[[], None], checkpoint: bool = False) -> None:
        """Hand ``run`` over (a checkpoint: wait while another one is waiting); raise an earlier job's error."""
        with self._changed:
            while checkpoint and any(job.checkpoint for job in self._jobs):
                self._changed.wait()
            self._raise_error()
            if self._failed:
                return
            self._jobs.append(_Job(run, checkpoint))
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name=self.name, daemon=True)
                self._thread.start()
            self._changed.notify_all()

    def wait(self) -> None:
        """Block until every job handed over has run; raise the error of one that failed."""
        with self._changed:
            while self._jobs or self._running:
                self._changed.wait()
            self._raise_error()

    def close(self) -> None:
        """Finish the jobs handed over and stop the thread (a failure is printed, not raised: see ``wait``)."""
        with self._changed:
            while self._jobs or self._running:
                self._changed.wait()
            thread, self._thread = self._thread, None
            self._changed.notify_all()
            if self._error is not None:
                print(f"error: a background write failed: {self._error}", file=sys.stderr)
                self._error = None
        if thread is not None:
            thread.join()

    def _raise_error(self) -> None:
        error, self._error = self._error, None
        if error is not None:
            raise error

    def _work(self) -> None:
        me = threading.current_thread()
        while True:
            with self._changed:
                while not self._jobs and self._thread is me:
                    self._changed.wait()
                if not self._jobs:  # closed
                    return
                job = self._jobs.popleft()
                self._running = True
            try:
                job.run()
            except BaseException as err:
                with self._changed:
                    self._error, self._failed = err, True
                    self._jobs.clear()
            finally:
                with self._changed:
                    self._running = False
                    self._changed.notify_all()
