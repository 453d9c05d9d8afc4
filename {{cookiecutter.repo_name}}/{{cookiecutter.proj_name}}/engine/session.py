"""One training session on a results directory, from taking the folder to the exit code.

1. Take the folder (``ResultsDir.open``: create, lock, no symbolic link
   inside), compare the config with the saved one, and build data, network and
   trainer.  Any problem here is a usage error: one line, exit 2, and nothing
   written (a folder made for the run is removed again).
2. Record the session in meta.json (``running``), copy the output to
   stdout.txt/stderr.txt, resume from the newest checkpoint and train.
3. Record how it ended (``finished``, ``interrupted`` or ``failed`` and why),
   print why it stopped (one line, or a bug's traceback) and let the folder go.
   A full disk cannot stop this: ``start`` set room aside.

Exit codes: 0 finished (or nothing left to do), 1 the run failed (non-finite
loss, disk full, unreadable checkpoints, a bug), 2 bad command line, config,
data or RESULTS_DIR, or RESULTS_DIR in use (nothing was written), 128+N a stop
signal N came (130 Ctrl-C, 138 SIGUSR1, 140 SIGUSR2, 143 SIGTERM): the run wrote a
checkpoint and stopped, or had already finished; run the same command to resume.

Under data parallelism (``distributed.World``) rank 0 runs the session as
above; the other processes only build, resume and train, print nothing, and
exit with the same code.  All of them agree after the build: if one could not
start, none does.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import traceback
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch.distributed as dist

from . import signals
from .checkpoint import (
    CheckpointMismatch,
    CheckpointWriteError,
    FailedOnRankZero,
    NonFiniteLoss,
    NoReadableCheckpoint,
    UntrustedFileError,
    list_checkpoints,
)
from .cli import ConfigError, first_line
from .distributed import World
from .loop import Trainer
from .results import DISK_FULL, STATUS_FAILED, STATUS_FINISHED, STATUS_INTERRUPTED, ResultsDir

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
# Problems that deserve one line on stderr rather than a traceback.
EXPECTED_ERRORS = (NonFiniteLoss, UntrustedFileError, NoReadableCheckpoint, CheckpointMismatch, ConfigError)
# Before anything is written: a bad value, a missing data file, an unusable RESULTS_DIR.
USAGE_ERRORS = (ConfigError, FileNotFoundError, NotADirectoryError, PermissionError)

Build = Callable[[ResultsDir, signals.StopFlag], Trainer]


def run(
    results_dir: str | Path,
    argv: Sequence[str],
    config: dict[str, Any],
    build: Build,
    resumable_changes: Iterable[str] = (),
    allow_config_change: bool = False,
    meta: dict[str, Any] | None = None,
    world: World | None = None,
) -> int:
    """Train (or resume) the run in ``results_dir``; return the exit code.

    ``config`` is the resolved config (config.json), ``build(results, stop)``
    makes the trainer, ``resumable_changes`` are the config keys that may differ
    from the saved config, ``meta`` extra fields for meta.json, ``world`` the
    training processes this one is part of.
    """
    world = world or World()
    stop = signals.catch()
    results = ResultsDir(results_dir)
    changes: list[str] = []
    built: list[Trainer] = []

    def take_folder() -> None:
        if stop.requested:  # during start-up (bin/train.py catches signals before its imports)
            raise _Stopped
        if world.is_main:  # the other processes never touch the folder
            results.open()
            changes.extend(results.check_config(config, resumable_changes, allow_any=allow_config_change))

    def build_trainer() -> None:
        built.append(build(results, stop))
        if stop.requested:  # during the build: the newest checkpoint already holds where the run is
            raise _Stopped

    # Each step ends with every process agreeing on whether all could do it: the build has collectives (DDP's
    # first broadcast), which would wait forever for a rank 0 that could not take the folder.
    for step in (take_folder, build_trainer):
        code = _agree(world, *_attempt(step, results, stop))
        if code != EXIT_OK:
            results.close()  # removes a folder made for the run (nothing was written)
            return code
    if not world.is_main:
        return _follow(built[0], world)
    return _train(results, built[0], stop, argv, config, changes, meta or {}, world)


def _attempt(step: Callable[[], None], results: ResultsDir, stop: signals.StopFlag) -> tuple[int, str | None]:
    """Run a start-up step; its exit code and error line (``EXIT_OK, None`` if it went well)."""
    try:
        step()
        return EXIT_OK, None
    except _Stopped:
        message = f"{stop.name}: stopped before training started; run the same command to resume."
        return signals.exit_code(stop.signum), message
    except KeyboardInterrupt:  # a second Ctrl-C
        return signals.exit_code(signal.SIGINT), "Interrupted before training started."
    except USAGE_ERRORS as err:
        return EXIT_USAGE, f"error: {err}"
    except OSError as err:  # e.g. disk full while taking the folder
        return (EXIT_FAILED if err.errno in DISK_FULL else EXIT_USAGE), f"error: cannot use {results.path}: {err}"


def _agree(world: World, code: int, error: str | None) -> int:
    """The worst exit code of all processes.  Rank 0 says why; another process only if rank 0 had no problem."""
    worst, on_rank_zero = world.max([code, code if world.is_main else EXIT_OK])
    if error is not None and (world.is_main or on_rank_zero == EXIT_OK):
        print(error, file=sys.stderr)
    return worst


class _Stopped(Exception):
    """A stop signal came before training started."""


def _train(
    results: ResultsDir,
    trainer: Trainer,
    stop: signals.StopFlag,
    argv: Sequence[str],
    config: dict[str, Any],
    changes: list[str],
    meta: dict[str, Any],
    world: World,
) -> int:
    status, reason, code = STATUS_FAILED, None, EXIT_FAILED
    trained = False  # fit returned: so did every process's, which now wait for this one's exit code
    message = None  # for stderr and stderr.txt, printed by finish() once meta.json is written
    try:
        results.start(list(argv), meta)
        results.capture_output()
        if results.stale_lock:
            print(f"Took over the lock left by a process that is gone: {results.stale_lock}")
        for change in changes:
            print(f"Resuming with a changed config: {change}")
        trainer.resume()
        results.resumed(trainer.epoch, trainer.batch, trainer.global_step)  # meta.json: the epochs this session ran
        results.write_config(config)  # only now: a config whose model cannot load the checkpoint is not kept
        results.copy_script(argv[0])
        stopped_by = trainer.fit()
        trained = True
        if stopped_by:
            status, code = STATUS_INTERRUPTED, signals.exit_code(stop.signum)
            where = f"epoch {trainer.epoch}" + (f" + {trainer.batch} batches" if trainer.batch else "")
            reason = f"{stopped_by}: stopped after a checkpoint at {where} (step {trainer.global_step})"
            if not list_checkpoints(results.path):  # stopped before the first step of a new run
                reason = f"{stopped_by}: stopped before the first step"
            message = f"{reason}; run the same command to resume."
        else:
            status, code = STATUS_FINISHED, EXIT_OK
            reason = None  # (a checkpoint from before the reasons were kept says True: patience)
            if trainer.stopped_early:
                reason = "pruned by the sweep" if trainer.stopped_early == "pruned" else "early stopping"
            print(f"Results in {results.path}")
    except KeyboardInterrupt:  # a second Ctrl-C: stopped at once, without a checkpoint
        status, reason, code = STATUS_INTERRUPTED, "KeyboardInterrupt", signals.exit_code(signal.SIGINT)
        message = "Interrupted; run the same command again to resume from the last checkpoint."
    except (CheckpointWriteError, OSError) as err:  # disk full, quota, I/O error: the error names the file
        reason = f"{type(err).__name__}: {err}"
        message = f"error: {err}; {_what_now(results)}"
    except EXPECTED_ERRORS as err:
        reason = f"{type(err).__name__}: {err}"  # expected problems: one line, no traceback
        message = f"error: {err}"
    except Exception as err:
        if _peer_lost(err):  # another training process died or failed: its own error says why
            reason = f"{type(err).__name__}: {first_line(err)}"
            message = f"error: another training process stopped ({first_line(err)}); {_what_now(results)}"
        else:  # a bug: the whole traceback
            message = traceback.format_exc().rstrip()
            reason = message.splitlines()[-1]
    finally:
        if stop.requested and status != STATUS_FAILED:  # a signal after the last checkpoint still says "stopped"
            code = signals.exit_code(stop.signum)
        reached = (trainer.epoch, trainer.batch, trainer.global_step)
        results.finish(status, reason, message, reached)  # a full disk cannot stop this: start() set room aside
        results.close()
    if trained:  # the others exit only now, with this code: a launcher that sees one exit stops the rest
        world.max([code])
    return code


def _follow(trainer: Trainer, world: World) -> int:
    """A process other than rank 0: resume and train in step with the others, printing nothing; then wait for
    rank 0 to record the end of the run, and return its exit code."""
    try:
        with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
            trainer.resume()
            trainer.fit()
        return world.max([EXIT_OK])[0]  # rank 0's exit code (the others give 0)
    except KeyboardInterrupt:
        return signals.exit_code(signal.SIGINT)
    except (FailedOnRankZero, *EXPECTED_ERRORS, OSError):  # rank 0 reports these
        return EXIT_FAILED
    except Exception as err:
        if not _peer_lost(err):
            raise
        return EXIT_FAILED


def _peer_lost(err: Exception) -> bool:
    """Did a collective fail because another training process is gone?  (gloo raises a plain RuntimeError.)"""
    text = str(err)
    return isinstance(err, dist.DistError) or (
        isinstance(err, RuntimeError) and any(sign in text for sign in ("gloo", "NCCL", "Connection reset"))
    )


def _what_now(results: ResultsDir) -> str:
    found = list_checkpoints(results.path)
    if found:
        return f"the newest checkpoint ({found[-1].name}) is intact: fix this, then run the same command to resume"
    return "no checkpoint was written yet: fix this, then run the same command to start again"
