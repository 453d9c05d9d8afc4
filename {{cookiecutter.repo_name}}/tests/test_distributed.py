"""Data parallelism with torchrun (gloo on the CPU): parity with one process, and exact resume after SIGKILL of
the agent, a worker or the whole group, by a rerun or by torchrun's own restarts; two agents as two nodes."""

import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TIMEOUT_S, kill_process, read_history, read_json, start_process
from fault_helpers import (
    IRIS_ARGS,
    SLOW_CHECKPOINT_S,
    assert_same_run,
    env_with_faults,
    shared,
    tmp_folders,
    train,
)

pytest.importorskip("torch.distributed")

TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]
RANKS = 2
# 96 training samples in batches of 16: each of the 2 ranks takes 8 of every batch.
DDP_ARGS = (*IRIS_ARGS, "--batch_size=16")


def torchrun(*launch: str, script: str = "tests/faulty_train.py") -> list[str]:
    return [*TORCHRUN, *launch, script]


def standalone(results: Path, *extra: str, restarts: int = 0) -> list[str]:
    launch = ("--standalone", f"--nproc_per_node={RANKS}", f"--max-restarts={restarts}")
    return [*torchrun(*launch), "iris", str(results), *DDP_ARGS, *extra]


def run(command: list[str], faults: str = "", check: bool = True) -> subprocess.CompletedProcess:
    process = start_process(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env_with_faults(faults))  # fmt: skip
    try:
        out, err = process.communicate(timeout=TIMEOUT_S)
    finally:
        kill_process(process)
    if check:
        assert process.returncode == 0, f"{' '.join(command)} exited with {process.returncode}\n{out}\n{err}"
    return subprocess.CompletedProcess(command, process.returncode, out, err)


def workers_of(results: Path) -> list[int]:
    """Pids of the training processes (not agents) training in ``results``."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"tests/faulty_train.py" in cmdline and str(results).encode() in cmdline and b"-m" not in cmdline:
            found.append(int(proc.name))
    return found


def newest_step(results: Path) -> int:
    steps = [int(p.name.split("_")[1]) for p in (results / "checkpoints").glob("step_*")] if results.exists() else []
    return max(steps, default=0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ddp_reference(tmp_path_factory) -> Path:
    """An uninterrupted 2-rank run."""

    def build(folder: Path) -> dict:
        run(standalone(folder / "results"))
        return {"results": str(folder / "results")}

    return Path(shared(tmp_path_factory, "iris_ddp_reference", build)["results"])


def test_two_ranks_match_one_process_and_only_rank_zero_writes(ddp_reference, tmp_path):
    alone = tmp_path / "alone"
    train("iris", alone, *DDP_ARGS)
    rows, expected = read_history(ddp_reference), read_history(alone)
    assert [row["epoch"] for row in rows] == [row["epoch"] for row in expected]
    for row, one in zip(rows, expected, strict=True):
        for column in ("train_loss", "train_acc", "valid_loss", "valid_acc"):
            assert float(row[column]) == pytest.approx(float(one[column]), rel=1e-4), (row["epoch"], column)
    meta = read_json(ddp_reference / "meta.json")
    assert meta["world_size"] == RANKS and meta["backend"] == "gloo" and meta["launcher"] == "torchrun"
    assert [rank["rank"] for rank in meta["ranks"]] == [0, 1] and all(r["device"] == "cpu" for r in meta["ranks"])
    stdout = (ddp_reference / "stdout.txt").read_text()
    assert stdout.count("epoch 1/") == 1, "only rank 0 prints"
    assert len(list(ddp_reference.glob("events.out.tfevents.*"))) == 1


@pytest.mark.parametrize("victim", ["group", "agent", "worker", "group_in_write"])
def test_sigkill_then_the_same_command_ends_bitwise_equal(ddp_reference, tmp_path, victim):
    """SIGKILL at a random step (or inside a checkpoint write), then run the same torchrun command again."""
    results = tmp_path / "results"
    rng = random.Random(f"{victim}-{time.time_ns()}")
    target = rng.randrange(4, 100)
    context = f"(victim {victim}, after step {target})"
    in_write = victim == "group_in_write"
    faults = f"slow_checkpoint_s={SLOW_CHECKPOINT_S}" if in_write else ""
    out = open(tmp_path / "killed.txt", "w")
    agent = start_process(standalone(results), stdout=out, stderr=subprocess.STDOUT, env=env_with_faults(faults))
    deadline = time.monotonic() + TIMEOUT_S
    while not (newest_step(results) >= target and (not in_write or tmp_folders(results))):
        assert agent.poll() is None, (tmp_path / "killed.txt").read_text() + context
        assert time.monotonic() < deadline, context
        time.sleep(0.01)
    workers = workers_of(results)
    if victim == "agent":
        agent.send_signal(signal.SIGKILL)  # the workers, in sessions of their own, must die with it
    elif victim == "worker":
        os.kill(rng.choice(workers), signal.SIGKILL)
    else:
        kill_process(agent)  # the agent's whole process group: agent and workers
    agent.wait(timeout=TIMEOUT_S)
    while workers_of(results):
        assert time.monotonic() < deadline, f"workers outlived the kill {context}"
        time.sleep(0.05)
    rerun = run(standalone(results))
    assert "Resuming from checkpoints/step_" in (results / "stdout.txt").read_text(), context
    assert "Traceback" not in rerun.stderr, rerun.stderr
    assert_same_run(results, ddp_reference, context)


def test_torchrun_restarts_resume_bitwise(ddp_reference, tmp_path):
    """--max-restarts=1: a worker killed mid-run is restarted with the others, and they resume in place."""
    results = tmp_path / "results"
    out = open(tmp_path / "out.txt", "w")
    agent = start_process(standalone(results, restarts=1), stdout=out, stderr=subprocess.STDOUT,
                          env=env_with_faults())  # fmt: skip
    deadline = time.monotonic() + TIMEOUT_S
    while newest_step(results) < 30:
        assert agent.poll() is None and time.monotonic() < deadline, (tmp_path / "out.txt").read_text()
        time.sleep(0.01)
    os.kill(max(workers_of(results)), signal.SIGKILL)
    assert agent.wait(timeout=TIMEOUT_S) == 0, (tmp_path / "out.txt").read_text()
    sessions = read_json(results / "meta.json")["sessions"]
    assert [s["status"] for s in sessions] == ["failed", "finished"], sessions
    assert "another training process stopped" in sessions[0]["reason"] or "RuntimeError" in sessions[0]["reason"]
    assert_same_run(results, ddp_reference)


def test_two_agents_as_two_nodes_match_the_standalone_run(ddp_reference, tmp_path):
    """Two torchrun agents meeting through a c10d rendezvous (as two machines would) train one run."""
    results, port = tmp_path / "results", free_port()
    launch = ("--nnodes=2", "--nproc_per_node=1", "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}",
              f"--rdzv-id=test{port}")  # fmt: skip
    command = [*torchrun(*launch), "iris", str(results), *DDP_ARGS]
    agents = [start_process(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env_with_faults()) for _ in range(2)]  # fmt: skip
    for agent in agents:
        out, _ = agent.communicate(timeout=TIMEOUT_S)
        assert agent.returncode == 0, out
    assert read_json(results / "meta.json")["world_size"] == 2
    assert_same_run(results, ddp_reference)


def test_another_number_of_processes_is_refused_with_one_line(ddp_reference, tmp_path):
    results = tmp_path / "results"
    run(standalone(results, "--num_epochs=1"))
    before = sorted(p.name for p in (results / "checkpoints").iterdir())
    alone = train("iris", results, *DDP_ARGS, check=False)
    assert alone.returncode == 1, alone.stderr
    (line,) = alone.stderr.strip().splitlines()
    assert "written by 2 training process(es), and this run has 1" in line, line
    assert sorted(p.name for p in (results / "checkpoints").iterdir()) == before


def test_a_batch_that_does_not_divide_is_one_line_and_writes_nothing(tmp_path):
    results = tmp_path / "results"
    failed = run(standalone(results, "--batch_size=15"), check=False)
    assert failed.returncode != 0
    lines = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
    assert lines == ["error: batch_size=15 is the batch of all 2 processes together, so it must divide by 2: "
                     "use 14, for example"], failed.stderr  # fmt: skip
    assert not results.exists()


def test_a_folder_refused_on_rank_zero_stops_every_rank_with_one_line(tmp_path):
    """Only rank 0 reads the folder: its refusal (here a changed config) must stop the others too, not leave them
    waiting in the network's first broadcast."""
    results = tmp_path / "results"
    run(standalone(results, "--num_epochs=1"))
    refused = run(standalone(results, "--num_epochs=1", "--optimizer.lr=0.5"), check=False)
    assert refused.returncode != 0
    lines = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "holds a run with another config" in lines[0], refused.stderr
