"""What the fault-tolerance tests share: the runs they train, how they inject faults, and how they compare runs.

The promise under test (test_resume_exact.py, test_damaged_runs.py, test_speed_options.py, test_signals.py,
test_disk_full.py): a run that is killed, stopped by a signal, hit by a full disk or a corrupted checkpoint, and
then restarted with the same command, ends *bitwise* as if nothing had happened.

Faults are injected by running ``tests/faulty_train.py`` (``bin/train.py`` with the ``TRAINER_FAULTS`` of its
docstring) instead of ``bin/train.py``; ``record_samples=1`` makes every process log the sample ids of every step
to ``samples_<pid>.txt``, which also tells the tests where a run is (a kill "at step N" waits until step N is
recorded).  Every random moment comes from a seeded generator and is printed in the assertion messages.

Reference runs are built once per test session, also across pytest-xdist workers (``shared``); conftest.py
makes them fixtures (``tiny_cifar``, ``iris_reference``, ``cifar10_reference``).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from conftest import TIMEOUT_S, kill_process, read_history, read_json, run_script, start_script

IRIS_EPOCHS, IRIS_STEPS_PER_EPOCH = 20, 6  # 96 training samples, batches of 16
IRIS_ARGS = ("--device=cpu", f"--num_epochs={IRIS_EPOCHS}", "--checkpoint.every_steps=2", "--log_every_steps=4")
CIFAR_EPOCHS, CIFAR_STEPS_PER_EPOCH = 5, 12  # 200 images, 180 for training in 11 batches of 16 and one of 4
CIFAR_ARGS = (
    "--device=cpu", f"--num_epochs={CIFAR_EPOCHS}", "--model.n_filters=4", "--batch_size=16",
    "--checkpoint.every_steps=3", "--log_every_steps=5",
)  # fmt: skip
CIFAR_RECORDS_PER_FILE = 40
SLOW_CHECKPOINT_S = 0.1  # a checkpoint write that lasts long enough to be killed in the middle
RESUMING = re.compile(r"Resuming from checkpoints/step_(\d+)")


# -- running and comparing runs -------------------------------------------------------------------------


def env_with_faults(faults: str = "") -> dict[str, str]:
    """The environment of a training process, with ``faults`` injected.

    One thread per process: xdist already runs one process per core, and more threads than cores make
    each run several times slower.  Every run here has the same setting, so their numbers compare.
    """
    env = {key: value for key, value in os.environ.items() if key != "TRAINER_FAULTS"}
    return {**env, "OMP_NUM_THREADS": "1", **({"TRAINER_FAULTS": faults} if faults else {})}


def train(*args: Any, faults: str = "", check: bool = True) -> subprocess.CompletedProcess:
    """``python bin/train.py ARGS...`` to its end, with ``faults`` injected (run through tests/faulty_train.py)."""
    return run_script("tests/faulty_train.py", *args, check=check, env=env_with_faults(faults))


def start_train(args: tuple, out, faults: str = "") -> subprocess.Popen:
    """Start ``python bin/train.py ARGS...`` (through tests/faulty_train.py) with its output going to ``out``."""
    return start_script(
        "tests/faulty_train.py", *args, stdout=out, stderr=subprocess.STDOUT, env=env_with_faults(faults)
    )


def shared(tmp_path_factory, name: str, build: Callable[[Path], dict]) -> dict:
    """``build(folder)`` once per test session, even when several xdist workers ask for it at once.

    The outcome (a JSON-able dict) is kept next to the folder; users of the folder must not change it
    (they copy it first).  A build that fails is not kept: the next one to ask builds it again.
    """
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the base folder of this session, common to all workers
    folder = root / "shared_runs" / name
    folder.parent.mkdir(parents=True, exist_ok=True)
    outcome_path = folder.with_name(f"{name}.json")
    with open(folder.with_name(f"{name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
        if not outcome_path.is_file():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            outcome = build(folder)
            outcome_path.with_suffix(".tmp").write_text(json.dumps(outcome))
            outcome_path.with_suffix(".tmp").replace(outcome_path)
    return read_json(outcome_path)


def load(path: Path) -> Any:
    return torch.load(path, weights_only=True)


def newest_checkpoint(results: Path) -> Path:
    found = sorted((results / "checkpoints").glob("step_*"))
    assert found, f"no checkpoint in {results}"
    return found[-1]


def assert_same(a: Any, b: Any, what: str, context: str = "") -> None:
    """``a`` and ``b`` are the same nested containers with bitwise equal tensors (``what``: the path, for messages)."""
    if isinstance(a, torch.Tensor):
        same = isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
        assert same, f"{what} differs {context}"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{what}: keys {list(a)} != {list(b)} {context}"
        for key in a:
            assert_same(a[key], b[key], f"{what}[{key!r}]", context)
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), f"{what}: lengths differ {context}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{what}[{i}]", context)
    else:
        assert a == b, f"{what}: {a!r} != {b!r} {context}"


def history_without_times(results: Path) -> list[dict[str, str]]:
    return [{k: v for k, v in row.items() if k not in ("time", "epoch_time_s")} for row in read_history(results)]


def assert_same_run(results: Path, reference: Path, context: str = "") -> None:
    """The run in ``results`` ended exactly as the uninterrupted ``reference``: weights (best_model.pt too),
    optimizer, the epoch's loss sum and metric states, RNGs, the loop's state (best value and epoch), history."""
    assert read_json(results / "meta.json")["status"] == "finished", context
    for name in ("model.pt", "best_model.pt"):
        assert_same(load(results / name), load(reference / name), name, context)
    newest, expected = newest_checkpoint(results), newest_checkpoint(reference)
    assert newest.name == expected.name, context
    state, expected_state = load(newest / "state.pt"), load(expected / "state.pt")
    optimizer, expected_optimizer = state["training_model"]["optimizer"], expected_state["training_model"]["optimizer"]
    assert_same(optimizer, expected_optimizer, f"{newest.name}/state.pt optimizer", context)
    assert_same(state, expected_state, f"{newest.name}/state.pt", context)  # loss_sum, train_metrics, rng
    assert_same(read_json(newest / "loop_state.json"), read_json(expected / "loop_state.json"), "loop_state", context)
    assert history_without_times(results) == history_without_times(reference), f"history.csv {context}"


def assert_all_finite(path: Path) -> None:
    def tensors(obj: Any):
        if isinstance(obj, torch.Tensor):
            yield obj
        elif isinstance(obj, dict):
            for value in obj.values():
                yield from tensors(value)
        elif isinstance(obj, (list, tuple)):
            for value in obj:
                yield from tensors(value)

    for tensor in tensors(load(path)):
        if tensor.is_floating_point():
            assert torch.isfinite(tensor).all(), f"{path} holds NaN or Inf"


def recorded(results: Path, pid: int) -> list[tuple[int, int, list[int]]]:
    """The complete lines of ``samples_<pid>.txt``: (epoch, step, sample ids) of every step that process began."""
    path = results / f"samples_{pid}.txt"
    if not path.is_file():
        return []
    lines = path.read_text().split("\n")[:-1]  # a process killed while writing leaves a partial last line
    return [(int(line.split()[0]), int(line.split()[1]), [int(i) for i in line.split()[2:]]) for line in lines]


def last_step(results: Path, pid: int) -> int:
    lines = recorded(results, pid)
    return lines[-1][1] if lines else 0


def tmp_folders(results: Path) -> list[str]:
    root = results / "checkpoints"
    return sorted(p.name for p in root.glob(".tmp-*")) if root.is_dir() else []


def wait_until(condition: Callable[[], bool], process: subprocess.Popen, output: Path, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not condition():
        assert process.poll() is None, f"the run ended before {what}:\n{output.read_text()}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def resumed_step(output: str) -> int:
    found = RESUMING.search(output)
    return int(found.group(1)) if found else 0


def write_tiny_cifar(root: Path) -> None:
    """CIFAR-10 binary files (the official format, see test_datasets.py) with 40 random images each."""
    rng = np.random.default_rng(1234)
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    for name in [*(f"data_batch_{i}.bin" for i in range(1, 6)), "test_batch.bin"]:
        labels = rng.integers(0, 10, (CIFAR_RECORDS_PER_FILE, 1), dtype=np.uint8)
        pixels = rng.integers(0, 256, (CIFAR_RECORDS_PER_FILE, 3 * 32 * 32), dtype=np.uint8)
        (folder / name).write_bytes(np.concatenate([labels, pixels], axis=1).tobytes())


# -- shared runs ---------------------------------------------------------------------------------------


def train_command(config: str, results: Path, cifar_root: Path | None = None) -> tuple:
    if config == "iris":
        return ("iris", results, *IRIS_ARGS)
    return ("cifar10", results, f"--data.root={cifar_root}", *CIFAR_ARGS)


def tiny_cifar_root(tmp_path_factory) -> Path:
    """The root of tiny CIFAR-10 files (``write_tiny_cifar``), written once per test session."""

    def build(folder: Path) -> dict:
        write_tiny_cifar(folder)
        return {"root": str(folder)}

    return Path(shared(tmp_path_factory, "tiny_cifar", build)["root"])


def reference_run(tmp_path_factory, config: str, cifar_root: Path | None) -> dict:
    """One uninterrupted run, recording its data order."""

    def build(folder: Path) -> dict:
        results = folder / "results"
        train(*train_command(config, results, cifar_root), faults="record_samples=1")
        (samples,) = results.glob("samples_*.txt")
        return {"results": str(results), "pid": int(samples.stem.split("_")[1])}

    return shared(tmp_path_factory, f"{config}_reference", build)


# -- stop signals ---------------------------------------------------------------------------------------------


def signal_at_step(results: Path, command: tuple, signum: int, step: int, output: Path) -> subprocess.Popen:
    """Start ``command`` (recording its steps), send ``signum`` once step ``step`` is recorded, wait for its end."""
    with open(output, "w") as out:
        process = start_train(command, out, "record_samples=1")
        try:
            wait_until(lambda: last_step(results, process.pid) >= step, process, output, f"step {step}")
            os.kill(process.pid, signum)
            process.wait(timeout=TIMEOUT_S)
        finally:
            kill_process(process)
    return process
