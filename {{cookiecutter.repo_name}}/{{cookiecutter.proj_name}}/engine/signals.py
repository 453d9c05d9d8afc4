"""Stop requests: SIGTERM, SIGINT and SIGUSR1 ask the trainer to checkpoint and exit.

Schedulers warn a job before killing it (SLURM: ``--signal=USR1@120`` or
SIGTERM on preemption, Kubernetes and ``kill``: SIGTERM, a terminal: Ctrl-C
= SIGINT).  The handler only records the signal; the loop looks at the flag at
the next step boundary, writes a checkpoint there and returns.  Nothing is
saved from inside the handler, where the state may be half updated.

A second Ctrl-C stops without a new checkpoint (KeyboardInterrupt), for when
even one more step is too long to wait; a checkpoint the background writer is
in the middle of is finished first (milliseconds), ones still waiting are
dropped, so the newest checkpoint on disk is always complete.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGUSR1") if hasattr(signal, name))


def exit_code(signum: int) -> int:
    """The shell convention for a process ended by ``signum``: 128 + N (SIGINT 130, SIGTERM 143, SIGUSR1 138)."""
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
