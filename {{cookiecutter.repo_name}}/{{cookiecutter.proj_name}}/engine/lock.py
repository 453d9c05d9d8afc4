"""One writer per results directory: an advisory lock held for the whole run.

``RESULTS_DIR/.lock`` holds the pid, host and start time of the process that
trains there, and that process holds a POSIX record lock (``lockf``) on it.
The kernel drops the lock when its process dies, however it dies (SIGKILL, out
of memory), so a lock file left behind by a dead process is recognised as
stale and taken over.  Unlike ``flock``, the lock is not shared with forked
children, so DataLoader workers outliving a killed trainer do not hold it.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
from pathlib import Path

from .cli import ConfigError

try:
    import fcntl
except ImportError:  # Windows: no flock; runs are not protected against a second writer
    fcntl = None

LOCK_FILE = ".lock"
LINKS_REFUSED = "a results directory holds no symbolic links (nothing is written through one); remove it"


class ResultsDirLocked(ConfigError):
    """Another live process is training in this results directory."""


class RunLock:
    """``with RunLock(results_dir):`` fails at once if another process holds the directory."""

    def __init__(self, results_dir: str | Path):
        self.path = Path(results_dir) / LOCK_FILE
        self._fd: int | None = None
        self.stale: dict | None = None  # what a dead previous holder had written, if any

    def acquire(self) -> None:
        if fcntl is None:
            return
        while True:
            try:  # O_NOFOLLOW: a planted symbolic link must not make us write its target
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
            except OSError as err:
                if err.errno == errno.ELOOP:
                    raise ConfigError(f"{self.path} is a symbolic link: {LINKS_REFUSED}") from None
                raise
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                if err.errno not in (errno.EACCES, errno.EAGAIN):  # e.g. a network file system without locks
                    os.close(fd)
                    print(f"warning: cannot lock {self.path} ({err}); make sure no other run writes here",
                          file=sys.stderr)  # fmt: skip
                    return
                holder = _read(fd)
                os.close(fd)
                who = f"pid {holder.get('pid', '?')} on {holder.get('host', '?')} since {holder.get('since', '?')}"
                raise ResultsDirLocked(
                    f"{self.path.parent} is in use by another run ({who}); wait for it to end, "
                    "stop it, or use another RESULTS_DIR"
                ) from None
            # The file may have been removed (the holder ended) between open() and lockf(): retry on the new one.
            # A file with other hard links is someone else's too: replace it by one of our own.
            current = os.stat(self.path, follow_symlinks=False) if os.path.lexists(self.path) else None
            if current is not None and os.fstat(fd).st_ino == current.st_ino:
                if current.st_nlink == 1:
                    break
                os.unlink(self.path)
            os.close(fd)
        previous = _read(fd)
        if previous:
            self.stale = previous
        record = {"pid": os.getpid(), "host": socket.gethostname(), "since": _now()}
        data = (json.dumps(record) + "\n").encode()
        try:
            os.pwrite(fd, data, 0)  # write, then cut: a reader never sees an empty file
            os.ftruncate(fd, len(data))
            os.fsync(fd)
        except OSError:  # a full disk: leave no lock file (we hold the lock: nobody else uses this one)
            try:
                os.unlink(self.path)
            finally:
                os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # unlink while still holding the lock, then let go
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()


def _read(fd: int) -> dict:
    try:
        return json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        return {}


def _now() -> str:
    import datetime as dt

    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
