"""A background thread for the run's disk writes, so that training does not wait for the disk.

A checkpoint costs a few fsyncs, renames and directory syncs: milliseconds of
waiting for the disk, longer than a whole epoch of a small model.  The loop
takes a copy of its state (microseconds) and hands the write to this thread,
which runs the jobs one at a time, in the order they were handed over: a
history row is on disk before the checkpoint handed over after it, exactly as
if the loop had written them itself.

* Every checkpoint handed over is written, unless an earlier job failed.
  At most one waits while another is being written: handing over a third
  blocks until the writer has caught up, so a disk slower than the training
  throttles it instead of filling the memory with copies of the state.
* The first failing job stops the writer: nothing handed over later is
  written, and its error is raised in the training thread by the next
  ``submit`` (of any job) or by ``wait``.
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
    """Run write jobs in order on one daemon thread, started by the first job and stopped by ``close``."""

    def __init__(self, name: str = "checkpoint-writer"):
        self.name = name
        self._jobs: deque[_Job] = deque()
        self._changed = threading.Condition()
        self._running = False  # a job is being run
        self._error: BaseException | None = None  # the failure that stopped the writer, until close()
        self._reported = False  # ... already raised in the training thread
        self._thread: threading.Thread | None = None

    def wait_for_room(self) -> None:
        """Block while a checkpoint is waiting: call it before copying the state, so at most two copies exist."""
        with self._changed:
            self._changed.wait_for(lambda: not any(job.checkpoint for job in self._jobs))

    def submit(self, run: Callable[[], None], checkpoint: bool = False) -> None:
        """Hand ``run`` over (a checkpoint: wait for room first); raise the error of a job that failed."""
        with self._changed:  # a re-entrant lock: wait_for_room may take it again
            if checkpoint:
                self.wait_for_room()
            self._raise_error()
            if self._thread is None:  # started before the job is queued: a failed start leaves nothing waiting
                thread = threading.Thread(target=self._work, name=self.name, daemon=True)
                thread.start()
                self._thread = thread
            self._jobs.append(_Job(run, checkpoint))
            self._changed.notify_all()

    def wait(self) -> None:
        """Block until every job handed over has run; raise the error of one that failed."""
        with self._changed:
            self._changed.wait_for(self._idle)
            self._raise_error()

    def close(self, abandon: bool = False, in_flight: BaseException | None = None) -> None:
        """Stop the thread once the jobs handed over have run (``abandon``: only the running one; the rest is dropped).

        A failure that was never raised in the training thread is printed,
        unless ``in_flight``, the exception the caller is handling, is of the
        same kind or has the same errno (the same problem, seen twice: a full
        disk stops a checkpoint here and a log line there).
        """
        with self._changed:
            if abandon:
                self._jobs.clear()
            self._changed.wait_for(self._idle)
            thread, self._thread = self._thread, None
            error = None if self._reported else self._error
            self._error, self._reported = None, False
            self._changed.notify_all()
        if thread is not None:
            thread.join()
        if error is not None and not _same_problem(error, in_flight):
            try:
                print(f"error: a background write failed: {error}", file=sys.stderr)
            except OSError:  # stderr.txt is on the disk that failed: the caller's own error says enough
                pass

    def _idle(self) -> bool:
        return not (self._jobs or self._running)

    def _raise_error(self) -> None:
        """Raise the failure that stopped the writer (again on every call, until ``close``)."""
        if self._error is not None:
            self._reported = True
            raise self._error

    def _work(self) -> None:
        me = threading.current_thread()
        while True:
            with self._changed:
                while not self._jobs and self._thread is me:
                    self._changed.wait()
                if self._thread is not me:  # closed (close() waited for the queue to empty)
                    return
                job = self._jobs.popleft()
                self._running = True
            try:
                job.run()
            except BaseException as err:
                with self._changed:
                    self._error = err
                    self._jobs.clear()  # nothing after a failed write: the newest complete checkpoint stays newest
            finally:
                with self._changed:
                    self._running = False
                    self._changed.notify_all()


def _same_problem(error: BaseException, other: BaseException | None) -> bool:
    """Are ``error`` and ``other`` the same kind of failure (the same type, or OS errors with the same errno)?"""
    return type(error) is type(other) or (_errno(error) is not None and _errno(error) == _errno(other))


def _errno(error: BaseException | None) -> int | None:
    """The errno of ``error`` or of the OS error that caused it (``CheckpointWriteError`` wraps one)."""
    while error is not None:
        if isinstance(error, OSError) and error.errno is not None:
            return error.errno
        error = error.__cause__
    return None
