"""bin/sweep.py: grid and TPE sweeps on Optuna, resumed after SIGKILL bitwise, trials taken over, pruning.

Every trial is a real ``bin/train.py`` process; the sweep process is killed the way a scheduler or a crash
would (its whole process group, or the sweep process alone), then the same command is run again.
"""

from __future__ import annotations

import csv
import json
import os
import random
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import PROJECT_ROOT, TIMEOUT_S, history_epochs, kill_process, read_json, run_process, start_process
from fault_helpers import assert_same_run, env_with_faults

GRID = ("--grid", "optimizer.lr=[0.02,0.1]", "--grid", "seed=[0,1]")
TRIAL_ARGS = ("--device=cpu", "--num_epochs=8", "--batch_size=4", "--checkpoint.every_steps=5")


def sweep(*args, check: bool = True) -> subprocess.CompletedProcess:
    """``python bin/sweep.py ARGS...`` to its end (one thread per trial process, as in the other tests)."""
    return run_process([sys.executable, "bin/sweep.py", *args], check=check, env=env_with_faults())


def trials_by_params(sweep_dir: Path) -> dict[tuple, Path]:
    """Every trial's folder, by its parameters (the trials' numbers depend on the order they were asked in)."""
    with open(sweep_dir / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    by_params = {(row["optimizer.lr"], row["seed"]): Path(row["run"]) for row in rows}
    assert len(by_params) == len(rows), f"a grid point was trained twice: {rows}"
    return by_params


def trial_states(sweep_dir: Path) -> list[str]:
    with open(sweep_dir / "summary.csv", newline="") as f:
        return [row["state"] for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def reference_sweep(tmp_path_factory) -> Path:
    sweep_dir = tmp_path_factory.mktemp("reference") / "sweep"
    result = sweep("iris", sweep_dir, *GRID, "--workers", "2", "--", *TRIAL_ARGS)
    assert "best: trial" in result.stdout, result.stdout
    assert trial_states(sweep_dir) == ["finished"] * 4
    return sweep_dir


def training_trials(sweep_dir: Path) -> list[Path]:
    """Trials training now: a checkpoint written, not finished."""
    return [run for run in sweep_dir.glob("trial_*")
            if list(run.glob("checkpoints/step_*")) and read_json(run / "meta.json").get("status") == "running"]  # fmt: skip


def test_a_grid_sweep_killed_at_random_moments_ends_bitwise_equal(reference_sweep, tmp_path):
    """SIGKILL of the sweep process and all its trials, twice, at random moments inside training; then the same
    command: every grid point ends exactly as in the uninterrupted sweep, and none is trained twice."""
    sweep_dir = tmp_path / "sweep"
    command = [sys.executable, "bin/sweep.py", "iris", sweep_dir, *GRID, "--workers", "2", "--", *TRIAL_ARGS]
    rng = random.Random(time.time_ns())
    for kill in range(2):
        delay = rng.uniform(0, 0.5)
        context = f"(kill {kill + 1}, {delay:.2f} s after a trial had a checkpoint)"
        process = start_process(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env_with_faults())
        deadline = time.monotonic() + TIMEOUT_S
        while not training_trials(sweep_dir) and process.poll() is None:
            assert time.monotonic() < deadline, context
            time.sleep(0.02)
        time.sleep(delay)
        kill_process(process)  # the group: the sweep and its trials
    rerun = sweep(*command[2:])
    assert "Resuming the sweep" in rerun.stdout
    assert "Traceback" not in rerun.stderr, rerun.stderr
    assert trial_states(sweep_dir) == ["finished"] * 4, rerun.stdout
    expected, got = trials_by_params(reference_sweep), trials_by_params(sweep_dir)
    assert got.keys() == expected.keys()
    for params, run in got.items():
        assert_same_run(run, expected[params], f"trial {params}")
    resumed = [run for run in got.values() if "Resuming from" in (run / "stdout.txt").read_text()]
    assert resumed, "no trial was killed inside its training: the test tested nothing"


def test_a_trial_left_running_by_a_killed_sweep_is_taken_over(reference_sweep, tmp_path):
    """SIGKILL of the sweep process alone: its trial dies with it, Optuna still holds the trial as RUNNING (the
    journal has no heartbeat), and the next sweep process resumes that trial in its folder."""
    sweep_dir = tmp_path / "sweep"
    command = [sys.executable, "bin/sweep.py", "iris", sweep_dir, *GRID, "--", *TRIAL_ARGS]
    process = start_process(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env_with_faults())
    deadline = time.monotonic() + TIMEOUT_S
    while not training_trials(sweep_dir):
        assert process.poll() is None and time.monotonic() < deadline, "the sweep ended before it could be killed"
        time.sleep(0.02)
    orphan = training_trials(sweep_dir)[0]
    os.kill(process.pid, signal.SIGKILL)  # the sweep process only; its trial must not go on training
    process.wait()
    holder = json.loads((orphan / ".lock").read_text() or "{}") if (orphan / ".lock").exists() else {}
    while holder and _alive(holder["pid"]):
        assert time.monotonic() < deadline, f"trial process {holder['pid']} outlived its sweep"
        time.sleep(0.05)
    kill_process(process)
    status = sweep("--status", sweep_dir)
    assert "running" in status.stdout, status.stdout
    rerun = sweep(*command[2:])
    number = int(orphan.name.removeprefix("trial_"))
    assert f"trial {number}: taken over" in rerun.stdout, rerun.stdout
    assert "Resuming from" in (orphan / "stdout.txt").read_text()
    assert trial_states(sweep_dir) == ["finished"] * 4, rerun.stdout
    expected = trials_by_params(reference_sweep)
    for params, run in trials_by_params(sweep_dir).items():
        assert_same_run(run, expected[params], f"trial {params}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_pruning_stops_hopeless_trials_and_says_so(tmp_path):
    """--prune: a trial worse than the median of the others at an epoch stops there, and is recorded as pruned.

    The good trials are identical (log_every_steps changes no number) and so are the hopeless ones: a tie with
    the median is not pruned, so which trials may be pruned does not depend on the order they ran in."""
    sweep_dir = tmp_path / "sweep"
    epochs = 15
    result = sweep("iris", sweep_dir, "--grid", "optimizer.lr=[0.05,1e-7]", "--grid", "log_every_steps=[50,51,52,53]",
                   "--prune", "--", "--device=cpu", f"--num_epochs={epochs}")  # fmt: skip
    with open(sweep_dir / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    pruned = [row for row in rows if row["state"] == "pruned"]
    assert pruned, result.stdout
    for row in pruned:
        assert float(row["optimizer.lr"]) == 1e-7, row  # only the hopeless ones
        run = Path(row["run"])
        assert len(history_epochs(run)) < epochs, f"{run} trained on after it was pruned"
        assert read_json(run / "loop_state.json")["stopped_early"]
        assert "Pruned by the sweep after epoch" in (run / "stdout.txt").read_text()
    assert all(row["state"] == "finished" for row in rows if float(row["optimizer.lr"]) == 0.05)
    status = sweep("--status", sweep_dir)
    assert f"{len(pruned)} pruned" in status.stdout, status.stdout
    table = run_process([sys.executable, "bin/compare.py", sweep_dir, "--per-run", "--table-only"]).stdout
    assert sum("pruned" in line for line in table.splitlines()) == len(pruned), table


def test_a_tpe_search_runs_its_trials_within_the_bounds(tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = sweep("iris", sweep_dir, "--search", "optimizer.lr=loguniform(1e-3,0.3)", "--search",
                   "batch_size=choice(8,16)", "--trials", "3", "--workers", "2", "--", "--device=cpu",
                   "--num_epochs=3")  # fmt: skip
    with open(sweep_dir / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["state"] for row in rows] == ["finished"] * 3
    for row in rows:
        assert 1e-3 <= float(row["optimizer.lr"]) <= 0.3 and row["batch_size"] in ("8", "16")
        config = read_json(Path(row["run"]) / "config.json")
        assert config["optimizer"]["lr"] == float(row["optimizer.lr"]) and config["num_epochs"] == 3
    assert "best: trial" in result.stdout
    spec = read_json(sweep_dir / "sweep.json")
    assert spec["spec"]["search"] == {"optimizer.lr": "loguniform(1e-3,0.3)", "batch_size": "choice(8,16)"}
    again = sweep("iris", sweep_dir, "--search", "optimizer.lr=loguniform(1e-3,0.3)", "--search",
                  "batch_size=choice(8,16)", "--trials", "3", "--", "--device=cpu", "--num_epochs=3")  # fmt: skip
    assert "trial 3" not in again.stdout and len(list(sweep_dir.glob("trial_*"))) == 3, "finished trials ran again"


def test_each_trial_can_be_a_ddp_run_of_two_processes(tmp_path):
    """--nproc_per_node 2: every trial is a torchrun job of two processes (its pruning reporter on rank 0)."""
    sweep_dir = tmp_path / "sweep"
    sweep("iris", sweep_dir, "--grid", "seed=[0,1]", "--nproc_per_node", "2", "--prune", "--", "--device=cpu",
          "--num_epochs=3", "--batch_size=16")  # fmt: skip
    assert trial_states(sweep_dir) == ["finished"] * 2
    for run in sweep_dir.glob("trial_*"):
        meta = read_json(run / "meta.json")
        assert meta["world_size"] == 2 and meta["launcher"] == "torchrun", meta
        assert (run / "stdout.txt").read_text().count("epoch 1/") == 1, "only rank 0 writes"


@pytest.mark.parametrize(
    "args, message",
    [
        (("--grid", "optimizer.lr=[0.1]", "--search", "seed=int(0,3)", "--trials", "2"), "do not mix"),
        (("--search", "optimizer.lr=normal(0,1)", "--trials", "2"), "use uniform(a,b), loguniform(a,b)"),
        (("--search", "optimizer.lr=loguniform(0,1)", "--trials", "2"), "use uniform(a,b)"),
        (("--search", "optimizer.lr=uniform(0.1,0.2)"), "--trials=None"),
        (("--grid", "lr=[0.1,0.2]"), "did you mean 'optimizer.lr'"),
        (("--grid", "batch_size=[16,0]"), "batch_size=0 must be >= 1"),
        (("--grid", "optimizer.lr=0.1"), "give a list"),
        (("--grid", "seed=[0,1]", "--objective", "valid_f1"), "--objective=valid_f1 is not a column"),
        (("--grid", "seed=[0,1]", "--trials", "3"), "1..2 (the grid's points)"),
        (("--grid", "seed=[0,1]", "--slurm", "--bogus 1"), "bin/submit.py's options"),
        (("--grid", "seed=[0,1]", "--", "--optimizer.nme=Adam"), "did you mean 'optimizer.name'"),
    ],
)
def test_bad_commands_are_one_line_and_write_nothing(tmp_path, args, message):
    sweep_dir = tmp_path / "sweep"
    result = sweep("iris", sweep_dir, *args, check=False)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert not sweep_dir.exists()


def test_another_sweep_in_the_same_folder_is_refused(reference_sweep):
    summary = (reference_sweep / "summary.csv").read_bytes()
    result = sweep("iris", reference_sweep, "--grid", "optimizer.lr=[0.3]", "--", *TRIAL_ARGS, check=False)
    assert result.returncode == 2 and "holds another sweep" in result.stderr, result.stderr
    assert (reference_sweep / "summary.csv").read_bytes() == summary


def test_the_readme_sweep_commands_run(tmp_path):
    """The readme's grid and TPE commands, as written, on a shorter budget (2 epochs, at most 2 trials)."""
    lines = (PROJECT_ROOT / "readme.md").read_text().replace("\\\n", " ").splitlines()
    commands = [shlex.split(line, comments=True) for line in lines if line.startswith("python bin/sweep.py iris ")]
    assert len(commands) == 2, "the readme's sweep examples changed: update this test"
    for words in commands:
        words = [str(tmp_path / word) if word.startswith("runs/") else word for word in words[2:]]
        if "--trials" in words:
            words[words.index("--trials") + 1] = "2"
        words += [] if "--" in words else ["--"]
        sweep_dir = Path(words[1])
        result = sweep(*words, "--num_epochs=2", "--device=cpu")
        assert "best: trial" in result.stdout, result.stdout
        assert all(state in ("finished", "pruned") for state in trial_states(sweep_dir)), result.stdout
