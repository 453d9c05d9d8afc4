"""The results directory: everything one run leaves behind, and nothing lost on resume.

config.json    the fully resolved config
meta.json      command, times, status, host, versions, device, git commit
history.csv    one row per epoch
model.pt       the newest weights (a state dict)
loop_state.json + checkpoints/   what resume needs (see checkpoint.py)
stdout.txt, stderr.txt           everything printed, appended on resume
<script>.py    a copy of the entry point that ran
events.out.tfevents.*            TensorBoard scalars
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import platform
import shutil
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Iterable, TextIO

from .checkpoint import atomic_write_bytes, atomic_write_json, fsync_file, list_checkpoints
from .cli import ConfigError, config_diff

STATUS_RUNNING, STATUS_FINISHED, STATUS_FAILED, STATUS_INTERRUPTED = "running", "finished", "failed", "interrupted"


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


class Tee:
    """A text stream that writes to the terminal and to a file (used for stdout and stderr).

    If the terminal goes away (closed pipe, ended ssh session), the run goes on
    and keeps logging to the file.
    """

    def __init__(self, stream: TextIO, log: TextIO):
        self.stream, self.log = stream, log
        self.terminal_ok = self.log_ok = True

    def write(self, text: str) -> int:
        if self.log_ok:
            try:
                self.log.write(text)
            except OSError:  # disk full: keep training and printing; the run's error says what happened
                self.log_ok = False
        if self.terminal_ok:
            try:
                self.stream.write(text)
            except OSError:  # BrokenPipeError and friends: stop echoing, keep training
                self.terminal_ok = False
        return len(text)

    def flush(self) -> None:
        if self.log_ok:
            try:
                self.log.flush()
            except OSError:
                self.log_ok = False
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
    """Bookkeeping of one results directory, shared by every entry point."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.meta: dict[str, Any] = {}
        self._streams: list[tuple[str, TextIO, TextIO]] = []

    # -- config -------------------------------------------------------------------------
    def check_config(self, config: dict, allowed_changes: Iterable[str], allow_any: bool = False) -> list[str]:
        """Compare with a saved config.json; return the allowed changes as lines, raise on others."""
        saved_path = self.path / "config.json"
        if not saved_path.exists():
            return []
        if not list_checkpoints(self.path):
            return []  # nothing trained yet (e.g. the last attempt failed on a bad value): the new config replaces it
        saved = json.loads(saved_path.read_text())
        diff = config_diff(saved, config)
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
        """Create the folder and record a new session in meta.json (status: running)."""
        self.path.mkdir(parents=True, exist_ok=True)
        meta_path = self.path / "meta.json"
        previous = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        sessions = previous.get("sessions", [])
        if previous.get("status") == STATUS_RUNNING:  # the last process died without recording how it ended
            reason = "the process ended without recording a status (killed, out of memory, power loss?)"
            sessions.append(_session(previous.get("start_time"), None, None, "died", reason))
        now = utc_now()
        self._started = time.monotonic()
        self.meta = {
            "command": [sys.executable, *argv],
            "cwd": str(Path.cwd()),
            "status": STATUS_RUNNING,
            "start_time": now,
            "end_time": None,
            "duration_s": None,
            "first_start_time": previous.get("first_start_time", previous.get("start_time", now)),
            "hostname": socket.gethostname(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            **versions(),
            **git_info(Path(argv[0]).resolve().parent if argv else Path.cwd()),
            **extra,
            "sessions": sessions,
        }
        self._save_meta()

    def update_meta(self, **values: Any) -> None:
        self.meta.update(values)
        self._save_meta()

    def finish(self, status: str, reason: str | None = None) -> None:
        """Record how this session ended; the previous sessions stay listed in ``sessions``."""
        end = utc_now()
        duration = round(time.monotonic() - self._started, 3)
        self.meta.update(status=status, end_time=end, duration_s=duration, reason=reason)
        self.meta["sessions"] = [
            *self.meta["sessions"],
            _session(self.meta["start_time"], end, duration, status, reason),
        ]
        self._save_meta()

    def _save_meta(self) -> None:
        try:
            atomic_write_json(self.path / "meta.json", self.meta)
        except OSError as err:  # e.g. disk full: say so on the terminal rather than lose the real error
            print(f"warning: could not update {self.path / 'meta.json'}: {err}", file=sys.__stderr__)

    # -- stdout.txt / stderr.txt ---------------------------------------------------------
    def capture_output(self) -> None:
        """Copy everything printed to stdout.txt / stderr.txt (appended on resume)."""
        for name in ("stdout", "stderr"):
            log = open(self.path / f"{name}.txt", "a", buffering=1, encoding="utf-8")
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
        with open(self.history_path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)

    def sync_history(self) -> None:
        """fsync history.csv: the trainer calls it before each checkpoint, which must not outlive its rows.

        Once per checkpoint, not per row: rows written after the newest
        checkpoint are dropped on resume anyway.
        """
        fsync_file(self.history_path)

    def truncate_history(self, last_epoch: int) -> None:
        """Drop rows after ``last_epoch`` (written after the checkpoint we resume from)."""
        if not self.history_path.exists():
            return
        with open(self.history_path, newline="") as f:
            reader = csv.DictReader(f)
            fields = reader.fieldnames or []
            rows = [row for row in reader if int(row["epoch"]) <= last_epoch]
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_bytes(self.history_path, text.getvalue().encode())  # a kill here must not lose the rows

    # -- the script that ran ---------------------------------------------------------------
    def copy_script(self, script: str | Path) -> None:
        script = Path(script)
        if script.is_file():
            shutil.copy2(script, self.path / script.name)


def _session(start: str | None, end: str | None, duration: float | None, status: str, reason: str | None) -> dict:
    """One entry of meta.json's ``sessions``: how one process's part of the run went."""
    return {"start_time": start, "end_time": end, "duration_s": duration, "status": status, "reason": reason}


def print_exception() -> str:
    """Print the current traceback to stderr (and so to stderr.txt); return its last line."""
    text = traceback.format_exc()
    print(text, file=sys.stderr, end="")
    return text.strip().splitlines()[-1]


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
        out = subprocess.run(["git", "-C", str(where), *args], capture_output=True, text=True, timeout=10)
        if out.returncode != 0:
            raise RuntimeError(out.stderr)
        return out.stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except Exception:  # not a git tree, no commit yet, or git missing
        return {"git_commit": None, "git_dirty": None}
    return {"git_commit": commit, "git_dirty": dirty}
