"""Stop signals sent to the whole process group, at any moment of a run: real processes, real signals, no mocks.

A terminal (Ctrl-C), SLURM and torchrun signal every process of a job, DataLoader workers included.  The promise
under test: whenever SIGTERM, SIGINT or SIGUSR1 reaches the group of ``bin/train.py --data.loader=dataloader``
(start-up imports, taking the folder, building, workers starting, training steps, checkpoint writes, validation's
own workers starting, the end), the trainer exits 128+N after a checkpoint, with no traceback and no worker left
behind, and the same command run again ends bitwise as a run that was never stopped.  A second Ctrl-C exits 130
without a new checkpoint.  And a process using ``DataLoaderBatches`` always exits: at the end of a script that
left an epoch half-read, on SIGTERM, and its workers follow a trainer killed with SIGKILL.

Every moment comes from a seeded generator and is printed, with what the run was doing then, in the assertion
messages.  The uninterrupted reference run is conftest.py's ``cifar10_reference``, the in-memory run (the DataLoader
path trains bit for bit as the in-memory path does: test_speed_options.py).
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
from conftest import PROJECT_ROOT, TIMEOUT_S, kill_process, read_history, read_json, start_process, start_script
from fault_helpers import (
    CIFAR_EPOCHS,
    CIFAR_STEPS_PER_EPOCH,
    assert_same_run,
    env_with_faults,
    last_step,
    load,
    newest_checkpoint,
    tmp_folders,
    train,
    train_command,
)

LOADER_ARGS = ("--data.loader=dataloader", "--data.num_workers=2")
TOTAL_STEPS = CIFAR_EPOCHS * CIFAR_STEPS_PER_EPOCH
GROUP_EXIT_S = 60  # workers must be gone this long after their trainer (torch's watchdog looks every 5 s)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="watches processes through /proc")


# -- the command ----------------------------------------------------------------------------------------------


def loader_command(results: Path, cifar_root: Path) -> tuple:
    return (*train_command("cifar10", results, cifar_root), *LOADER_ARGS)


# -- processes as /proc shows them ----------------------------------------------------------------------------


def proc_status(pid: int) -> dict[str, str] | None:
    """The fields of /proc/PID/status; None once the process is gone or a zombie."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return None
    fields = dict(line.split(":\t", 1) for line in lines if ":\t" in line)
    return None if fields.get("State", "").startswith(("Z", "X")) else fields


def has_signal(mask: str, signum: int) -> bool:
    return bool(int(mask, 16) >> (signum - 1) & 1)


def disposition(pid: int, signum: int) -> str:
    """What ``pid`` (its main thread) does with ``signum`` now: "ignores", "blocks", "catches", "default" or "gone"."""
    status = proc_status(pid)
    if status is None:
        return "gone"
    for field, name in (("SigIgn", "ignores"), ("SigBlk", "blocks"), ("SigCgt", "catches")):
        if has_signal(status[field], signum):
            return name
    return "default"


def catches_all(pid: int) -> bool:
    """Has ``pid`` a handler for every stop signal (``signals.catch`` ran)?"""
    status = proc_status(pid)
    return status is not None and all(has_signal(status["SigCgt"], signum) for signum in STOP_SIGNALS)


def stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state, ppid, pgrp, ...)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid``."""
    members = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            fields = stat_fields(int(name))
            if fields and int(fields[2]) == pgid and fields[0] not in "ZX":
                members.append(int(name))
    return sorted(members)


def wait_for_empty_group(pgid: int, timeout: float = GROUP_EXIT_S) -> list[int]:
    """Wait until no process of group ``pgid`` is alive; the ones still alive after ``timeout`` (then SIGKILLed)."""
    deadline = time.monotonic() + timeout
    while (left := group_members(pgid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    if left:
        try:
            os.killpg(pgid, signal.SIGKILL)  # no process may outlive the test
        except OSError:
            pass
    return left


class Watcher:
    """What a running trainer is doing, seen from outside: its workers, its steps, its results directory."""

    def __init__(self, process: subprocess.Popen, results: Path):
        self.process, self.results = process, results
        self._cmdline = b""
        self.start = time.monotonic()
        self.workers: list[int] = []  # every worker process seen, in order of appearance
        self._others: set[int] = set()  # pids known not to be workers

    def poll_workers(self) -> int:
        """Look for new worker processes; the number seen so far.

        Workers are forked children (the trainer's command line) that appear once meta.json says the session
        runs: before that the trainer also starts programs (git), which look the same until they exec.
        """
        if not (self.results / "meta.json").is_file():
            return 0
        if not self._cmdline:  # read now: just after the exec it is still empty
            self._cmdline = Path(f"/proc/{self.process.pid}/cmdline").read_bytes()
        for name in os.listdir("/proc"):
            if not name.isdigit() or (pid := int(name)) in self._others or pid in self.workers:
                continue
            fields = stat_fields(pid)
            if fields is None or pid == self.process.pid:
                continue
            try:
                forked = (
                    int(fields[2]) == self.process.pid and Path(f"/proc/{pid}/cmdline").read_bytes() == self._cmdline
                )
            except OSError:
                continue
            if forked:
                self.workers.append(pid)
            elif int(fields[2]) != self.process.pid:  # another group: never one of ours
                self._others.add(pid)
        return len(self.workers)

    def wait_for(self, condition: Callable[[], bool], what: str, interval: float = 0.005) -> None:
        deadline = time.monotonic() + TIMEOUT_S
        while not condition():
            if self.process.poll() is not None:
                raise AssertionError(f"the run ended (exit {self.process.returncode}) before {what}")
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(interval)

    def moment(self, signum: int) -> dict:
        """Where the run is now (for the messages), and whether the trainer and each worker catch ``signum``."""
        meta = self.results / "meta.json"
        try:
            status = read_json(meta)["status"] if meta.is_file() else None
        except (ValueError, OSError):  # being replaced this instant
            status = "?"
        return {
            "t_s": round(time.monotonic() - self.start, 3),
            "step": last_step(self.results, self.process.pid),
            "folder": self.results.is_dir(),
            "meta": status,
            "trainer": disposition(self.process.pid, signum),
            "workers": {pid: worker_state(pid) for pid in self.workers},
        }

    def worker_in(self, stage: str, first: int) -> bool | None:
        """Is a worker from the ``first``-th on (1: the first) in ``stage`` now?  None once all four have passed it."""
        self.poll_workers()
        states = [worker_state(pid) for pid in self.workers[first - 1 :]]
        if stage in states:
            return True
        later = WORKER_STAGES[WORKER_STAGES.index(stage) + 1 :]
        return None if len(self.workers) == 4 and all(state in later for state in states) else False


WORKER_STAGES = ("forked", "armed", "ready", "gone")


def worker_state(pid: int) -> str:
    """Where a DataLoader worker is in its start-up: "forked" (the stop signals blocked, inherited from the trainer),
    "armed" (torch's own SIGTERM handler installed, which kills it for a SIGTERM its parent did not send: the
    window of the bug), "ready" (worker_init_fn ran: SIGINT ignored), or "gone"."""
    status = proc_status(pid)
    if status is None:
        return "gone"
    if has_signal(status["SigIgn"], signal.SIGINT):
        return "ready"
    return "armed" if has_signal(status["SigCgt"], signal.SIGBUS) else "forked"  # torch installs SIGBUS's with it


# -- group signals at seeded random moments --------------------------------------------------------------------


@dataclass(frozen=True)
class Moment:
    """Send ``signum`` to the group ``delay_s`` after ``anchor`` (``count``: which worker, or which step)."""

    # "handlers" (installed), "folder" (created), "forked"/"armed" (the count-th worker or a later one is in that
    # stage of its start-up), "step" (count recorded), "end" (the last step recorded), "finished" (in meta.json)
    anchor: str
    count: int
    delay_s: float
    signum: int

    def __str__(self) -> str:
        after = {
            "forked": f"worker {self.count}+ forked", "armed": f"worker {self.count}+ armed", "step": f"step {self.count}"
        }.get(self.anchor, self.anchor)  # fmt: skip
        return f"{signal.Signals(self.signum).name} {self.delay_s * 1000:.0f}ms after {after}"


def seeded_moments() -> list[Moment]:
    """Moments over a run's whole life, half of them as a worker starts: the train loader's two (forked by the
    first epoch), then the validation loader's two (forked at its end).  Each stop signal is among them."""
    rng = random.Random(1234)
    term, ctrl_c, usr1 = signal.SIGTERM, signal.SIGINT, signal.SIGUSR1
    return [
        Moment("handlers", 0, rng.uniform(0, 2.5), ctrl_c),  # start-up imports
        Moment("folder", 0, rng.uniform(0, 0.3), usr1),  # taking the folder, building
        Moment("forked", 1, 0.0, term),  # a worker just forked
        Moment("armed", 1, 0.0, term),  # torch's SIGTERM handler in place, worker_init_fn not run yet
        Moment("armed", 2, rng.uniform(0, 0.003), usr1),
        Moment("armed", 3, 0.0, term),  # validation's workers
        Moment("step", rng.randrange(2, TOTAL_STEPS), rng.uniform(0, 0.05), term),  # steps, checkpoint writes
        Moment("end", 0, rng.uniform(0, 0.1), term),  # the last validation and checkpoint
        Moment("finished", 0, rng.uniform(0, 0.05), term),  # meta.json says finished: workers end, clean-up
        Moment("end", 0, rng.uniform(0.5, 2.5), ctrl_c),  # exiting
    ]


def signal_group_at(moment: Moment, command: tuple, output: Path) -> tuple[subprocess.Popen, dict, dict]:
    """Start ``command``, signal its process group at ``moment``; the process (ended), where it was, and after."""
    results = command[1]
    with open(output.with_suffix(".out"), "w") as out, open(output.with_suffix(".err"), "w") as err:
        process = start_script(
            "tests/faulty_train.py", *command, stdout=out, stderr=err, env=env_with_faults("record_samples=1")
        )
        try:
            watcher = Watcher(process, results)
            watcher.wait_for(lambda: catches_all(process.pid), "the stop signal handlers", interval=0.001)
            if moment.anchor == "folder":
                watcher.wait_for(results.is_dir, "the results folder")
            elif moment.anchor in ("forked", "armed"):
                # Looked for often only once due (a look costs a millisecond): the train loader's workers start after
                # meta.json is written, the validation loader's at the first epoch end.
                due = CIFAR_STEPS_PER_EPOCH if moment.count > 2 else 0
                watcher.wait_for(lambda: (results / "meta.json").is_file(), "meta.json")
                watcher.wait_for(lambda: last_step(results, process.pid) >= due, f"step {due}")
                # A stage lasts milliseconds: if every worker passed it unseen, the signal goes now (and says so).
                in_stage = lambda: watcher.worker_in(moment.anchor, moment.count) is not False  # noqa: E731
                watcher.wait_for(in_stage, str(moment), interval=0.0002)
            elif moment.anchor == "finished":
                watcher.wait_for(lambda: watcher.moment(moment.signum)["meta"] == "finished", "the finish")
            elif moment.anchor in ("step", "end"):
                step = moment.count if moment.anchor == "step" else TOTAL_STEPS
                watcher.wait_for(lambda: last_step(results, process.pid) >= step, f"step {step}")
            if moment.delay_s:
                time.sleep(moment.delay_s)
            watcher.poll_workers()
            before = watcher.moment(moment.signum)
            os.killpg(process.pid, moment.signum)
            after = {"trainer": disposition(process.pid, moment.signum)}
            process.wait(timeout=TIMEOUT_S)
            after["left_in_group"] = wait_for_empty_group(process.pid)
        finally:
            kill_process(process)
    return process, before, after


def reason_step(reason: str) -> int | None:
    found = re.search(r"\(step (\d+)\)", reason or "")
    return int(found.group(1)) if found else None


MOMENTS = seeded_moments()


@pytest.mark.parametrize("moment", MOMENTS, ids=str)
def test_group_signal_at_any_moment_ends_in_a_checkpoint_and_128_plus_n(
    moment, tiny_cifar, cifar10_reference, tmp_path
):
    """The whole process group gets a stop signal at a seeded moment: exit 128+N, no traceback, no worker killed or
    left behind, meta.json interrupted (or finished), and the same command run again ends as the reference."""
    results = tmp_path / "results"
    command = loader_command(results, tiny_cifar)
    process, before, after = signal_group_at(moment, command, tmp_path / "stopped")
    stderr = (tmp_path / "stopped.err").read_text()
    context = f"({moment}; then: {before}; after: {after}; exit {process.returncode})\n--- stderr ---\n{stderr}"
    print(f"{moment}: {before}; after: {after}; exit {process.returncode}")  # shown by pytest -rP
    candidates = list(before["workers"].values())[moment.count - 1 :]
    if moment.anchor in ("forked", "armed") and moment.anchor not in candidates:
        print(f"note: {moment}: every worker passed that stage unseen; the signal came later")
    code = 128 + moment.signum
    if before["trainer"] in ("gone", "ignores"):  # exited, or exiting with its code decided: too late to count
        print(f"note: {moment}: the trainer had already exited or was exiting ({before['trainer']})")
        assert process.returncode == 0, context
    elif after["trainer"] in ("gone", "ignores"):  # began to exit meanwhile: either outcome is right
        assert process.returncode in (0, code), context
    else:
        assert process.returncode == code, context
    assert "Traceback" not in stderr and "killed by signal" not in stderr, context
    assert "DataLoader worker" not in stderr, context
    assert after["left_in_group"] == [], f"worker processes outlived the trainer; {context}"
    if not results.exists():  # stopped before it took the folder: nothing to resume
        assert "stopped before training started" in stderr, context
        return
    assert (results / "meta.json").is_file(), f"a folder without meta.json was left; {context}"
    meta = read_json(results / "meta.json")
    if meta["status"] == "finished":  # only a run whose last epoch was done
        assert len(read_history(results)) == CIFAR_EPOCHS, context
    else:
        assert meta["status"] == "interrupted", context
        assert meta["reason"].startswith(signal.Signals(moment.signum).name), context
        step = reason_step(meta["reason"])
        if step:  # the checkpoint the reason names is the newest one, and it loads
            newest = newest_checkpoint(results)
            assert read_json(newest / "loop_state.json")["global_step"] == step, context
            assert load(newest / "model.pt") and load(newest / "state.pt"), context
    assert tmp_folders(results) == [], context
    if meta["status"] != "finished":  # (a finished run has nothing left to do)
        before_any_step = meta["reason"].endswith("stopped before the first step")  # then no checkpoint to resume
        if before_any_step:
            assert not list(results.glob("checkpoints/step_*")), context
        rerun = train(*command)
        assert ("Resuming from" in rerun.stdout) != before_any_step, f"{meta['reason']}\n{rerun.stdout}"
    assert_same_run(results, cifar10_reference, context)


def test_the_moments_include_workers_starting_and_every_signal():
    """The seeded plan covers the workers' start-up (train and validation loaders) and each stop signal."""
    assert {m.count for m in MOMENTS if m.anchor in ("forked", "armed")} >= {1, 3}
    assert {m.signum for m in MOMENTS} == set(STOP_SIGNALS)
    assert {m.anchor for m in MOMENTS} == {"handlers", "folder", "forked", "armed", "step", "end", "finished"}


# -- a second Ctrl-C ------------------------------------------------------------------------------------------


def wait_until_delivered(pid: int, signum: int) -> None:
    """Wait until ``signum`` sent to ``pid`` is no longer pending (a thread took it)."""
    deadline = time.monotonic() + TIMEOUT_S
    while (status := proc_status(pid)) and (
        has_signal(status["ShdPnd"], signum) or has_signal(status["SigPnd"], signum)
    ):
        assert time.monotonic() < deadline, "the signal was never delivered"
        time.sleep(0.001)


def test_second_ctrl_c_to_the_group_exits_130_without_a_new_checkpoint(tiny_cifar, cifar10_reference, tmp_path):
    """Ctrl-C twice (to the whole group) while the run waits before a seeded step: exit 130 at once, no checkpoint
    of that step, the newest checkpoint complete, no worker left; the same command then ends as the reference."""
    step = random.Random(1234).randrange(4, TOTAL_STEPS - 10)
    results = tmp_path / "results"
    command = loader_command(results, tiny_cifar)
    output = tmp_path / "stopped.txt"
    with open(output, "w") as out:
        process = start_script(
            "tests/faulty_train.py", *command, stdout=out, stderr=subprocess.STDOUT,
            env=env_with_faults(f"record_samples=1,pause_at_step={step}"),
        )  # fmt: skip
        try:
            watcher = Watcher(process, results)
            watcher.wait_for(lambda: last_step(results, process.pid) >= step, f"step {step}")  # it sleeps there now
            os.killpg(process.pid, signal.SIGINT)
            wait_until_delivered(process.pid, signal.SIGINT)
            time.sleep(0.2)  # for its handler to run (two signals before it runs count as one)
            os.killpg(process.pid, signal.SIGINT)
            process.wait(timeout=TIMEOUT_S)
            left = wait_for_empty_group(process.pid)
        finally:
            kill_process(process)
    context = f"(Ctrl-C twice while paused before step {step})\n{output.read_text()}"
    assert process.returncode == 128 + signal.SIGINT, context
    assert "Traceback" not in output.read_text() and "DataLoader worker" not in output.read_text(), context
    assert left == [], context
    meta = read_json(results / "meta.json")
    assert meta["status"] == "interrupted" and meta["reason"] == "KeyboardInterrupt", context
    newest = newest_checkpoint(results)
    saved = read_json(newest / "loop_state.json")["global_step"]
    assert saved == int(newest.name.split("_")[1]) < step, f"a checkpoint of the stop was written; {context}"
    assert load(newest / "model.pt") and load(newest / "state.pt"), context
    assert tmp_folders(results) == [], context
    rerun = train(*command)
    assert f"Resuming from checkpoints/{newest.name}" in rerun.stdout, rerun.stdout
    assert_same_run(results, cifar10_reference, context)


# -- a process with DataLoaderBatches always exits ---------------------------------------------------------------


HALF_READ_EPOCH = """
import os, signal, sys, time
sys.path.insert(0, {root!r})
import torch
from {{ cookiecutter.proj_name }}.engine.data import DataLoaderBatches

if sys.argv[1] == "handler":  # a script that exits on SIGTERM through Python's clean-up
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
dataset = torch.utils.data.TensorDataset(torch.arange(4000.0).view(-1, 1), torch.arange(4000))
batches = DataLoaderBatches(dataset, batch_size=10, device="cpu", shuffle=True, seed=1, num_workers=2)
epoch = batches.epoch(1)
for _ in range(5):  # five batches of 400: the epoch is left half-read, the workers busy
    next(epoch)
print("read", flush=True)
if sys.argv[1] != "exit":
    time.sleep(600)  # until the parent's SIGTERM
"""


@pytest.mark.parametrize("how", ["exit", "sigterm", "handler"])
def test_a_script_with_dataloader_batches_always_exits(how, tmp_path):
    """A script leaves an epoch half-read (its generator still referenced) and then exits, or is sent SIGTERM by
    its parent (no handler: it dies; a handler calling sys.exit: it exits): it must not hang, and no worker may be
    left behind."""
    script = tmp_path / "half_read.py"
    script.write_text(textwrap.dedent(HALF_READ_EPOCH).format(root=str(PROJECT_ROOT)))
    process = start_process([sys.executable, script, how], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env_with_faults())  # fmt: skip
    try:
        assert process.stdout.readline() == "read\n", process.stderr.read()
        workers = [pid for pid in group_members(process.pid) if pid != process.pid]
        if how != "exit":
            os.kill(process.pid, signal.SIGTERM)
        try:
            stdout, stderr = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the script ({how}) hangs at exit; workers {workers}, group {group_members(process.pid)}")
        left = wait_for_empty_group(process.pid)
    finally:
        kill_process(process)
    expected = {"exit": 0, "sigterm": -signal.SIGTERM, "handler": 128 + signal.SIGTERM}[how]
    context = f"({how}; workers {workers})\n{stderr}"
    assert len(workers) == 2, context
    assert process.returncode == expected, context
    assert left == [], f"workers left behind; {context}"
    if how != "sigterm":
        assert "Traceback" not in stderr and "DataLoader worker" not in stderr, context


# -- a trainer killed with SIGKILL ----------------------------------------------------------------------------------


def test_workers_of_a_sigkilled_trainer_exit_on_their_own(tiny_cifar, tmp_path):
    """The OOM killer SIGKILLs the trainer alone: its workers (train and validation) notice and exit soon after,
    instead of lingering with their memory."""
    step = random.Random(1234).randrange(CIFAR_STEPS_PER_EPOCH + 2, TOTAL_STEPS - 5)  # after validation's workers
    results = tmp_path / "results"
    output = tmp_path / "killed.txt"
    with open(output, "w") as out:
        process = start_script("tests/faulty_train.py", *loader_command(results, tiny_cifar), stdout=out,
                               stderr=subprocess.STDOUT, env=env_with_faults("record_samples=1"))  # fmt: skip
        try:
            watcher = Watcher(process, results)
            watcher.wait_for(lambda: last_step(results, process.pid) >= step, f"step {step}")
            workers = [pid for pid in group_members(process.pid) if pid != process.pid]
            os.kill(process.pid, signal.SIGKILL)  # the trainer only
            process.wait(timeout=TIMEOUT_S)
            left = wait_for_empty_group(process.pid)
        finally:
            kill_process(process)
    context = f"(trainer SIGKILLed at step {step}; workers {workers})\n{output.read_text()}"
    assert len(workers) == 4, context
    assert left == [], f"workers still alive {GROUP_EXIT_S} s after their trainer was killed; {context}"
    assert read_json(results / "meta.json")["status"] == "running", context  # SIGKILL: nothing ran at the end
