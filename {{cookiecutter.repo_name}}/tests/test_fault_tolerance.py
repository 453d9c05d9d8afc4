"""Fault tolerance as a user relies on it: real processes, real signals, real kills, no mocks.

The promise under test: a run that is killed, stopped by a signal, hit by a full disk or a corrupted
checkpoint, and then restarted with the same command, ends *bitwise* as if nothing had happened.

Faults are injected with the ``TRAINER_FAULTS`` variable (see ``engine/faults.py``); ``record_samples=1``
makes every process log the sample ids of every step to ``samples_<pid>.txt``, which also tells the
tests where a run is (a kill "at step N" waits until step N is recorded).  Every random moment comes
from a seeded generator and is printed in the assertion messages.

Reference runs are shared by all tests, also across pytest-xdist workers (see ``shared``).
"""

from __future__ import annotations

import fcntl
import itertools
import json
import math
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
from conftest import TIMEOUT_S, kill_process, read_history, read_json, run_script, start_script
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

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


# -- helpers ----------------------------------------------------------------------------------------


def env_with_faults(faults: str = "") -> dict[str, str]:
    """The environment of a training process, with ``faults`` injected.

    One thread per process: xdist already runs one process per core, and more threads than cores make
    each run several times slower.  Every run here has the same setting, so their numbers compare.
    """
    env = {key: value for key, value in os.environ.items() if key != "TRAINER_FAULTS"}
    return {**env, "OMP_NUM_THREADS": "1", **({"TRAINER_FAULTS": faults} if faults else {})}


def train(*args: Any, faults: str = "", check: bool = True) -> subprocess.CompletedProcess:
    """``python bin/train.py ARGS...`` to its end, with ``faults`` injected."""
    return run_script("bin/train.py", *args, check=check, env=env_with_faults(faults))


def start_train(args: tuple, out, faults: str = "") -> subprocess.Popen:
    """Start ``python bin/train.py ARGS...`` with its output (stdout and stderr) going to ``out``."""
    return start_script("bin/train.py", *args, stdout=out, stderr=subprocess.STDOUT, env=env_with_faults(faults))


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
    """The run in ``results`` ended exactly as the uninterrupted ``reference``: weights, optimizer, RNGs, history."""
    assert read_json(results / "meta.json")["status"] == "finished", context
    for name in ("model.pt", "best_model.pt"):
        assert_same(load(results / name), load(reference / name), name, context)
    newest, expected = newest_checkpoint(results), newest_checkpoint(reference)
    assert newest.name == expected.name, context
    state, expected_state = load(newest / "state.pt"), load(expected / "state.pt")
    optimizer, expected_optimizer = state["training_model"]["optimizer"], expected_state["training_model"]["optimizer"]
    assert_same(optimizer, expected_optimizer, f"{newest.name}/state.pt optimizer", context)
    assert_same(state, expected_state, f"{newest.name}/state.pt", context)  # also the RNG states and the meters
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


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory) -> Path:
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


@pytest.fixture(scope="module")
def iris_reference(tmp_path_factory) -> Path:
    return Path(reference_run(tmp_path_factory, "iris", None)["results"])


@pytest.fixture(scope="module")
def cifar10_reference(tmp_path_factory, cifar_root) -> Path:
    return Path(reference_run(tmp_path_factory, "cifar10", cifar_root)["results"])


def kill_and_resume(folder: Path, command: tuple, kills: list[tuple[int, bool]]) -> dict:
    """Start ``command``, SIGKILL it once it reaches each ``(step, during_a_checkpoint_write)``, then run it to the end.

    Every session runs the same command; a kill "during a write" waits, from that step on, for the next
    checkpoint folder ``checkpoints/.tmp-*`` (written slowly) and kills the process inside it.
    """
    results = command[1]
    sessions: list[dict] = []
    start = 0
    for target, during_write in kills:
        target = max(target, start + 1)
        output = folder / f"session_{len(sessions)}.txt"
        before = tmp_folders(results)
        process = kill_at(command, target, during_write, output, before)
        text = output.read_text()
        sessions.append({
            "pid": process.pid, "returncode": process.returncode, "target": target, "during_write": during_write,
            "killed_at_step": last_step(results, process.pid), "resumed_from": resumed_step(text),
            "new_tmp_folders": sorted(set(tmp_folders(results)) - set(before)),
            "lock": (results / ".lock").read_text(), "output": text,
        })  # fmt: skip
        assert process.returncode == -signal.SIGKILL, describe(sessions)
        start = last_step(results, process.pid)
    final = train(*command, faults="record_samples=1")
    killed = {session["pid"] for session in sessions}
    (pid,) = {int(p.stem.split("_")[1]) for p in results.glob("samples_*.txt")} - killed
    sessions.append({"pid": pid, "returncode": 0, "resumed_from": resumed_step(final.stdout), "output": final.stdout})
    return {"results": str(results), "sessions": sessions}


def kill_at(command: tuple, target: int, during_write: bool, output: Path, old_tmp: list[str]) -> subprocess.Popen:
    """Run ``command`` and SIGKILL it at step ``target`` (or in the first checkpoint write from there on).

    A kill outside a write pauses the run at step ``target`` (``pause_at_step``) and lands there, after the
    background writer has caught up: Iris runs end milliseconds after any step, sooner than a busy machine
    may schedule this process again.  The kills inside a write cover a writer in the middle of its work.
    """
    results = command[1]
    wait_in = f"slow_checkpoint_s={SLOW_CHECKPOINT_S}" if during_write else f"pause_at_step={target}"
    faults = f"record_samples=1,{wait_in}"

    def moment_has_come() -> bool:
        writing = set(tmp_folders(results)) - set(old_tmp)
        return last_step(results, process.pid) >= target and (not during_write or bool(writing))

    with open(output, "w") as out:
        process = start_train(command, out, faults)
        try:
            what = f"step {target}" + (" and a checkpoint write" if during_write else "")
            wait_until(moment_has_come, process, output, what)
        finally:
            kill_process(process)  # SIGKILL: nothing can be cleaned up or recorded
    return process


def describe(sessions: list[dict]) -> str:
    """The moments of a kill-and-resume sequence, for assertion messages."""
    keys = ("target", "during_write", "killed_at_step", "resumed_from", "new_tmp_folders")
    return "sessions: " + "; ".join(str({k: s[k] for k in keys if k in s}) for s in sessions)


@pytest.fixture(scope="module")
def iris_killed(tmp_path_factory) -> dict:
    """Iris, SIGKILLed three times at seeded random steps (the second time inside a checkpoint write)."""
    rng = random.Random(1234)
    total = IRIS_EPOCHS * IRIS_STEPS_PER_EPOCH
    first = rng.randrange(1, total // 3)
    second = first + rng.randrange(2, 24)  # few steps: every checkpoint of that session is slow
    third = rng.randrange(max(second + 4, total // 2), total - 20)
    kills = [(first, False), (second, True), (third, False)]

    def build(folder: Path) -> dict:
        return {**kill_and_resume(folder, train_command("iris", folder / "results"), kills), "kills": kills}

    return shared(tmp_path_factory, "iris_killed", build)


@pytest.fixture(scope="module")
def cifar10_killed(tmp_path_factory, cifar_root) -> dict:
    """Tiny CIFAR-10 with augmentation, SIGKILLed twice (first inside a checkpoint write)."""
    rng = random.Random(1234)
    total = CIFAR_EPOCHS * CIFAR_STEPS_PER_EPOCH
    first = rng.randrange(1, 20)
    second = rng.randrange(first + 4, total - 15)
    kills = [(first, True), (second, False)]

    def build(folder: Path) -> dict:
        command = train_command("cifar10", folder / "results", cifar_root)
        return {**kill_and_resume(folder, command, kills), "kills": kills}

    return shared(tmp_path_factory, "cifar10_killed", build)


@pytest.fixture(params=["iris", "cifar10"])
def killed_and_reference(request) -> tuple[dict, Path, Path]:
    killed = request.getfixturevalue(f"{request.param}_killed")  # first: another xdist worker may build the reference
    reference = request.getfixturevalue(f"{request.param}_reference")
    return killed, Path(killed["results"]), reference


# -- SIGKILL at random moments --------------------------------------------------------------------------


def test_run_killed_at_random_moments_ends_bitwise_as_the_uninterrupted_one(killed_and_reference):
    """Killed mid-epoch between steps and inside checkpoint writes, then rerun: same weights, optimizer, RNG,
    history."""
    killed, results, reference = killed_and_reference
    sessions = killed["sessions"]
    moments = describe(sessions)
    assert any(s.get("during_write") and s["new_tmp_folders"] for s in sessions), f"no kill inside a write; {moments}"
    assert all(s["killed_at_step"] > s["resumed_from"] for s in sessions[:-1]), f"a session did no step; {moments}"
    assert_same_run(results, reference, moments)
    meta = read_json(results / "meta.json")
    assert [s["status"] for s in meta["sessions"]] == ["died"] * (len(sessions) - 1) + ["finished"], moments


def test_killed_between_spaced_epoch_checkpoints_ends_bitwise_as_the_uninterrupted_run(tmp_path):
    """checkpoint.min_interval_s skips epoch ends, a best epoch waits in memory for the next checkpoint, kills
    land in between (one inside a write): the rerun still ends as a run that checkpointed every epoch,
    best_model.pt included (it is written before the checkpoint that follows its epoch)."""
    args = ("--device=cpu", "--num_epochs=12", "--optimizer.lr=1.0")  # lr 1.0: the best epoch is not the last
    reference = tmp_path / "reference"
    train("iris", reference, *args, "--checkpoint.min_interval_s=0")
    valid_losses = [float(row["valid_loss"]) for row in read_history(reference)]
    assert valid_losses.index(min(valid_losses)) + 1 < 12, "the test needs a best epoch before the last"
    results = tmp_path / "results"
    command = ("iris", results, *args, "--checkpoint.min_interval_s=0.05")
    # The kill inside a write comes last: while a slow write runs, these epochs of milliseconds may go on to
    # the end of the run, and no kill could follow it.
    killed = kill_and_resume(tmp_path, command, [(40, False), (41, True)])
    assert_same_run(results, reference, describe(killed["sessions"]))


# -- corrupted checkpoints --------------------------------------------------------------------------------


def corrupt(path: Path) -> None:
    if path.suffix == ".json":
        path.write_text("{not json")
    else:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # truncated, as by a crash or a full disk


@pytest.mark.parametrize("damaged", ["model.pt", "loop_state.json"])  # state.pt: see the next test
def test_corrupted_newest_checkpoint_is_set_aside_and_the_run_recomputed(damaged, iris_reference, tmp_path):
    """An unreadable newest checkpoint: a warning, the folder kept aside, resume from the one before, same result."""
    results = Path(shutil.copytree(iris_reference, tmp_path / "results"))  # a copy: files are not hard-linked
    newest, previous = sorted((results / "checkpoints").glob("step_*"))[-2:][::-1]
    corrupt(newest / damaged)
    rerun = train(*train_command("iris", results))
    assert newest.name in rerun.stderr and "unreadable" in rerun.stderr, rerun.stderr
    assert (results / "checkpoints" / f"unreadable_{newest.name}" / damaged).is_file()
    assert f"Resuming from checkpoints/{previous.name}" in rerun.stdout, rerun.stdout
    assert_same_run(results, iris_reference, f"({damaged} of {newest.name} damaged)")


def test_no_readable_checkpoint_is_a_clear_error_and_stays_one(iris_reference, tmp_path):
    """Every checkpoint unreadable: exit 1 with a clear error, and a second try must not silently start over."""
    results = Path(shutil.copytree(iris_reference, tmp_path / "results"))
    for folder in (results / "checkpoints").glob("step_*"):
        corrupt(folder / "state.pt")
    history = (results / "history.csv").read_bytes()
    for attempt in (1, 2):
        result = train(*train_command("iris", results), check=False)
        context = f"attempt {attempt} exited {result.returncode}\n{result.stdout[-300:]}\n{result.stderr}"
        assert result.returncode == 1, f"{context}\nit must refuse again, not start the run over"
        assert "checkpoint" in result.stderr, context
        if attempt == 1:
            assert "no checkpoint" in result.stderr and "could be read" in result.stderr, context
        assert "Traceback" not in result.stderr, context
        assert read_json(results / "meta.json")["status"] == "failed"
        assert (results / "history.csv").read_bytes() == history, f"attempt {attempt}: the history was discarded"


# -- disk full ------------------------------------------------------------------------------------------------


def test_disk_full_during_a_checkpoint_fails_cleanly_and_the_rerun_catches_up(iris_reference, tmp_path):
    """ENOSPC in a checkpoint write: exit 1, a clear message, the previous checkpoint intact; rerun = reference."""
    step = random.Random(1234).randrange(7, 115)  # after the first epoch's checkpoint (6 steps per epoch)
    results = tmp_path / "results"
    command = train_command("iris", results)
    failed = train(*command, check=False, faults=f"enospc_from_step={step}")
    context = f"(ENOSPC writing checkpoints from step {step})\n{failed.stdout}\n{failed.stderr}"
    assert failed.returncode == 1, context
    assert "No space left on device" in failed.stderr and "checkpoint" in failed.stderr, context
    assert "Traceback" not in failed.stderr, context
    meta = read_json(results / "meta.json")
    assert meta["status"] == "failed" and "No space left on device" in meta["reason"], meta["reason"]
    assert tmp_folders(results) == [], context
    newest = newest_checkpoint(results)
    loop = read_json(newest / "loop_state.json")
    assert loop["global_step"] == int(newest.name.split("_")[1]), context
    assert load(newest / "model.pt") and load(newest / "state.pt")  # intact: both load
    assert read_json(results / "loop_state.json")["checkpoint"] == f"checkpoints/{newest.name}", context
    rerun = train(*command)
    assert f"Resuming from checkpoints/{newest.name}" in rerun.stdout, rerun.stdout
    assert_same_run(results, iris_reference, context)
    assert [s["status"] for s in read_json(results / "meta.json")["sessions"]] == ["failed", "finished"]


# -- stop signals -------------------------------------------------------------------------------------------


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


def test_stop_signals_checkpoint_the_step_they_report_and_the_rerun_catches_up(iris_reference, tmp_path):
    """SIGTERM, then SIGUSR1 to the resumed run: each exits 128+N with status interrupted, the signal as the
    reason and a checkpoint at the step it reports; the last rerun ends exactly as the uninterrupted run."""
    rng = random.Random(1234)
    total = IRIS_EPOCHS * IRIS_STEPS_PER_EPOCH
    first = rng.randrange(3, total // 2)
    stops = [(signal.SIGTERM, first), (signal.SIGUSR1, rng.randrange(first + 3, total - 20))]
    results = tmp_path / "results"
    command = train_command("iris", results)
    resumed_from = 0
    for signum, step in stops:
        name = signal.Signals(signum).name
        output = tmp_path / f"{name}.txt"
        process = signal_at_step(results, command, signum, step, output)
        context = f"({name} once step {step} was recorded; stops {stops})\n{output.read_text()}"
        assert resumed_step(output.read_text()) == resumed_from, context
        assert process.returncode == 128 + signum, context
        meta = read_json(results / "meta.json")
        assert meta["status"] == "interrupted" and meta["reason"].startswith(name), meta["reason"]
        assert meta["sessions"][-1]["reason"] == meta["reason"]
        stopped_at = int(re.search(r"step (\d+)", meta["reason"]).group(1))
        assert stopped_at == last_step(results, process.pid), f"a step started after the stop request; {context}"
        checkpoint = results / "checkpoints" / f"step_{stopped_at:09d}"
        assert read_json(checkpoint / "loop_state.json")["global_step"] == stopped_at, context
        assert newest_checkpoint(results) == checkpoint, context
        resumed_from = stopped_at
    rerun = train(*command)
    assert f"Resuming from checkpoints/step_{resumed_from:09d}" in rerun.stdout, rerun.stdout
    assert_same_run(results, iris_reference, f"(stops {stops})")
    sessions = read_json(results / "meta.json")["sessions"]
    assert [s["status"] for s in sessions] == ["interrupted", "interrupted", "finished"]


# -- one writer per results directory -------------------------------------------------------------------------


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def stopped(pid: int) -> bool:
    """Has every thread of ``pid`` stopped (SIGSTOP is delivered asynchronously; its writer thread may be mid-write)?"""
    tasks = Path(f"/proc/{pid}/task")
    if not tasks.is_dir():  # no /proc (macOS): give the signal time instead
        time.sleep(0.5)
        return True
    states = [(task / "stat").read_text().rsplit(")", 1)[1].split()[0] for task in tasks.iterdir()]
    return all(state in "tT" for state in states)


def test_second_run_on_a_busy_results_directory_is_refused_and_changes_nothing(iris_reference, tmp_path):
    """A second process on a folder in use exits 2 naming the first (pid, host); the first finishes unharmed."""
    results = tmp_path / "results"
    command = train_command("iris", results)
    output = tmp_path / "first.txt"
    with open(output, "w") as out:
        first = start_train(command, out, "record_samples=1")
        try:
            wait_until(lambda: last_step(results, first.pid) >= 3, first, output, "the first run's third step")
            os.kill(first.pid, signal.SIGSTOP)  # frozen: holds the lock, changes nothing while the second one tries
            try:
                wait_until(lambda: stopped(first.pid), first, output, "SIGSTOP to take effect in every thread")
                before = snapshot(results)
                second = train(*command, check=False)
                after = snapshot(results)
            finally:
                os.kill(first.pid, signal.SIGCONT)
            first.wait(timeout=TIMEOUT_S)
        finally:
            kill_process(first)
    assert second.returncode == 2, second.stdout + second.stderr
    assert "in use" in second.stderr and f"pid {first.pid}" in second.stderr, second.stderr
    assert socket.gethostname() in second.stderr, second.stderr
    assert "Traceback" not in second.stderr
    assert after == before, "the refused run wrote nothing"
    assert first.returncode == 0, output.read_text()
    assert_same_run(results, iris_reference, "(the run a second process tried to share)")
    assert [s["status"] for s in read_json(results / "meta.json")["sessions"]] == ["finished"]


# -- non-finite loss --------------------------------------------------------------------------------------------


NAN_STEP = random.Random(1234).randrange(8, 60)


def test_nan_loss_stops_the_run_without_checkpointing_nan(tmp_path):
    """nonfinite_loss=stop: exit 1, the reason names the non-finite loss, every checkpoint left is finite."""
    results = tmp_path / "results"
    command = (*train_command("iris", results), "--nonfinite_loss=stop")
    result = train(*command, check=False, faults=f"nan_at_step={NAN_STEP}")
    context = f"(NaN inputs at step {NAN_STEP})\n{result.stdout}\n{result.stderr}"
    assert result.returncode == 1, context
    meta = read_json(results / "meta.json")
    assert meta["status"] == "failed" and "NonFiniteLoss" in meta["reason"] and "nan" in meta["reason"], meta["reason"]
    assert "Traceback" not in result.stderr, context
    checkpoints = sorted((results / "checkpoints").glob("step_*"))
    assert checkpoints, context
    for folder in checkpoints:
        assert int(folder.name.split("_")[1]) < NAN_STEP, f"{folder.name} written after the NaN; {context}"
        assert_all_finite(folder / "model.pt")
        assert_all_finite(folder / "state.pt")  # the momentum buffers too
    for name in ("model.pt", "best_model.pt"):
        if (results / name).exists():
            assert_all_finite(results / name)


def test_nan_loss_step_is_skipped_and_counted(tmp_path):
    """nonfinite_loss=skip: the run finishes with finite weights; history counts the one skipped step."""
    results = tmp_path / "results"
    command = (*train_command("iris", results), "--nonfinite_loss=skip")
    train(*command, faults=f"nan_at_step={NAN_STEP}")
    nan_epoch = (NAN_STEP - 1) // IRIS_STEPS_PER_EPOCH + 1
    rows = read_history(results)
    skipped = [int(row["skipped_steps"]) for row in rows]
    assert skipped == [0] * (nan_epoch - 1) + [1] * (IRIS_EPOCHS - nan_epoch + 1), f"NaN at step {NAN_STEP}"
    assert all(math.isfinite(float(row["train_loss"])) for row in rows)
    assert_all_finite(results / "model.pt")
    assert_all_finite(newest_checkpoint(results) / "state.pt")


# -- speed options ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_workers, stopped", [(0, False), (2, True)], ids=["0-workers", "2-workers-stopped"])
def test_dataloader_path_trains_exactly_as_the_in_memory_path(
    num_workers, stopped, cifar10_reference, cifar_root, tmp_path
):
    """data.loader=dataloader serves the batches and augmentation of the in-memory path: the same weights, bit
    for bit, on CPU; with workers, also when the run is stopped (SIGTERM) mid-epoch and resumed."""
    results = tmp_path / "results"
    command = (
        *train_command("cifar10", results, cifar_root),
        "--data.loader=dataloader",
        f"--data.num_workers={num_workers}",
    )
    context = f"(num_workers={num_workers})"
    if stopped:
        step = random.Random(1234).randrange(3, CIFAR_EPOCHS * CIFAR_STEPS_PER_EPOCH - 15)
        process = signal_at_step(results, command, signal.SIGTERM, step, tmp_path / "stopped.txt")
        assert process.returncode == 128 + signal.SIGTERM, (tmp_path / "stopped.txt").read_text()
        context = f"(num_workers={num_workers}, SIGTERM once step {step} was recorded, then resumed)"
    train(*command)
    assert_same(load(results / "model.pt"), load(cifar10_reference / "model.pt"), "model.pt", context)
    assert history_without_times(results) == history_without_times(cifar10_reference), context


def test_gradient_accumulation_matches_the_large_batch(iris_reference, tmp_path):
    """grad_accum_steps=2 with batch_size=8 trains as batch_size=16 does.

    The Iris MLP has no batch-dependent layer (no batch norm, dropout 0); an epoch's permutation depends
    only on (seed, epoch), so each pair of batches of 8 holds the 16 samples of one batch of 16; and each
    half's loss is weighted by its share of samples, so the accumulated gradient is that batch's mean
    gradient.  Only the order of the float additions differs: close, not bitwise equal.
    """
    results = tmp_path / "results"
    train(*train_command("iris", results), "--batch_size=8", "--grad_accum_steps=2")
    weights, expected = load(results / "model.pt"), load(iris_reference / "model.pt")
    assert weights.keys() == expected.keys()
    for key in expected:
        difference = (weights[key] - expected[key]).abs().max().item()
        assert torch.allclose(weights[key], expected[key], rtol=1e-5, atol=1e-5), f"{key}: max difference {difference}"
    assert newest_checkpoint(results).name == newest_checkpoint(iris_reference).name, "as many optimisation steps"
    losses = [float(row["train_loss"]) for row in read_history(results)]
    assert losses == pytest.approx([float(row["train_loss"]) for row in read_history(iris_reference)], rel=1e-4)


def test_bf16_and_channels_last_train_finite_weights_and_resume_exactly(cifar_root, tmp_path):
    """precision=bf16 with channels_last=true: finite weights, and a run stopped by SIGUSR1 and resumed = uninterrupted."""
    speed = ("--precision=bf16", "--channels_last=true")
    reference = tmp_path / "reference"
    train(*train_command("cifar10", reference, cifar_root), *speed)
    assert_all_finite(reference / "model.pt")
    step = random.Random(1234).randrange(3, CIFAR_EPOCHS * CIFAR_STEPS_PER_EPOCH - 15)
    results = tmp_path / "results"
    command = (*train_command("cifar10", results, cifar_root), *speed)
    output = tmp_path / "stopped.txt"
    process = signal_at_step(results, command, signal.SIGUSR1, step, output)
    assert process.returncode == 128 + signal.SIGUSR1, output.read_text()
    rerun = train(*command)
    assert "Resuming from" in rerun.stdout
    assert_same_run(results, reference, f"(bf16, channels_last, SIGUSR1 once step {step} was recorded)")


# -- more of the killed runs (last in the file: by the time xdist hands these out, the runs exist) --------


def test_tensorboard_has_every_epoch_and_step_once_after_kills(killed_and_reference):
    """TensorBoard shows one point per epoch and per logged step, the values of the uninterrupted run."""
    killed, results, reference = killed_and_reference
    moments = describe(killed["sessions"])
    for sub in ("", "steps"):
        got, expected = EventAccumulator(str(results / sub)), EventAccumulator(str(reference / sub))
        got.Reload()
        expected.Reload()
        assert sorted(got.Tags()["scalars"]) == sorted(expected.Tags()["scalars"]), moments
        for tag in expected.Tags()["scalars"]:
            points = [(e.step, e.value) for e in got.Scalars(tag)]
            reference_points = [(e.step, e.value) for e in expected.Scalars(tag)]
            if tag == "epoch_time_s":  # a duration: only its steps can match
                points, reference_points = [p[0] for p in points], [p[0] for p in reference_points]
            assert points == reference_points, f"{sub or 'epochs'}/{tag}; {moments}"
    epochs = [e.step for e in EventAccumulator(str(results)).Reload().Scalars("train_loss")]
    assert epochs == list(range(1, len(read_history(reference)) + 1)), moments


def test_data_order_is_unchanged_by_kills(killed_and_reference):
    """Every step sees the samples of the uninterrupted run; each epoch sees each training sample once."""
    killed, results, reference = killed_and_reference
    sessions = killed["sessions"]
    moments = describe(sessions)
    pieces = []
    for session, following in zip(sessions, [*sessions[1:], None], strict=True):
        lines = recorded(results, session["pid"])
        end = following["resumed_from"] if following else math.inf
        assert not lines or lines[0][1] == session["resumed_from"] + 1, f"pid {session['pid']}; {moments}"
        pieces += [line for line in lines if line[1] <= end]
    (reference_samples,) = reference.glob("samples_*.txt")
    expected = recorded(reference, int(reference_samples.stem.split("_")[1]))
    assert [line[1] for line in pieces] == list(range(1, len(expected) + 1)), moments
    assert pieces == expected, moments
    n_train = sum(len(line[2]) for line in expected if line[0] == 1)
    for epoch in sorted({line[0] for line in pieces}):
        ids = [i for line in pieces if line[0] == epoch for i in line[2]]
        assert sorted(ids) == list(range(n_train)), f"epoch {epoch}: a sample skipped or repeated; {moments}"


def test_lock_left_by_a_killed_run_is_taken_over(killed_and_reference):
    """SIGKILL leaves .lock behind; the next run on the folder takes it over instead of refusing."""
    killed, results, _ = killed_and_reference
    sessions = killed["sessions"]
    for killed_session, next_session in itertools.pairwise(sessions):
        lock = json.loads(killed_session["lock"])
        assert lock["pid"] == killed_session["pid"] and lock["host"] == socket.gethostname()
        assert "Took over the lock" in next_session["output"], next_session["output"]
        assert str(killed_session["pid"]) in next_session["output"]
    assert not (results / ".lock").exists(), "the run that finished released the lock"


def test_no_temporary_folder_is_left_after_a_kill_inside_a_checkpoint_write(iris_killed):
    """A write killed halfway leaves checkpoints/.tmp-*; once the run is resumed and finished it is gone."""
    results = Path(iris_killed["results"])
    moments = describe(iris_killed["sessions"])
    left = [name for s in iris_killed["sessions"] if s.get("during_write") for name in s["new_tmp_folders"]]
    assert left, f"the kill did not land inside a write; {moments}"
    assert tmp_folders(results) == [], f"temporary folders of killed checkpoint writes are never removed; {moments}"


# -- what a review found ---------------------------------------------------------------------------------


def test_skipped_nan_step_leaves_no_nan_in_batchnorm_statistics(cifar_root, tmp_path):
    """nonfinite_loss=skip on the cifar10 CNN (BatchNorm): the NaN batch's forward pass must not poison the
    running statistics, or every later checkpoint would be refused."""
    results = tmp_path / "results"
    train(*train_command("cifar10", results, cifar_root), "--nonfinite_loss=skip", faults="nan_at_step=3")
    assert [int(row["skipped_steps"]) for row in read_history(results)] == [1] * CIFAR_EPOCHS
    assert_all_finite(results / "model.pt")


def test_checkpoint_that_does_not_fit_the_model_is_an_error_and_nothing_is_set_aside(iris_reference, tmp_path):
    """A code or config change that makes the saved state unloadable is one clear error, not 'corruption':
    no checkpoint is renamed, and the original command still resumes."""
    results = Path(shutil.copytree(iris_reference, tmp_path / "results"))
    before = sorted(p.name for p in (results / "checkpoints").iterdir())
    command = train_command("iris", results)
    changed = train(*command, "--model.hidden_size=7", "--allow-config-change", "--num_epochs=30", check=False)
    assert changed.returncode == 1, changed.stderr
    assert "does not fit" in changed.stderr and "Traceback" not in changed.stderr, changed.stderr
    assert sorted(p.name for p in (results / "checkpoints").iterdir()) == before
    train(*command)  # the same command as before: nothing to do, and no error
    assert_same(load(results / "model.pt"), load(iris_reference / "model.pt"), "model.pt")


def test_epoch_events_are_not_repeated_when_the_first_epoch_end_checkpoint_is_lost(tmp_path):
    """Killed after epoch 1's scalars were written but before its checkpoint: the resumed run starts from a
    mid-epoch checkpoint of epoch 1 and must not log epoch 1 twice (purge_step also on the first epoch)."""
    results = tmp_path / "results"
    command = ("iris", results, "--device=cpu", "--num_epochs=2", "--checkpoint.every_steps=4", "--log_every_steps=1")
    train(*command[:3], "--num_epochs=1", *command[4:])
    shutil.rmtree(results / "checkpoints" / f"step_{IRIS_STEPS_PER_EPOCH:09d}")  # as if killed during that write
    resumed = train(*command)
    assert resumed_step(resumed.stdout) == 4, resumed.stdout
    events = EventAccumulator(str(results))
    events.Reload()
    assert [event.step for event in events.Scalars("train_loss")] == [1, 2]
    steps = EventAccumulator(str(results / "steps"))
    steps.Reload()
    assert [event.step for event in steps.Scalars("train_loss")] == list(range(1, 2 * IRIS_STEPS_PER_EPOCH + 1))


def test_loader_workers_of_a_killed_trainer_do_not_hold_the_lock(cifar_root, tmp_path):
    """Only the trainer is SIGKILLed (the OOM killer does that): its DataLoader workers live on for a moment, but
    the results directory must be free at once, or an automatic restart would be refused."""
    results = tmp_path / "results"
    command = (*train_command("cifar10", results, cifar_root), "--data.loader=dataloader", "--data.num_workers=1")
    output = tmp_path / "killed.txt"
    with open(output, "w") as out:
        process = start_train(command, out, "record_samples=1")
        try:
            wait_until(lambda: last_step(results, process.pid) >= 2, process, output, "step 2")
            os.kill(process.pid, signal.SIGKILL)  # the trainer only, not its process group
            process.wait(timeout=TIMEOUT_S)
        finally:
            kill_process(process)
    resumed = train(*command, check=False)
    assert resumed.returncode == 0, resumed.stderr
    assert "Took over the lock" in resumed.stdout


def test_lowering_num_epochs_inside_an_unfinished_epoch_is_refused(tmp_path):
    """Ending a run in the middle of an epoch would leave model.pt out of step with history.csv."""
    results = tmp_path / "results"
    command = ("iris", results, "--device=cpu", "--num_epochs=3", "--checkpoint.every_steps=4")
    train(*command)
    shutil.rmtree(newest_checkpoint(results))  # now the newest is step 16: 4 batches into epoch 3
    result = train(*command[:3], "--num_epochs=2", *command[4:], check=False)
    assert result.returncode == 1 and "num_epochs >= 3" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
