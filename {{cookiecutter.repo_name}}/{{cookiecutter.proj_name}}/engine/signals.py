"""Stop requests: SIGTERM, SIGINT, SIGUSR1 and SIGUSR2 ask the trainer to checkpoint and exit.

Schedulers warn a job before killing it (SLURM: ``--signal=USR1@120`` or
SIGTERM on preemption, Kubernetes and ``kill``: SIGTERM, a terminal: Ctrl-C =
SIGINT), usually to the whole process group.  A job submitted by
``bin/submit.py`` asks for SIGUSR2, after which it also requeues itself
(``slurm.py``).  The handler only records the
signal; the loop looks at the flag at the next step boundary, writes a
checkpoint there and returns.  Nothing is saved from inside the handler, where
the state may be half updated.

``bin/train.py`` installs the handlers before its slow imports (``catch``), so
a signal at any moment of a run, start-up included, is recorded rather than
fatal.  DataLoader workers hold the group's signals back while they start and
then leave them to the trainer (``data.py``).  Once the run has decided its
exit code the signals are ignored (``exit_status``, and at exit in any case):
Python would otherwise give them their default action back while it tears
down, and a signal then would kill a process whose work is done.

A second Ctrl-C stops without a new checkpoint (KeyboardInterrupt), for when
even one more step is too long to wait; the newest checkpoint on disk is
always complete (``checkpoint.py``).
"""

from __future__ import annotations

import atexit
import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGUSR1", "SIGUSR2") if hasattr(signal, name))


def exit_code(signum: int) -> int:
    """The shell convention for a process ended by ``signum``: 128 + N (SIGINT 130, SIGUSR1 138, SIGUSR2 140, SIGTERM 143)."""
    return 128 + signum


class StopFlag:
    """Set by the first stop signal; ``with StopFlag() as flag:`` installs the handlers, exit restores them."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C: stop now
        self.signum = self.signum or signum

    def __enter__(self) -> StopFlag:
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            for signum in SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()


_PROCESS_FLAG: StopFlag | None = None


def catch() -> StopFlag:
    """Record stop signals from now until the process exits (then ignore them); every call returns the same flag."""
    global _PROCESS_FLAG
    if _PROCESS_FLAG is None:
        _PROCESS_FLAG = StopFlag().__enter__()
        if _PROCESS_FLAG._previous:  # installed (main thread only)
            # Called before torch and multiprocessing are imported (bin/train.py), this runs after their exit
            # clean-up (atexit runs the last registered first): ending DataLoader workers still has the flag.
            atexit.register(_ignore_stop_signals)
    return _PROCESS_FLAG


def exit_status(code: int) -> int:
    """The exit status of a program whose run returned ``code``; call it last: ``sys.exit(exit_status(main()))``.

    128+N if ``code`` is 0 and a stop signal N came, even after the run
    decided its code; from this call on the stop signals are ignored.
    """
    _ignore_stop_signals()
    if code == 0 and _PROCESS_FLAG is not None and _PROCESS_FLAG.requested:
        return exit_code(_PROCESS_FLAG.signum)
    return code


def _ignore_stop_signals() -> None:
    """Ignore the stop signals from now on (Python leaves an ignored signal ignored while it tears down)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in SIGNALS:
        while True:
            try:
                signal.signal(signum, signal.SIG_IGN)  # runs the handler of a signal that just came, first
                break
            except KeyboardInterrupt:  # that was a second Ctrl-C: the flag already says SIGINT
                continue


@contextlib.contextmanager
def held_back() -> Iterator[None]:
    """Block the stop signals in this thread for the duration (processes forked meanwhile start with them blocked).

    A signal that arrives meanwhile is handled by another thread of this
    process, or right after the block.
    """
    if not hasattr(signal, "pthread_sigmask"):  # Windows
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
