"""Training as a SLURM job, through submitit: submitted, preempted, requeued and resumed in one RESULTS_DIR.

``bin/submit.py [options] -- CONFIG RESULTS_DIR [--key=value ...]`` checks the
command as ``bin/train.py`` would, then submits ``TrainingJob`` with submitit:
SLURM's logs go to ``RESULTS_DIR/slurm/<job id>/``, and the job asks SLURM for
``SIGUSR2`` shortly before its time limit (``--signal=USR2@...``).

In the job, ``SIGUSR2`` (the time limit coming, or ``scancel --signal=USR2``)
makes the trainer checkpoint at the next step; the job then requeues itself
(``scontrol requeue``) and the requeued job resumes from that checkpoint.
``SIGTERM`` (preemption, ``scontrol requeue``, ``scancel``) also checkpoints and
stops; SLURM requeues a preempted or requeued job by itself, and a cancelled one
stays cancelled (submit it again to resume).  Several tasks per job train with
DDP from SLURM's own environment (``distributed.launched``), no torchrun inside.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from .results import SLURM_FOLDER
from .signals import exit_code

REQUEUE_SIGNAL = signal.SIGUSR2
PROJECT_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class TrainingJob:
    """What runs in the job: ``train(argv)`` (``experiment.main_train``), then a requeue if SIGUSR2 stopped it."""

    train: Callable[[Sequence[str]], int]
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)  # set in the job's environment first (a sweep's trial)

    def __call__(self) -> int:
        os.environ.update(self.env)
        code = self.train(self.argv)
        if code == exit_code(REQUEUE_SIGNAL) and int(os.environ.get("SLURM_PROCID", "0")) == 0:
            job = os.environ["SLURM_JOB_ID"]
            if "SLURM_ARRAY_JOB_ID" in os.environ:  # scontrol takes an array task as ARRAYJOB_TASK
                job = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
            print(f"Requeueing job {job} to resume from the checkpoint", file=sys.stderr, flush=True)
            subprocess.run(["scontrol", "requeue", job], check=False, timeout=60)
        if code != 0:
            # SystemExit, not an exception: submitit then records no result, so `job.result()` waits for the
            # requeued job instead of reporting this one's end.
            sys.exit(code)
        return code


def parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Submit a training to SLURM through submitit; the same command as bin/train.py after `--`.",
        epilog="example: python bin/submit.py --time 60 --gpus_per_node 1 -- cifar10 runs/c10 --model.n_filters=64",
    )
    p.add_argument("--partition", help="SLURM partition (default: the cluster's default)")
    p.add_argument("--time", type=int, default=60, help="time limit in minutes (default: 60)")
    p.add_argument("--nodes", type=int, default=1, help="nodes (default: 1)")
    p.add_argument("--tasks_per_node", type=int, default=1, help="training processes per node, DDP if > 1 (default: 1)")
    p.add_argument("--gpus_per_node", type=int, default=0, help="GPUs per node (default: 0)")
    p.add_argument("--cpus_per_task", type=int, default=2, help="CPU cores per task (default: 2)")
    p.add_argument("--mem_gb", type=float, default=None, help="memory per node in GB (default: the cluster's)")
    p.add_argument("--signal_delay_s", type=int, default=120,
                   help="SIGUSR2 this long before the time limit: checkpoint and requeue (default: 120)")  # fmt: skip
    p.add_argument("--wait", action="store_true", help="wait for the job to end, and exit with its status")
    p.add_argument("train", nargs=argparse.REMAINDER, help="-- CONFIG RESULTS_DIR [--key=value ...]")
    return p


def make_executor(args: argparse.Namespace, logs: Path, job_name: str):
    """A submitit executor for ``parser``'s options, with SLURM's logs in ``logs/<job id>/``."""
    import submitit

    executor = submitit.SlurmExecutor(folder=logs / "%j")
    executor.update_parameters(
        time=args.time,
        nodes=args.nodes,
        ntasks_per_node=args.tasks_per_node,
        cpus_per_task=args.cpus_per_task,
        signal_delay_s=args.signal_delay_s,
        job_name=job_name,
        additional_parameters={"requeue": True},
        # The job unpickles TrainingJob, which names this project's package: importable from any working folder.
        setup=["export PYTHONPATH=" + shlex.quote(str(PROJECT_ROOT)) + "${PYTHONPATH:+:$PYTHONPATH}"],
        **({"partition": args.partition} if args.partition else {}),
        **({"gpus_per_node": args.gpus_per_node} if args.gpus_per_node else {}),
        **({"mem": f"{int(args.mem_gb * 1024)}M"} if args.mem_gb else {}),
    )
    return executor


def main(argv: Sequence[str], train: Callable[[Sequence[str]], int], check: Callable[[Sequence[str]], str]) -> int:
    """``bin/submit.py``: ``check(train_argv)`` validates the training command and returns its RESULTS_DIR."""
    args = parser(Path(argv[0]).name).parse_args(argv[1:])
    train_args = args.train[1:] if args.train[:1] == ["--"] else args.train
    script = str(Path(argv[0]).resolve().with_name("train.py"))
    train_argv = [script, *train_args]
    results_dir = Path(check(train_argv)).absolute()
    executor = make_executor(args, results_dir / SLURM_FOLDER, f"train:{results_dir.name}")
    job = executor.submit(TrainingJob(train, train_argv))
    print(f"Submitted job {job.job_id}: {results_dir} (SLURM's logs in {results_dir / SLURM_FOLDER / job.job_id})")
    if not args.wait:
        return 0
    try:
        code = job.results()[0]  # (one result per task; rank 0's is the run's)
    except Exception:  # the job failed: its logs say why
        logs = results_dir / SLURM_FOLDER / job.job_id
        print(f"error: job {job.job_id} ended with {job.state}; see {logs} and {results_dir / 'stderr.txt'}",
              file=sys.stderr)  # fmt: skip
        return 1
    print(f"Job {job.job_id} finished: {results_dir}")
    return code
