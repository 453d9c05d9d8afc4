"""Resume is exact: a run SIGKILLed at random moments, or stopped by a signal, and restarted with the same command
ends *bitwise* as the run that never stopped: weights, optimizer, RNGs, history, data order, TensorBoard.  And one
process at a time owns a results directory: a second one is refused, a lock left by a killed run is taken over.

Real processes, real signals, real kills, no mocks; faults come from tests/faulty_train.py (see fault_helpers.py).
The killed runs are built once per test session and shared by the tests that look at them.
"""

from __future__ import annotations

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

import pytest
from conftest import TIMEOUT_S, kill_process, read_history, read_json
from fault_helpers import (
    CIFAR_EPOCHS,
    CIFAR_STEPS_PER_EPOCH,
    IRIS_EPOCHS,
    IRIS_STEPS_PER_EPOCH,
    assert_same_run,
    last_step,
    newest_checkpoint,
    recorded,
    resumed_step,
    shared,
    signal_at_step,
    start_train,
    tmp_folders,
    train,
    train_command,
    wait_until,
)
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

SLOW_CHECKPOINT_S = 0.1  # a checkpoint write that lasts long enough to be killed in the middle


# -- the killed runs --------------------------------------------------------------------------------------


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

    A kill outside a write pauses the run at step ``target`` (``pause_at_step``) and lands there: Iris runs
    end milliseconds after any step, sooner than a busy machine may schedule this process again.  The kills
    inside a write cover a checkpoint in the middle of its files.
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
def cifar10_killed(tmp_path_factory, tiny_cifar) -> dict:
    """Tiny CIFAR-10 with augmentation, SIGKILLed twice (first inside a checkpoint write)."""
    rng = random.Random(1234)
    total = CIFAR_EPOCHS * CIFAR_STEPS_PER_EPOCH
    first = rng.randrange(1, 20)
    second = rng.randrange(first + 4, total - 15)
    kills = [(first, True), (second, False)]

    def build(folder: Path) -> dict:
        command = train_command("cifar10", folder / "results", tiny_cifar)
        return {**kill_and_resume(folder, command, kills), "kills": kills}

    return shared(tmp_path_factory, "cifar10_killed", build)


@pytest.fixture(params=["iris", "cifar10"])
def killed_and_reference(request) -> tuple[dict, Path, Path]:
    killed = request.getfixturevalue(f"{request.param}_killed")  # first: another xdist worker may build the reference
    reference = request.getfixturevalue(f"{request.param}_reference")
    return killed, Path(killed["results"]), reference


# -- SIGKILL at random moments --------------------------------------------------------------------------


def test_run_killed_at_random_moments_ends_bitwise_as_the_uninterrupted_one(killed_and_reference):
    """Killed mid-epoch between steps and inside checkpoint writes, then rerun: same weights (best_model.pt too),
    optimizer, RNG, loop state, history."""
    killed, results, reference = killed_and_reference
    sessions = killed["sessions"]
    moments = describe(sessions)
    loop = read_json(reference / "loop_state.json")
    assert loop["best_epoch"] < loop["epoch"], "the best epoch must not be the last, or best_model.pt is model.pt"
    assert any(s.get("during_write") and s["new_tmp_folders"] for s in sessions), f"no kill inside a write; {moments}"
    assert all(s["killed_at_step"] > s["resumed_from"] for s in sessions[:-1]), f"a session did no step; {moments}"
    assert_same_run(results, reference, moments)
    meta = read_json(results / "meta.json")
    assert [s["status"] for s in meta["sessions"]] == ["died"] * (len(sessions) - 1) + ["finished"], moments


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


# -- TensorBoard after kills ------------------------------------------------------------------------------------


def scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """What TensorBoard shows of the run in ``folder``: ``tag -> [(step, value), ...]``, after the purges that a
    resumed session's ``purge_step`` asks for."""
    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(event.step, event.value) for event in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_tensorboard_has_every_epoch_and_step_once_after_kills(killed_and_reference):
    """TensorBoard shows one point per logged step and one per epoch (at the epoch's last optimisation step, for
    every history column), each once, with the values of the uninterrupted run."""
    killed, results, reference = killed_and_reference
    moments = describe(killed["sessions"])
    got, expected = scalars(results), scalars(reference)
    assert sorted(got) == sorted(expected), moments
    for tag, points in expected.items():
        if tag == "epoch/epoch_time_s":  # a duration: only its steps can match
            assert [step for step, _ in got[tag]] == [step for step, _ in points], f"{tag}; {moments}"
        else:
            assert got[tag] == points, f"{tag}; {moments}"
    history = read_history(results)
    total_steps = read_json(results / "loop_state.json")["global_step"]
    log_every = read_json(results / "config.json")["log_every_steps"]
    steps_per_epoch = total_steps // len(history)
    epoch_ends = [epoch * steps_per_epoch for epoch in range(1, len(history) + 1)]
    assert [step for step, _ in got["step/train_loss"]] == list(range(log_every, total_steps + 1, log_every)), moments
    for column in history[0]:
        if column not in ("epoch", "time"):
            tag = f"epoch/{column}"
            assert tag in got, f"history.csv's {column} is not in TensorBoard; {moments}"
            assert [step for step, _ in got[tag]] == epoch_ends, f"{tag}; {moments}"
            values = [float(row[column]) for row in history]
            assert [value for _, value in got[tag]] == pytest.approx(values, rel=1e-6), f"{tag}; {moments}"


def test_epoch_events_are_not_repeated_when_the_first_epoch_end_checkpoint_is_lost(tmp_path):
    """Killed after epoch 1's scalars were written but before its checkpoint: the resumed run starts from a
    mid-epoch checkpoint of epoch 1 and must not log epoch 1, or the steps after that checkpoint, twice
    (``purge_step`` also on the first epoch)."""
    results = tmp_path / "results"
    command = ("iris", results, "--device=cpu", "--num_epochs=2", "--checkpoint.every_steps=4", "--log_every_steps=1")
    train(*command[:3], "--num_epochs=1", *command[4:])
    shutil.rmtree(results / "checkpoints" / f"step_{IRIS_STEPS_PER_EPOCH:09d}")  # as if killed during that write
    resumed = train(*command)
    assert resumed_step(resumed.stdout) == 4, resumed.stdout
    got = scalars(results)
    assert [step for step, _ in got["epoch/train_loss"]] == [IRIS_STEPS_PER_EPOCH, 2 * IRIS_STEPS_PER_EPOCH]
    assert [step for step, _ in got["step/train_loss"]] == list(range(1, 2 * IRIS_STEPS_PER_EPOCH + 1))
    losses = [float(row["train_loss"]) for row in read_history(results)]
    assert [value for _, value in got["epoch/train_loss"]] == pytest.approx(losses, rel=1e-6)


# -- stop signals -------------------------------------------------------------------------------------------


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


def test_loader_workers_of_a_killed_trainer_do_not_hold_the_lock(tiny_cifar, tmp_path):
    """Only the trainer is SIGKILLed (the OOM killer does that): its DataLoader workers live on for a moment, but
    the results directory must be free at once, or an automatic restart would be refused."""
    results = tmp_path / "results"
    command = (*train_command("cifar10", results, tiny_cifar), "--data.loader=dataloader", "--data.num_workers=1")
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
