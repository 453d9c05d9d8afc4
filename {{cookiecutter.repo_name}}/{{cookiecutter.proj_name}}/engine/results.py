"""The results directory: everything one run leaves behind, and nothing lost on resume.

config.json    the fully resolved config
meta.json      command, times, status, host, versions, device, git commit; ``sessions``: one entry per process
               (see ``_session``), with its command, config changes and the epochs it trained
git_diff_<N>.patch               ``git diff HEAD`` of the code's git tree, if dirty, when session N started
history.csv    one row per epoch
model.pt       the newest weights (a state dict)
loop_state.json + checkpoints/   what resume needs (see checkpoint.py)
stdout.txt, stderr.txt           everything printed, appended on resume
<script>.py    a copy of the entry point that ran
events.out.tfevents.*            TensorBoard scalars
slurm/         SLURM's logs of the jobs bin/submit.py submitted, one folder per job (written by submitit)
"""

from __future__ import annotations

import csv
import ctypes
import datetime as dt
import errno
import functools
import io
import itertools
import json
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterable, TextIO

from .checkpoint import (
    atomic_write_bytes,
    atomic_write_json,
    fsync_dir,
    fsync_file,
    json_bytes,
    list_checkpoints,
    names_file,
)
from .cli import ConfigError, config_diff
from .lock import LINKS_REFUSED, RunLock

STATUS_RUNNING, STATUS_FINISHED, STATUS_FAILED, STATUS_INTERRUPTED = "running", "finished", "failed", "interrupted"
RESERVE = ".reserve"  # room set aside for meta.json and the error line of a run that fills the disk
RESERVE_BYTES = 256 * 1024
LOG_ROOM = 16 * 1024  # allocated past the end of stderr.txt for the error line of a run that fills the disk
FALLOC_FL_KEEP_SIZE = 1
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
GIT_DIFF_LIMIT = 10 * 2**20  # a larger diff of the code is not saved (the session's entry says so)
GIT_DIFF_TIMEOUT_S = 30
SLURM_FOLDER = "slurm"  # bin/submit.py's job logs (submitit's folder)


class ResultsDirError(ConfigError):
    """A results directory that cannot be used as it is (a link inside, an unreadable file); one line."""


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _write_all(f, data: bytes) -> None:
    """Write all of ``data`` to an unbuffered file: a short write (the disk filled up halfway) is retried, so
    that it fails with ENOSPC instead of silently leaving half a line."""
    view = memoryview(data)
    while view:
        view = view[f.write(view) :]


@functools.cache
def _fallocate():
    """glibc's (or musl's) ``fallocate``, which Python does not wrap with flags; None where there is none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function = getattr(libc, "fallocate64", None) or libc.fallocate
    except (OSError, AttributeError):
        return None
    function.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
    function.restype = ctypes.c_int
    return function


def _keep_room(fd: int, size: int) -> None:
    """Allocate ``size`` bytes past the end of file ``fd`` without changing its size (Linux), so that appending
    them needs no room from the disk, even once another process has taken every page freed meanwhile.  Best
    effort: nothing happens where that is not supported, or where the disk has no room left already."""
    fallocate = _fallocate()
    if fallocate is not None:
        fallocate(fd, FALLOC_FL_KEEP_SIZE, os.fstat(fd).st_size, size)


def _open_nofollow(path: Path, mode: str = "ab"):
    """``open(path, mode, buffering=0)``, refusing a symbolic link planted there (O_NOFOLLOW)."""
    return open(
        path, mode, buffering=0, opener=lambda p, flags: os.open(p, flags | getattr(os, "O_NOFOLLOW", 0), 0o666)
    )


class Tee:
    """A text stream that writes to the terminal and to a log file (used for stdout and stderr).

    If the terminal goes away (closed pipe, ended ssh session), the run goes on
    and keeps logging to the file.  A failed write to the file (disk full) is
    raised: the run stops and says why rather than lose its log.  Each write goes
    to the file at once (unbuffered), so a later write is not held up behind one
    that failed, and characters the terminal's encoding lacks are escaped.
    """

    def __init__(self, stream: TextIO, log: io.RawIOBase):
        self.stream, self.log = stream, log
        self.terminal_ok = True

    def write(self, text: str) -> int:
        if self.terminal_ok:
            try:
                self.stream.write(text)
            except OSError:  # BrokenPipeError and friends: stop echoing, keep training
                self.terminal_ok = False
        with names_file(self.log.name):
            _write_all(self.log, text.encode("utf-8", "backslashreplace"))
        return len(text)

    def flush(self) -> None:
        if self.terminal_ok:
            try:
                self.stream.flush()
            except OSError:
                self.terminal_ok = False

    def isatty(self) -> bool:
        return self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()

    @property
    def encoding(self) -> str:
        return getattr(self.stream, "encoding", "utf-8")


class ResultsDir:
    """Bookkeeping of one results directory, shared by every entry point.

    A training session calls ``open`` (create, lock, check), ``check_config``,
    ``start`` (meta.json says running), ``capture_output``, then ``finish`` and
    ``close``.  Until ``start`` nothing is written: a refused run leaves the
    folder as it found it.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.meta: dict[str, Any] = {}
        self._streams: list[tuple[str, TextIO, io.RawIOBase]] = []
        self._lock = RunLock(self.path)
        self._created: list[Path] = []  # folders made by open(); a run refused before start() removes them
        self._started: float | None = None
        self._session: dict[str, Any] | None = None  # this session's entry of meta.json's sessions (from start())
        self._config_changes: list[dict[str, Any]] | None = []  # found by check_config(), recorded by start()
        self._resumed: tuple[int, int, int] | None = None  # (epoch, batch, step) the session resumed from

    # -- taking the folder -----------------------------------------------------------------
    def open(self) -> None:
        """Create the folder (and missing parents), lock it, and check it: no symbolic link inside, readable
        meta.json.  Raises ``ConfigError`` (a one-line usage error) or ``OSError``; nothing is left behind then."""
        if self.path.exists() and not self.path.is_dir():
            raise ResultsDirError(f"RESULTS_DIR {self.path} is a file, not a folder; give a folder (made if absent)")
        for folder in reversed([self.path, *self.path.parents]):
            if not folder.exists():
                try:
                    folder.mkdir()
                except (FileExistsError, NotADirectoryError):
                    raise ResultsDirError(f"cannot create RESULTS_DIR {self.path}: {folder} is not a folder") from None
                self._created.append(folder)
        try:
            with names_file(self._lock.path):  # a full disk can stop the lock's first write
                self._lock.acquire()  # a second process on the same folder stops here (ResultsDirLocked)
            _refuse_links(self.path)
            self.meta = self._read_json("meta.json", "it lists the run's sessions; fix it, or delete it to start "
                                        "a new list (checkpoints and history are not in it)") or {}  # fmt: skip
        except BaseException:
            self.close()
            raise

    @property
    def stale_lock(self) -> dict | None:
        """What the dead process whose lock ``open`` took over had written in it (None if there was none)."""
        return self._lock.stale

    def close(self) -> None:
        """Let go of the folder: stop copying the output, unlock, and remove what ``open`` made if never started."""
        self.release_output()
        self._lock.release()
        if self._started is None:
            for folder in reversed(self._created):
                try:
                    folder.rmdir()  # only if still empty
                except OSError:
                    break
        self._created = []

    def _read_json(self, name: str, what_to_do: str) -> Any:
        path = self.path / name
        if not path.exists():
            return None
        try:
            return json.loads(path.read_bytes())
        except (ValueError, OSError) as err:
            raise ResultsDirError(f"{path} is unreadable ({type(err).__name__}: {err}); {what_to_do}") from None

    # -- config ---------------------------------------------------------------------------
    def check_config(self, config: dict, allowed_changes: Iterable[str], allow_any: bool = False) -> list[str]:
        """Compare with a saved config.json; return the allowed changes as lines, raise on others.

        ``start`` records the differences in this session's entry of meta.json
        (``config_changes``: ``{"key", "old", "new"}`` each; null if config.json
        was unreadable), also those of a folder with no checkpoint yet, whose
        config.json is replaced without a word.
        """
        self._config_changes = []
        if not list_checkpoints(self.path):
            try:  # nothing trained yet (e.g. the last attempt failed on a bad value): the new config replaces it
                saved = self._read_json("config.json", "")
            except ResultsDirError:
                saved = None
            self._config_changes = _changes(config_diff(saved, config) if saved is not None else [])
            return []
        try:
            saved = self._read_json("config.json", "restore it, or pass --allow-config-change to replace it")
        except ResultsDirError:
            if not allow_any:
                raise
            self._config_changes = None
            return ["config.json was unreadable: replaced by this command's config"]
        if saved is None:
            return []
        diff = config_diff(saved, config)
        self._config_changes = _changes(diff)
        allowed = set(allowed_changes)
        refused = [row for row in diff if row[0] not in allowed]
        if refused and not allow_any:
            lines = "; ".join(f"{key}: {old!r} -> {new!r}" for key, old, new in refused)
            raise ConfigError(
                f"{self.path} holds a run with another config ({lines}); use a new RESULTS_DIR, "
                "run the same command, or pass --allow-config-change"
            )
        return [f"{key}: {old!r} -> {new!r}" for key, old, new in diff]

    def write_config(self, config: dict) -> None:
        atomic_write_json(self.path / "config.json", config)

    # -- meta.json ---------------------------------------------------------------------
    def start(self, argv: list[str], extra: dict[str, Any]) -> None:
        """Record a new session in meta.json (status: running, its entry in ``sessions`` too), after setting
        room aside for how it ends; save the code's uncommitted changes beside it (``git_diff_<N>.patch``)."""
        previous = self.meta
        sessions = list(previous.get("sessions", []))
        if previous.get("status") == STATUS_RUNNING:  # the last process died without recording how it ended
            reason = "the process ended without recording a status (killed, out of memory, power loss?)"
            if sessions and sessions[-1].get("status") == STATUS_RUNNING:  # its entry, as written when it started
                sessions[-1] = {**sessions[-1], "status": "died", "reason": reason}
            else:  # a meta.json written before sessions were listed from their start
                sessions.append(_session(previous.get("start_time"), None, None, "died", reason))
        now = utc_now()
        self._started = time.monotonic()
        code = Path(argv[0]).resolve().parent if argv else Path.cwd()
        git = git_info(code)
        diff, diff_note = git_diff(code) if git["git_dirty"] else (None, None)
        patch = f"git_diff_{len(sessions) + 1}.patch" if diff is not None else None
        command, hostname = [sys.executable, *argv], socket.gethostname()
        self._session = {
            **_session(now, None, None, STATUS_RUNNING, None),
            "command": command,
            "hostname": hostname,
            **git,
            "git_diff": patch,
            "git_diff_note": diff_note,
            "config_changes": self._config_changes,
            "epochs": None,
            "steps": None,
            **slurm_job(),
        }
        self.meta = {
            "command": command,
            "cwd": str(Path.cwd()),
            "status": STATUS_RUNNING,
            "start_time": now,
            "end_time": None,
            "duration_s": None,
            "first_start_time": previous.get("first_start_time", previous.get("start_time", now)),
            "hostname": hostname,
            "platform": platform.platform(),
            "python": platform.python_version(),
            **versions(),
            **git,
            **extra,
            "sessions": [*sessions, self._session],
        }
        # A full disk must not leave meta.json saying "running": the room for the last words is taken first,
        # random bytes so that no compressing file system shrinks it, and used by finish().  One left behind by
        # a killed process goes first (replacing it would need its size twice).
        self.release_reserve()
        reserve = max(RESERVE_BYTES, 2 * len(json_bytes(self.meta)))
        atomic_write_bytes(self.path / RESERVE, os.urandom(reserve), durable=False)
        if patch is not None:
            try:  # a copy for the record: a failure (even a full disk) is noted, and the run goes on
                atomic_write_bytes(self.path / patch, diff, durable=False)
            except OSError as err:
                self._session.update(git_diff=None, git_diff_note=f"not saved: {type(err).__name__}: {err}")
        atomic_write_json(self.path / "meta.json", self.meta)

    def resumed(self, epoch: int, batch: int, step: int) -> None:
        """Note where training resumed (epochs and batches done, optimisation steps done): ``finish`` records the
        epochs and steps this session trained in its entry of meta.json."""
        self._resumed = (epoch, batch, step)

    def release_reserve(self) -> None:
        """Free the room that ``start`` set aside (``finish`` writes meta.json in it)."""
        (self.path / RESERVE).unlink(missing_ok=True)

    def finish(
        self,
        status: str,
        reason: str | None = None,
        message: str | None = None,
        reached: tuple[int, int, int] | None = None,
    ) -> None:
        """Record how this session ended (in its entry of ``sessions`` too, with the epochs and steps it trained
        from where it ``resumed`` to ``reached``: epochs and batches done, steps done), and print ``message``
        (an error line, a traceback) to stderr and stderr.txt.

        A full disk cannot stop this.  The message goes into the room kept past
        the end of stderr.txt (``capture_output``) or, where that is used up or
        missing, into the end of the reserve that ``start`` set aside, given
        back first; meta.json is written into the pages the reserve still holds
        (overwritten in place, then renamed).  So a process that takes every
        page freed meanwhile cannot take that room first.  The terminal gets the
        message last, in one piece, with a note if meta.json could not be
        written after all.
        """
        end = utc_now()
        duration = None if self._started is None else round(time.monotonic() - self._started, 3)
        self.meta.update(status=status, end_time=end, duration_s=duration, reason=reason)
        if self._session is None:  # start() failed before it made this session's entry
            self._session = _session(self.meta.get("start_time"), None, None, status, reason)
            self.meta["sessions"] = [*self.meta.get("sessions", []), self._session]
        # The entry only grows by the reason and two pairs of numbers: the reserve, twice meta.json at start, holds it.
        self._session.update(end_time=end, duration_s=duration, status=status, reason=reason)
        self._session.update(_trained(self._resumed, reached))
        data = json_bytes(self.meta)
        self._shrink_reserve(len(data))
        if message is not None:
            self._log_error(message)
        problem = self._write_meta(data)
        if problem is not None:
            note = f"could not record the end of the run in {self.path / 'meta.json'}: {problem}"
            message = f"warning: {note}" if message is None else f"{message} ({note})"
        if message is not None:
            try:
                print(message, file=self.terminal, flush=True)
            except (OSError, ValueError):  # a closed terminal
                pass

    def _shrink_reserve(self, size: int) -> None:
        """Give back all of the reserve but its first ``size`` bytes."""
        reserve = self.path / RESERVE
        try:
            if reserve.stat().st_size > size:
                os.truncate(reserve, size)
        except OSError:
            pass

    def _write_meta(self, data: bytes) -> OSError | None:
        """Replace meta.json by ``data``, in the reserve's own pages if there is a reserve; the error if it failed."""
        meta, reserve = self.path / "meta.json", self.path / RESERVE
        if reserve.exists():
            try:
                with _open_nofollow(reserve, "r+b") as f:
                    _write_all(f, data)
                    f.truncate(len(data))
                    os.fsync(f.fileno())
                os.replace(reserve, meta)
                fsync_dir(self.path)
                return None
            except OSError:  # e.g. a copy-on-write file system needs new room even to overwrite: the usual way
                self.release_reserve()
        try:
            atomic_write_bytes(meta, data)
        except OSError as err:
            return err
        return None

    def _log_error(self, message: str) -> None:
        """Append ``message`` to stderr.txt if it can be written (also before ``capture_output``: ``start`` failed)."""
        data = (message + "\n").encode("utf-8", "backslashreplace")
        logs = [log for name, _, log in self._streams if name == "stderr"]
        try:
            if logs:
                _write_all(logs[0], data)
            else:
                path = self.path / "stderr.txt"
                _unshare(path)
                with _open_nofollow(path) as log:
                    _write_all(log, data)
        except OSError:
            pass

    # -- stdout.txt / stderr.txt ---------------------------------------------------------
    def capture_output(self) -> None:
        """Copy everything printed to stdout.txt / stderr.txt (appended on resume)."""
        for name in ("stdout", "stderr"):
            path = self.path / f"{name}.txt"
            _unshare(path)
            log = _open_nofollow(path)
            if name == "stderr":  # room for the last words of a run that fills the disk (see finish)
                _keep_room(log.fileno(), LOG_ROOM)
            original = getattr(sys, name)
            self._streams.append((name, original, log))
            setattr(sys, name, Tee(original, log))

    def release_output(self) -> None:
        for name, original, log in reversed(self._streams):
            setattr(sys, name, original)
            try:
                log.close()
            except OSError:
                pass
        self._streams.clear()

    @property
    def terminal(self) -> TextIO:
        """The real stderr, for progress bars that must not fill stderr.txt with carriage returns."""
        return self._streams[-1][1] if self._streams else sys.stderr

    # -- history.csv -----------------------------------------------------------------------
    @property
    def history_path(self) -> Path:
        return self.path / "history.csv"

    def append_history(self, row: dict[str, Any]) -> None:
        """Append one epoch's row; it survives a power cut once ``sync_history`` has run."""
        new = not self.history_path.exists() or self.history_path.stat().st_size == 0
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)
        with names_file(self.history_path), _open_nofollow(self.history_path) as f:
            _write_all(f, text.getvalue().encode())

    def sync_history(self) -> None:
        """fsync history.csv: the trainer calls it before each checkpoint, which must not outlive its rows.

        Once per checkpoint, not per row: rows written after the newest
        checkpoint are dropped on resume anyway.
        """
        fsync_file(self.history_path)

    def truncate_history(self, last_epoch: int) -> None:
        """Keep the rows of epochs 1..``last_epoch`` (those the checkpoint we resume from covers); drop the rest.

        Rows written after that checkpoint, complete or cut short by a kill or a
        full disk, are dropped.  Raises ``ResultsDirError`` if a covered row is
        missing or damaged.
        """
        if last_epoch == 0:
            self.history_path.unlink(missing_ok=True)
            return
        problem = "it is missing"
        if self.history_path.exists():
            try:
                with open(self.history_path, newline="", encoding="utf-8") as f:
                    reader = csv.DictReader(f)
                    fields = reader.fieldnames or []
                    rows = list(itertools.islice(reader, last_epoch))
                epochs = [int(row["epoch"]) for row in rows if None not in row and None not in row.values()]
                problem = "" if epochs == list(range(1, last_epoch + 1)) else f"it has rows of epochs {epochs[:10]}"
            except (ValueError, KeyError, csv.Error, UnicodeDecodeError) as err:
                problem = f"{type(err).__name__}: {err}"
        if problem:
            raise ResultsDirError(
                f"{self.history_path} must hold the rows of epochs 1..{last_epoch}, which the newest checkpoint covers, "
                f"but {problem}; restore it, or move the results directory away to start again"
            )
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_bytes(self.history_path, text.getvalue().encode())  # a kill here must not lose the rows

    # -- the script that ran ---------------------------------------------------------------
    def copy_script(self, script: str | Path) -> None:
        script = Path(script)
        if script.is_file():
            atomic_write_bytes(self.path / script.name, script.read_bytes(), durable=False)


def _refuse_links(folder: Path) -> None:
    """Raise ``ResultsDirError`` naming the first symbolic link found inside ``folder``.

    Except in ``slurm/``, where submitit keeps its logs (and links its batch
    scripts) for ``bin/submit.py``: the trainer writes nothing there.
    """
    for root, dirs, files in os.walk(folder):
        if Path(root) == folder:
            dirs[:] = [name for name in dirs if name != SLURM_FOLDER or os.path.islink(folder / name)]
        for name in dirs + files:
            if os.path.islink(os.path.join(root, name)):
                raise ResultsDirError(f"{Path(root, name)} is a symbolic link: {LINKS_REFUSED}")


def _unshare(path: Path) -> None:
    """Give ``path`` an inode of its own if it has other hard links, so that appending to it changes nothing else."""
    if path.exists() and path.stat().st_nlink > 1:
        atomic_write_bytes(path, path.read_bytes(), durable=False)


def _session(start: str | None, end: str | None, duration: float | None, status: str, reason: str | None) -> dict:
    """One entry of meta.json's ``sessions``: how one process's part of the run went.

    ``start`` writes the entry (status running), with ``command`` (the
    interpreter first), ``hostname``, ``git_commit``, ``git_dirty``,
    ``git_diff`` (the file holding ``git diff HEAD`` of a dirty tree, else
    null; ``git_diff_note`` says why one is missing) and ``config_changes``
    (``[{"key", "old", "new"}]`` against the saved config.json: the values
    from this session on; null if it was unreadable).  ``finish`` adds how it
    ended and what it trained: ``epochs`` ``[first, last]`` (the first it
    worked on, resumed inside it if ``steps`` says so, and the last it worked
    on, complete unless the run stopped inside it) and ``steps`` ``[first,
    last]`` optimisation steps, null if it trained none.  The entry of a
    process that died keeps what ``start`` wrote, its status ``died``.
    """
    return {"start_time": start, "end_time": end, "duration_s": duration, "status": status, "reason": reason}


def _changes(diff: list[tuple[str, Any, Any]]) -> list[dict[str, Any]]:
    return [{"key": key, "old": old, "new": new} for key, old, new in diff]


def _trained(resumed: tuple[int, int, int] | None, reached: tuple[int, int, int] | None) -> dict[str, Any]:
    """``epochs`` and ``steps`` of a session's entry: those from ``resumed`` to ``reached`` (epoch, batch, step)."""
    if resumed is None or reached is None or reached[2] <= resumed[2]:
        return {"epochs": None, "steps": None}
    last_epoch = reached[0] + 1 if reached[1] else reached[0]
    return {"epochs": [resumed[0] + 1, last_epoch], "steps": [resumed[2] + 1, reached[2]]}


def slurm_job() -> dict[str, Any]:
    """``slurm``: the job id, array task and node list of a session run by SLURM (nothing outside SLURM)."""
    env = os.environ
    if "SLURM_JOB_ID" not in env:
        return {}
    keys = {"job_id": "SLURM_JOB_ID", "array_job_id": "SLURM_ARRAY_JOB_ID", "array_task_id": "SLURM_ARRAY_TASK_ID",
            "nodelist": "SLURM_JOB_NODELIST", "restart_count": "SLURM_RESTART_COUNT"}  # fmt: skip
    return {"slurm": {key: env.get(name) for key, name in keys.items()}}


def versions() -> dict[str, str | None]:
    import torch

    try:
        from importlib.metadata import version

        torchvision = version("torchvision")
    except Exception:
        torchvision = None
    return {"torch": torch.__version__, "torchvision": torchvision}


def git_info(where: Path) -> dict[str, Any]:
    """Commit and dirtiness of the git tree that holds the code (None outside git)."""

    def git(*args: str) -> str:
        # A session of its own: a stop signal to the run's process group must not kill git halfway.
        out = subprocess.run(
            ["git", "-C", str(where), *args], capture_output=True, text=True, timeout=10, start_new_session=True
        )
        if out.returncode != 0:
            raise RuntimeError(out.stderr)
        return out.stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except Exception:  # not a git tree, no commit yet, or git missing
        return {"git_commit": None, "git_dirty": None}
    return {"git_commit": commit, "git_dirty": dirty}


def git_diff(where: Path, limit: int = GIT_DIFF_LIMIT) -> tuple[bytes | None, str | None]:
    """``git diff HEAD`` (binary-safe, a patch ``git apply`` takes) of the git tree holding the code, to save beside
    meta.json, or None and why not: no failure here may stop the run."""
    command = ["git", "-C", str(where), "diff", "HEAD", "--binary", "--no-color", "--no-ext-diff", "--no-textconv",
               "--src-prefix=a/", "--dst-prefix=b/"]  # fmt: skip
    try:  # a session of its own: a stop signal to the run's process group must not kill git halfway
        out = subprocess.run(command, capture_output=True, stdin=subprocess.DEVNULL, timeout=GIT_DIFF_TIMEOUT_S,
                             start_new_session=True)  # fmt: skip
    except (OSError, subprocess.SubprocessError) as err:
        return None, f"not saved: {type(err).__name__}: {err}"
    if out.returncode != 0:
        return None, f"not saved: git diff exited with {out.returncode}"
    if len(out.stdout) > limit:
        return None, f"not saved: larger than {limit} bytes"
    return (out.stdout, None) if out.stdout else (None, "not saved: git diff HEAD was empty")
