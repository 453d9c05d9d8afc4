"""Shared fixtures: the project root, helpers that run the project's scripts as a user would, and the
reference runs of the fault-tolerance tests (built by fault_helpers.py, once per test session).

Scripts run as real processes, each in a process group of its own, so that a test can kill one
(and its children) the way a scheduler would.  Every process starts by importing torch (a few
seconds), which is why pyproject.toml runs the suite on all cores with pytest-xdist.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 300  # no script may hang the suite

_processes: set[subprocess.Popen] = set()  # still running; killed when the session ends


def start_process(command: list[Any], cwd: Path | str | None = None, **kwargs) -> subprocess.Popen:
    """Start ``command`` (from the project root by default) in a process group of its own."""
    process = subprocess.Popen(
        [str(part) for part in command],
        cwd=PROJECT_ROOT if cwd is None else cwd,
        start_new_session=True,  # so that kill_process also ends its children (bash scripts)
        **kwargs,
    )
    _processes.add(process)
    return process


def kill_process(process: subprocess.Popen) -> None:
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except OSError:
            process.kill()
    process.wait()
    _processes.discard(process)


def run_process(command: list[Any], cwd: Path | str | None = None, check: bool = True, **kwargs):
    """Run ``command`` to its end; a ``CompletedProcess`` with text output (a failure fails the test)."""
    process = start_process(command, cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)
    try:
        stdout, stderr = process.communicate(timeout=TIMEOUT_S)
    finally:
        kill_process(process)
    result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    if check and result.returncode != 0:
        pytest.fail(
            f"{' '.join(result.args)} exited with {result.returncode}\n"
            f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
        )
    return result


def start_script(script: str, *args: Any, cwd: Path | str | None = None, **kwargs) -> subprocess.Popen:
    """Start ``python SCRIPT ARGS...`` (from the project root by default) and return at once."""
    return start_process([sys.executable, script, *args], cwd, **kwargs)


def run_script(script: str, *args: Any, cwd: Path | str | None = None, check: bool = True, **kwargs):
    """``python SCRIPT ARGS...`` to its end; a ``CompletedProcess`` with text output."""
    return run_process([sys.executable, script, *args], cwd, check, **kwargs)


def read_history(results_dir: Path) -> list[dict[str, str]]:
    with open(Path(results_dir) / "history.csv", newline="") as f:
        return list(csv.DictReader(f))


def history_epochs(results_dir: Path) -> list[int]:
    return [int(row["epoch"]) for row in read_history(results_dir)]


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


@pytest.fixture(scope="session")
def project_root() -> Path:
    return PROJECT_ROOT


@pytest.fixture(scope="session")
def run_train() -> Callable[..., subprocess.CompletedProcess]:
    """``run_train(*args, cwd=None, check=True)``: ``python bin/train.py ARGS...``."""

    def run_train(*args: Any, cwd: Path | str | None = None, check: bool = True, **kwargs):
        return run_script("bin/train.py", *args, cwd=cwd, check=check, **kwargs)

    return run_train


@pytest.fixture(scope="session")
def run() -> Callable[..., subprocess.CompletedProcess]:
    """``run(script, *args, cwd=None, check=True)`` for any script of the project."""
    return run_script


@pytest.fixture
def results_dir(tmp_path: Path) -> Path:
    """A fresh path for one run's results (not created: the run creates it)."""
    return tmp_path / "results"


# -- the fault-tolerance tests' shared runs (fault_helpers imports this module, so it is imported where used) --


@pytest.fixture(scope="session")
def tiny_cifar(tmp_path_factory) -> Path:
    """The root of tiny CIFAR-10 files (40 random images per file), written once per test session."""
    from fault_helpers import tiny_cifar_root

    return tiny_cifar_root(tmp_path_factory)


@pytest.fixture(scope="session")
def iris_reference(tmp_path_factory) -> Path:
    """The uninterrupted Iris run (``fault_helpers.IRIS_ARGS``) with its data order recorded; not to be changed."""
    from fault_helpers import reference_run

    return Path(reference_run(tmp_path_factory, "iris", None)["results"])


@pytest.fixture(scope="session")
def cifar10_reference(tmp_path_factory, tiny_cifar) -> Path:
    """The uninterrupted tiny CIFAR-10 run (``fault_helpers.CIFAR_ARGS``) with its data order recorded."""
    from fault_helpers import reference_run

    return Path(reference_run(tmp_path_factory, "cifar10", tiny_cifar)["results"])
