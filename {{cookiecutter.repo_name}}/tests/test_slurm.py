"""Training as SLURM jobs on a real single-node cluster (etc/slurm/cluster.sh): real daemons, real jobs, no mocks.

Jobs are submitted as a user would: ``bin/submit.py`` (submitit) and ``experiments/train.sbatch`` (sbatch + srun).
The promise under test: a job stopped by SIGUSR2 (the warning before the time limit, here ``scancel --signal``)
or by SIGTERM (``scontrol requeue``, as preemption does) checkpoints, is requeued as the same job, resumes, and
ends *bitwise* as the uninterrupted run of the same command on this machine; two tasks train with DDP exactly as
two torchrun workers do.  meta.json records every session with its job id.

The cluster needs root and the Debian packages (``sudo etc/slurm/cluster.sh install``).  Without them the tests
are skipped, except where CI=true: there they fail.  Each pytest-xdist worker starts a cluster of its own (ports
6817 + 10 * worker number, state in /tmp/slurm-PORT-*) and stops it when its tests are done.  The node has as many
CPUs as the machine: jobs ask for one CPU per task, and the tests of a worker run one job at a time.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import PROJECT_ROOT, TIMEOUT_S, kill_process, read_json, run_process, start_process
from fault_helpers import IRIS_ARGS, assert_same_run, env_with_faults, shared, train

CLUSTER_SH = PROJECT_ROOT / "etc" / "slurm" / "cluster.sh"
SBATCH_SCRIPT = "experiments/train.sbatch"
# 200 epochs of 6 steps: a few seconds of training, so that a signal sent at the first checkpoint comes mid-run.
LONG_ARGS = ("--device=cpu", "--num_epochs=200", "--checkpoint.every_steps=2", "--log_every_steps=4")
RANKS = 2
DDP_ARGS = (*IRIS_ARGS, "--batch_size=16")  # 96 training samples in batches of 16: each task takes 8 of each
# sacct's states of a job that will not run again (a PREEMPTED job that may be requeued is not one of them).
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE"}
# squeue's reasons of a pending job that this cluster will never run (more CPUs than the node has, ...).
NEVER = {"PartitionConfig", "PartitionNodeLimit", "PartitionTimeLimit", "BadConstraints", "InvalidAccount"}


def unavailable(reason: str, details: str = "") -> None:
    """Skip the module's tests for ``reason``; under CI=true, fail instead (with ``details``): CI must run them."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true, so the SLURM tests must run, but {reason}\n{details}".strip(), pytrace=False)
    pytest.skip(reason)


class Cluster:
    """SLURM's commands for the cluster of this worker (``env`` holds its SLURM_CONF)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    def run(self, *command, check: bool = True, cwd: Path | None = None) -> subprocess.CompletedProcess:
        return run_process(list(command), cwd, check, env=self.env)

    def state(self, job: str) -> str:
        """The job's state in the accounting database ("" while it is not there yet); its latest run only.

        A job that waits for what the cluster can never give it fails the test at once, rather than at the
        timeout.
        """
        out = self.run("sacct", "-n", "-X", "-P", "-j", job, "-o", "State").stdout.split()
        state = out[0] if out else ""  # "CANCELLED by 0" -> CANCELLED
        if state == "PENDING":
            reason = self.run("squeue", "-h", "-j", job, "-o", "%r", check=False).stdout.strip()
            assert reason not in NEVER, f"job {job} can never run here ({reason}): {self.run('sinfo').stdout}"
        return state

    def records(self, job: str) -> list[str]:
        """The state of each run of the job, the requeued ones first (``sacct --duplicates``)."""
        out = self.run("sacct", "-D", "-n", "-X", "-P", "-j", job, "-o", "State").stdout.splitlines()
        return [line.split()[0] for line in out if line.strip()]

    def wait(self, job: str, results: Path) -> str:
        """Wait until the job has ended for good (requeued runs included) and return its final state."""
        deadline = time.monotonic() + TIMEOUT_S
        while (state := self.state(job)) not in ENDED:
            if time.monotonic() > deadline:
                self.run("scancel", job, check=False)
                pytest.fail(f"job {job} still {state or 'unknown'} after {TIMEOUT_S} s\n{job_logs(results)}")
            time.sleep(1)
        return state

    def wait_for_checkpoint(self, job: str, results: Path) -> None:
        """Wait until the run of ``job`` has written its first checkpoint (failing if the job ends first)."""
        deadline, next_look = time.monotonic() + TIMEOUT_S, 0.0
        while not list((results / "checkpoints").glob("step_*")):
            now = time.monotonic()
            if now >= next_look:
                state = self.state(job)
                assert state not in ENDED, f"job {job} ended ({state}) before its first checkpoint\n{job_logs(results)}"
                assert now < deadline, f"no checkpoint of job {job} after {TIMEOUT_S} s\n{job_logs(results)}"
                next_look = now + 1
            time.sleep(0.05)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """This worker's SLURM cluster, started by etc/slurm/cluster.sh (and stopped by it at the end)."""
    worker = re.fullmatch(r"gw(\d+)", os.environ.get("PYTEST_XDIST_WORKER", ""))
    port_base = 6817 + 10 * (int(worker.group(1)) if worker else 0)
    path = os.pathsep.join([os.environ.get("PATH", os.defpath), "/usr/sbin", "/sbin"])  # the daemons live there
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        unavailable("a SLURM test cluster needs root (etc/slurm/cluster.sh runs its daemons and jobs as root)")
    if shutil.which("slurmctld", path=path) is None:
        unavailable("SLURM is not installed (no slurmctld): run `sudo etc/slurm/cluster.sh install`")
    # Not under pytest's tmp folder: munged refuses a socket in a folder that not everyone may traverse (0700).
    state_dir = Path(tempfile.mkdtemp(prefix=f"slurm-{port_base}-", dir="/tmp"))
    state_dir.chmod(0o755)
    # Not env_with_faults(): nproc (the node's CPUs in cluster.sh) counts OMP_NUM_THREADS=1 as one CPU.
    env = {key: value for key, value in os.environ.items() if not key.startswith("OMP_")}
    env.update(PATH=path, CLUSTER_PORT_BASE=str(port_base))
    started = run_process(["bash", CLUSTER_SH, "start", state_dir], check=False, env=env)
    found = re.search(r"^export SLURM_CONF=(\S+)$", started.stdout, re.MULTILINE)
    if started.returncode != 0 or not found:  # cluster.sh stops whatever a failed start had started
        last = (started.stderr.strip().splitlines() or ["no output"])[-1]
        logs = [
            f"--- {log.name} ---\n" + "\n".join(log.read_text(errors="replace").splitlines()[-10:])
            for log in sorted((state_dir / "log").glob("*.log"))
        ]
        shutil.rmtree(state_dir, ignore_errors=True)
        reason = f"etc/slurm/cluster.sh start failed (exit {started.returncode}, ports {port_base}+): {last}"
        unavailable(reason, "\n".join([started.stderr, *logs]))
    try:
        # Jobs get the environment of their submission: one thread per process (env_with_faults), and the
        # interpreter of this session for train.sbatch's srun.
        yield Cluster({**env_with_faults(), "PATH": path, "SLURM_CONF": found.group(1), "PYTHON": sys.executable})
    finally:
        stopped = run_process(["bash", CLUSTER_SH, "stop", state_dir], check=False, env=env)
        assert stopped.returncode == 0, f"etc/slurm/cluster.sh stop failed:\n{stopped.stderr}"
        shutil.rmtree(state_dir, ignore_errors=True)


@pytest.fixture(autouse=True)
def no_job_left(cluster: Cluster) -> Iterator[None]:
    """A test that failed half-way leaves no job behind to hold the node's CPUs."""
    yield
    jobs = cluster.run("squeue", "-h", "-o", "%A", check=False).stdout.split()
    if jobs:
        cluster.run("scancel", *jobs, check=False)


@pytest.fixture(scope="module")
def long_reference(tmp_path_factory) -> Path:
    """The uninterrupted local run of ``LONG_ARGS``."""

    def build(folder: Path) -> dict:
        train("iris", folder / "results", *LONG_ARGS)
        return {"results": str(folder / "results")}

    return Path(shared(tmp_path_factory, "slurm_iris_long_reference", build)["results"])


@pytest.fixture(scope="module")
def ddp_reference(tmp_path_factory) -> Path:
    """The uninterrupted local run of ``DDP_ARGS`` by two torchrun workers."""

    def build(folder: Path) -> dict:
        results = folder / "results"
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={RANKS}"]
        run_process([*torchrun, "tests/faulty_train.py", "iris", results, *DDP_ARGS], env=env_with_faults())
        return {"results": str(results)}

    return Path(shared(tmp_path_factory, "slurm_iris_ddp_reference", build)["results"])


def job_logs(results: Path) -> str:
    """The ends of the job's logs and of the run's output, for assertion messages."""
    files = sorted((results / "slurm").rglob("*.out")) + sorted((results / "slurm").rglob("*.err"))
    files += [results / "stdout.txt", results / "stderr.txt"]
    parts = []
    for path in files:
        if path.is_file():
            lines = path.read_text(errors="replace").splitlines()
            parts.append(f"--- {path} ---\n" + "\n".join(lines[-20:]))
    return "\n".join(parts) or f"(no logs in {results})"


def submit(cluster: Cluster, results: Path, *args: str, options: tuple = (), wait: bool = False):
    """``bin/submit.py [--wait] --cpus_per_task 1 OPTIONS -- iris RESULTS ARGS``; the job id and the finished process."""
    command = [sys.executable, "bin/submit.py", "--cpus_per_task", "1", *options, *(["--wait"] if wait else [])]
    done = cluster.run(*command, "--", "iris", results, *args, check=False)
    found = re.search(r"^Submitted job (\d+): ", done.stdout, re.MULTILINE)
    assert found, f"bin/submit.py exited with {done.returncode}\n{done.stdout}\n{done.stderr}\n{job_logs(results)}"
    return found.group(1), done


def sbatch(cluster: Cluster, results: Path, *args: str) -> str:
    """``sbatch --output=RESULTS/slurm/%j.out experiments/train.sbatch iris RESULTS ARGS``, as its header says
    (with one CPU, as the other jobs here: one thread, and the script's two would not fit a one-CPU node)."""
    (results / "slurm").mkdir(parents=True)
    output = f"--output={results}/slurm/%j.out"
    done = cluster.run("sbatch", output, "--cpus-per-task=1", SBATCH_SCRIPT, "iris", results, *args)
    return re.search(r"Submitted batch job (\d+)", done.stdout).group(1)


def check_requeued(cluster: Cluster, job: str, results: Path, signal_name: str) -> None:
    """The job ended after one requeue: a session stopped by ``signal_name``, then a resumed one, in that job."""
    context = f"(job {job})\n{job_logs(results)}"
    assert cluster.wait(job, results) == "COMPLETED", context
    assert cluster.records(job) == ["REQUEUED", "COMPLETED"], context  # requeued once, not submitted again
    sessions = read_json(results / "meta.json")["sessions"]
    assert [s["status"] for s in sessions] == ["interrupted", "finished"], f"{sessions}\n{context}"
    assert sessions[0]["reason"].startswith(f"{signal_name}: stopped after a checkpoint"), sessions[0]["reason"]
    assert [s["slurm"]["job_id"] for s in sessions] == [job, job], sessions
    assert [s["slurm"]["restart_count"] for s in sessions] == [None, "1"], sessions  # SLURM_RESTART_COUNT
    assert "Resuming from checkpoints/step_" in (results / "stdout.txt").read_text(), context


def test_submit_waits_for_the_job_and_records_it(cluster, long_reference, tmp_path):
    """bin/submit.py --wait: exit 0 once the job is done; the session names the job; submitit's logs in
    RESULTS/slurm/<job id>/; the run is the local run, bit for bit."""
    results = tmp_path / "results"
    job, done = submit(cluster, results, *LONG_ARGS, wait=True)
    context = f"(job {job})\n{done.stdout}\n{done.stderr}\n{job_logs(results)}"
    assert done.returncode == 0, context
    assert f"Job {job} finished" in done.stdout, context
    assert cluster.wait(job, results) == "COMPLETED", context  # submitit's result may come before the job's end
    assert cluster.records(job) == ["COMPLETED"], context
    meta = read_json(results / "meta.json")
    (session,) = meta["sessions"]
    assert session["status"] == "finished" and meta["world_size"] == 1, meta
    assert session["slurm"]["job_id"] == job and session["slurm"]["nodelist"], session
    assert session["slurm"]["array_job_id"] is None and session["slurm"]["restart_count"] is None, session
    logs = results / "slurm" / job
    assert (logs / f"{job}_submission.sh").is_file(), sorted(p.name for p in logs.iterdir())
    assert f"Results in {results}" in (logs / f"{job}_0_log.out").read_text(), context
    assert (logs / f"{job}_0_log.err").is_file(), context
    assert_same_run(results, long_reference, f"(job {job})")


@pytest.mark.parametrize(
    "stop, signal_name",
    [(["scancel", "--signal=USR2"], "SIGUSR2"), (["scontrol", "requeue"], "SIGTERM")],
    ids=["scancel_usr2", "scontrol_requeue"],
)
def test_a_stopped_job_is_requeued_and_resumes_bitwise(cluster, long_reference, tmp_path, stop, signal_name):
    """SIGUSR2 (the time limit's warning): the job checkpoints and requeues itself.  ``scontrol requeue``
    (SIGTERM, as preemption): the job checkpoints and SLURM requeues it.  Either way the same job resumes."""
    results = tmp_path / "results"
    job, _ = submit(cluster, results, *LONG_ARGS)
    cluster.wait_for_checkpoint(job, results)
    cluster.run(*stop, job)
    check_requeued(cluster, job, results, signal_name)
    if signal_name == "SIGUSR2":
        err = (results / "slurm" / job / f"{job}_0_log.err").read_text()
        assert f"Requeueing job {job} to resume from the checkpoint" in err, err
    assert_same_run(results, long_reference, f"({' '.join(stop)} {job})")


def test_two_tasks_train_with_ddp_bitwise_as_two_torchrun_workers(cluster, ddp_reference, tmp_path):
    """--tasks_per_node 2: two tasks of one job train with DDP (gloo) from SLURM's variables, as torchrun's
    two workers do on one machine, to the bit."""
    cpus = int(cluster.run("sinfo", "-h", "-o", "%c").stdout.split()[0])
    if cpus < RANKS:
        unavailable(f"the cluster's node has {cpus} CPU(s), and this job needs {RANKS}")
    results = tmp_path / "results"
    job, done = submit(cluster, results, *DDP_ARGS, options=("--tasks_per_node", str(RANKS)), wait=True)
    context = f"(job {job})\n{done.stdout}\n{done.stderr}\n{job_logs(results)}"
    assert done.returncode == 0, context
    meta = read_json(results / "meta.json")
    assert meta["world_size"] == RANKS and meta["launcher"] == "slurm" and meta["backend"] == "gloo", meta
    assert [rank["rank"] for rank in meta["ranks"]] == list(range(RANKS)), meta["ranks"]
    assert [s["status"] for s in meta["sessions"]] == ["finished"] and meta["sessions"][0]["slurm"]["job_id"] == job
    for task in range(RANKS):
        assert (results / "slurm" / job / f"{job}_{task}_log.out").is_file(), context
    assert (results / "stdout.txt").read_text().count("epoch 1/") == 1, "only rank 0 writes the run's output"
    assert_same_run(results, ddp_reference, f"(job {job})")


def test_the_sbatch_script_trains_as_bin_train(cluster, long_reference, tmp_path):
    """experiments/train.sbatch, submitted as its header says: the run, its output in RESULTS/slurm/<job id>.out."""
    results = tmp_path / "results"
    job = sbatch(cluster, results, *LONG_ARGS)
    assert cluster.wait(job, results) == "COMPLETED", job_logs(results)
    assert f"Results in {results}" in (results / "slurm" / f"{job}.out").read_text(), job_logs(results)
    sessions = read_json(results / "meta.json")["sessions"]
    assert [(s["status"], s["slurm"]["job_id"]) for s in sessions] == [("finished", job)], sessions
    assert_same_run(results, long_reference, f"(job {job})")


def test_the_sbatch_script_requeues_itself_after_sigusr2(cluster, long_reference, tmp_path):
    """SIGUSR2 to the job's step: the run exits 140 after a checkpoint, the script requeues the job, it resumes."""
    results = tmp_path / "results"
    job = sbatch(cluster, results, *LONG_ARGS)
    cluster.wait_for_checkpoint(job, results)
    cluster.run("scancel", "--signal=USR2", job)
    check_requeued(cluster, job, results, "SIGUSR2")
    out = (results / "slurm" / f"{job}.out").read_text()  # --open-mode=append: both runs' output
    assert f"Requeueing job {job} to resume from the checkpoint" in out and f"Results in {results}" in out, out
    assert_same_run(results, long_reference, f"(scancel --signal=USR2 {job})")


def test_a_grid_sweep_runs_as_a_job_array_and_a_preempted_trial_resumes(cluster, tmp_path):
    """bin/sweep.py --slurm: the grid's trials are the tasks of one job array, two at once; a trial preempted
    mid-run (``scontrol requeue``) is requeued and resumes.  The sweep process, killed meanwhile, is run again:
    it waits for the jobs still there instead of submitting them again.  Every trial ends as in the same sweep
    run locally."""
    grid, options = ("--grid", "seed=[0,1]"), "--cpus_per_task 1 --time 10"
    local, on_slurm = tmp_path / "local", tmp_path / "slurm"
    run_process([sys.executable, "bin/sweep.py", "iris", local, *grid, "--workers", "2", "--", *LONG_ARGS],
                env=cluster.env)  # fmt: skip
    out = open(tmp_path / "sweep.txt", "w")
    command = [sys.executable, "bin/sweep.py", "iris", on_slurm, *grid, "--workers", "2", "--slurm", options, "--",
               *LONG_ARGS]  # fmt: skip
    process = start_process(command, stdout=out, stderr=subprocess.STDOUT, env=cluster.env)
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while not list(on_slurm.glob("trial_*/checkpoints/step_*")):
            assert process.poll() is None and time.monotonic() < deadline, (tmp_path / "sweep.txt").read_text()
            time.sleep(0.05)
        trial = next(on_slurm.glob("trial_*/checkpoints/step_*")).parents[1]
        job = read_json(trial / "meta.json")["sessions"][0]["slurm"]
        array_task = f"{job['array_job_id']}_{job['array_task_id']}"
        cluster.run("scontrol", "requeue", array_task)
    finally:
        kill_process(process)  # the sweep process; its trials are jobs, and go on
    first = (tmp_path / "sweep.txt").read_text()
    assert re.search(r"^Submitted job array \d+: trials 0, 1$", first, re.MULTILINE), first
    output = cluster.run(*command).stdout
    assert "Submitted job array" not in output and "taken over" not in output, output
    sessions = read_json(trial / "meta.json")["sessions"]
    assert [s["status"] for s in sessions] == ["interrupted", "finished"], f"{sessions}\n{output}"
    requeued = {s["slurm"]["array_job_id"] for s in sessions} == {job["array_job_id"]}  # not submitted again
    assert requeued, sessions
    for number in (0, 1):
        ran = on_slurm / f"trial_{number:04d}"
        seed = read_json(ran / "config.json")["seed"]
        (reference,) = [run for run in local.glob("trial_*") if read_json(run / "config.json")["seed"] == seed]
        assert_same_run(ran, reference, f"(trial {number}, seed {seed})\n{output}")
    assert (on_slurm / "slurm").is_dir() and "2 finished" in output, output
