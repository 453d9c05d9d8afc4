"""Sweeps: many runs of one config, their parameters chosen by Optuna, resumable as a single run is.

``bin/sweep.py CONFIG SWEEP_DIR --grid KEY=[v1,v2] ... -- --key=value ...`` trains every trial as an
ordinary run, ``bin/train.py CONFIG SWEEP_DIR/trial_NNNN --key=value ... --KEY=v``, in a child process
(or, with ``--slurm``, as a task of a SLURM job array, like ``bin/submit.py``'s jobs).  So each trial
keeps every guarantee of a run: exact resume, its results directory, ``bin/evaluate.py``.  This process
only asks Optuna for parameters, reads each finished trial's objective from its history.csv at its best
epoch, and tells Optuna.

SWEEP_DIR/
  sweep.json      the command; a rerun must search the same space (--trials, --workers, --slurm may change)
  optuna.journal  the study (Optuna's JournalStorage on a file): every trial, its parameters, state, value
  trial_NNNN/     one results directory per trial
  summary.csv     the table of trials that ``--status`` prints
  slurm/          SLURM's logs of the trials' jobs (--slurm)

Resume: the same command again reopens the study; finished trials are not run again.  The journal has no
heartbeat, so a trial Optuna holds as RUNNING may belong to a sweep process that was killed.  One sweep
process at a time holds ``SWEEP_DIR/.lock``, and its children die with it, so a RUNNING trial that a new
sweep process finds belongs to nobody: it is trained again in its folder, which resumes from its newest
checkpoint exactly (or, if its run had already ended, concluded from its folder).  With ``--slurm`` a
RUNNING trial whose job is still queued or running is waited for.  ``--nproc_per_node`` (local) or
``--slurm '--tasks_per_node N'`` make each trial a DDP run of several processes.

Pruning (``--prune``): the trial's own process reports its objective after every epoch and stops early
when Optuna's MedianPruner says so (``trial_pruner``, called by the loop); the sweep records it as pruned.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import io
import itertools
import json
import math
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from . import slurm
from .checkpoint import atomic_write_bytes, atomic_write_json
from .cli import Command, ConfigError, first_line, parse_value
from .lock import ResultsDirLocked, RunLock
from .results import STATUS_FAILED, STATUS_FINISHED, utc_now
from .signals import SIGNALS, StopFlag, exit_code

SPEC, JOURNAL, SUMMARY, SLURM_LOGS = "sweep.json", "optuna.journal", "summary.csv", "slurm"
STUDY = "sweep"
# sacct's states of a job that will not run again (PREEMPTED may be requeued: it is not one of them)
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE"}
TRIAL_ENV = "SWEEP_TRIAL"  # "SWEEP_DIR:NUMBER" in a trial's environment when the sweep prunes
DISTRIBUTIONS = "uniform(a,b), loguniform(a,b) with a > 0, int(a,b) or choice(v1,v2,...)"
MAX_GRID_CHECKED = 10_000  # grid points checked one by one before anything starts (beyond: each value alone)
Check = Callable[[list[str]], Command]  # bin/train.py's check of a training command (experiment.parse_and_check)


@dataclass
class Spec:
    """What is searched, as sweep.json records it."""

    config: str
    overrides: list[str]  # --key=value, for every trial
    grid: dict[str, list] = field(default_factory=dict)  # key -> values (their product)
    search: dict[str, str] = field(default_factory=dict)  # key -> distribution, e.g. "loguniform(1e-4,1e-1)"
    trials: int = 0
    objective: str = "valid_loss"
    direction: str = "minimize"
    prune: bool = False

    def distributions(self) -> dict[str, Any]:
        """The searched keys' Optuna distributions (sweep.json keeps their text)."""
        return dict(parse_search(f"{key}={text}") for key, text in self.search.items())

    def same_search(self, other: Spec) -> bool:
        mine, theirs = asdict(self), asdict(other)
        return all(mine[key] == theirs[key] for key in mine if key != "trials")


# -- the command line ----------------------------------------------------------------------------
def parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Train many runs of one config with parameters chosen by Optuna (grid or TPE); rerun the "
        "same command to resume.  Overrides after `--` apply to every trial.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
        epilog="examples:\n"
        "  python bin/sweep.py iris runs/grid --grid 'optimizer.lr=[0.01,0.05,0.1]' --grid 'seed=[0,1]'\n"
        "  python bin/sweep.py iris runs/tpe --search 'optimizer.lr=loguniform(1e-4,1e-1)' --trials 20 --prune\n"
        "  python bin/sweep.py iris runs/grid --grid 'seed=[0,1,2]' --slurm '--time 30' -- --num_epochs=50\n"
        "  python bin/sweep.py --status runs/grid",
    )
    p.add_argument("config", metavar="CONFIG", nargs="?", help="base config, as for bin/train.py")
    p.add_argument("sweep_dir", metavar="SWEEP_DIR", nargs="?", help="where the study and its trials live")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=[v1,...]",
                   help="try every value (repeat for a product of keys: Optuna's GridSampler)")  # fmt: skip
    p.add_argument("--search", action="append", default=[], metavar="KEY=DIST",
                   help=f"sample KEY with Optuna's TPE from {DISTRIBUTIONS}")  # fmt: skip
    p.add_argument("--trials", type=int, help="trials in all (default: the grid's size; needed with --search)")
    p.add_argument("--objective", default="valid_loss",
                   help="history column to optimise, taken at each run's best epoch (default: valid_loss)")  # fmt: skip
    p.add_argument("--direction", choices=("max", "min"), help="default: from the metric (losses: min)")
    p.add_argument("--workers", type=int, default=1, help="trials at once (default: 1)")
    p.add_argument("--nproc_per_node", type=int, default=1,
                   help="local trials: train each with torchrun and this many DDP processes (default: 1, no torchrun;"
                   " on SLURM: --slurm '--tasks_per_node N')")  # fmt: skip
    p.add_argument("--prune", action="store_true", help="stop hopeless trials early (MedianPruner; default: off)")
    p.add_argument("--slurm", metavar="OPTIONS", help="run the trials as a SLURM job array with bin/submit.py's "
                   "options, e.g. '--time 60 --gpus_per_node 1' (default: local processes)")  # fmt: skip
    p.add_argument("--status", metavar="SWEEP_DIR", help="print the table of trials of SWEEP_DIR and exit")
    return p


def parse_grid(item: str) -> tuple[str, list]:
    """``KEY=[v1,v2,...]`` -> (key, values); ``ConfigError`` with one line for anything else."""
    from omegaconf import ListConfig, OmegaConf

    key, text = _key_and_text(item, "--grid", "KEY=[v1,v2,...]")
    values = parse_value(key, text)
    values = OmegaConf.to_container(values) if isinstance(values, ListConfig) else None
    if not values or not all(v is None or isinstance(v, (bool, int, float, str)) for v in values):
        raise ConfigError(f"--grid {item}: give a list of numbers, strings, true/false or null, "
                          f"e.g. --grid '{key}=[0.01,0.1]'")  # fmt: skip
    return key, values


def parse_search(item: str):
    """``KEY=DIST`` -> (key, Optuna distribution); ``ConfigError`` with one line for anything else."""
    import optuna.distributions as d

    key, text = _key_and_text(item, "--search", "KEY=DIST")
    name, _, rest = text.partition("(")
    args = parse_value(key, f"[{rest[:-1]}]") if rest.endswith(")") else None
    makers = {
        "uniform": lambda a, b: d.FloatDistribution(a, b),
        "loguniform": lambda a, b: d.FloatDistribution(a, b, log=True),
        "int": lambda a, b: d.IntDistribution(a, b),
        "choice": lambda *values: d.CategoricalDistribution(values),
    }
    try:
        return key, makers[name.strip()](*args)
    except (KeyError, TypeError, ValueError) as err:
        why = f" ({first_line(err)})" if isinstance(err, ValueError) else ""
        raise ConfigError(f"--search {item}: use {DISTRIBUTIONS}{why}") from None


def _key_and_text(item: str, option: str, form: str) -> tuple[str, str]:
    key, sep, text = item.partition("=")
    if not sep or not key or not text:
        raise ConfigError(f"{option} {item!r}: write {option} '{form}'")
    return key.removeprefix("--"), text


def as_override(key: str, value: Any) -> str:
    """``--key=value`` as bin/train.py reads it (YAML: true, null, 0.01)."""
    return f"--{key}={value if isinstance(value, str) else json.dumps(value)}"


def make_spec(args: argparse.Namespace, overrides: list[str], check: Check, maximize: Callable) -> Spec:
    """The sweep the command asks for, every trial's training command checked as bin/train.py checks it."""
    if not args.grid and not args.search:
        raise ConfigError("give the parameters to sweep: --grid KEY=[v1,...] and/or --search KEY=DIST")
    if args.grid and args.search:
        raise ConfigError("--grid and --search do not mix (Optuna's GridSampler samples the grid only); "
                          "put the grid's keys into --search as choice(...)")  # fmt: skip
    grid = dict(parse_grid(item) for item in args.grid)
    search = {}
    for item in args.search:
        key, _ = parse_search(item)  # (checked here; sweep.json keeps the text)
        search[key] = item.partition("=")[2]
    size = math.prod(len(values) for values in grid.values()) if grid else None
    trials = args.trials if args.trials is not None else size
    if trials is None or trials < 1 or (size and trials > size):
        limit = f"1..{size} (the grid's points)" if size else ">= 1, with --search"
        raise ConfigError(f"--trials={trials}: give a number of trials, {limit}")
    for name in ("workers", "nproc_per_node"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name}={getattr(args, name)}: give 1 or more")
    if args.slurm and args.nproc_per_node > 1:
        raise ConfigError("--nproc_per_node is for local trials; on SLURM give --slurm '--tasks_per_node N'")
    base = ["train.py", args.config, str(Path(args.sweep_dir) / "trial_0000")]
    cfg = check([*base, *overrides]).cfg
    direction = {"max": "maximize", "min": "minimize"}.get(args.direction) or (
        "maximize" if maximize(cfg, args.objective) else "minimize"
    )
    spec = Spec(args.config, overrides, grid, search, trials, args.objective, direction, args.prune)
    for point in _points_to_check(grid, spec.distributions()):
        check([*base, *overrides, *(as_override(key, value) for key, value in point.items())])
    return spec


def _points_to_check(grid: dict[str, list], search: dict[str, Any]):
    """Parameter sets whose training commands are checked before anything starts: every grid point (each value
    alone for a very large grid), and each bound or choice of every searched key."""
    if grid and math.prod(map(len, grid.values())) <= MAX_GRID_CHECKED:
        yield from (dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values()))
        return
    for key, values in grid.items():
        yield from ({key: value} for value in values)
    for key, dist in search.items():
        yield from ({key: value} for value in getattr(dist, "choices", None) or (dist.low, dist.high))


# -- the study -----------------------------------------------------------------------------------
def open_study(sweep_dir: Path, spec: Spec):
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock, JournalStorage

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # this module says what happens, one line per trial
    path = str(sweep_dir / JOURNAL)
    # A lock left by a killed process is broken after grace_period seconds (the default lock: a symbolic link).
    storage = JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path, grace_period=30)))
    if spec.grid:
        sampler = _grid_sampler()(spec.grid, seed=0)
    else:
        sampler = optuna.samplers.TPESampler(seed=0)
    pruner = optuna.pruners.MedianPruner() if spec.prune else optuna.pruners.NopPruner()
    return optuna.create_study(storage=storage, study_name=STUDY, sampler=sampler, pruner=pruner,
                               direction=spec.direction, load_if_exists=True)  # fmt: skip


def _grid_sampler():
    import optuna

    class GridSampler(optuna.samplers.GridSampler):
        def after_trial(self, *args) -> None:
            """Nothing: the sweep counts the grid's trials itself.  (GridSampler's own would call ``study.stop()``
            on the last point, which works only inside ``study.optimize``, not with ask and tell.)"""

    return GridSampler


def ask(study, spec: Spec, parallel: bool) -> tuple[int, dict[str, Any]]:
    """A new trial: its number and parameters."""
    import optuna

    if not spec.grid:
        # Seeded by the trials so far, not once per process: a resumed search must not draw its first
        # suggestions again.  Constant liar: trials running at once are not sampled near each other.
        count = len(study.get_trials(deepcopy=False))
        study.sampler = optuna.samplers.TPESampler(seed=count, constant_liar=parallel)
    space = {key: optuna.distributions.CategoricalDistribution(values) for key, values in spec.grid.items()}
    space.update(spec.distributions())
    trial = study.ask(fixed_distributions=space)
    return trial.number, trial.params


def trial_dir(sweep_dir: Path, number: int) -> Path:
    return sweep_dir / f"trial_{number:04d}"


def objective_value(run: Path, column: str) -> tuple[float | None, int | None]:
    """``column`` of the run's history.csv at its best epoch (by ``monitor``; the last epoch without one)."""
    import pandas as pd

    loop = _read_json(run / "loop_state.json")
    try:
        history = pd.read_csv(run / "history.csv").apply(pd.to_numeric, errors="coerce")
    except (OSError, ValueError):  # missing, empty, damaged
        return None, None
    if column not in history or "epoch" not in history or history["epoch"].isna().all():
        return None, None
    epoch = loop.get("best_epoch") or int(history["epoch"].max())
    values = history.loc[history["epoch"] == epoch, column]
    value = float(values.iloc[-1]) if len(values) else math.nan
    return (value if math.isfinite(value) else None), epoch


# -- pruning, in the trial's own process ---------------------------------------------------------
class TrialReporter:
    """Reports a trial's objective after each epoch; True when Optuna's pruner stops the trial (``Trainer``'s
    ``early_stop``).  The decision is recorded in the study first, so a trial killed after it stops again at
    its next epoch's end on resume, and the sweep then records it as pruned."""

    def __init__(self, sweep_dir: Path, number: int):
        import optuna

        spec = read_spec(sweep_dir)
        self.objective, study = spec.objective, open_study(sweep_dir, spec)
        self.trial = optuna.trial.Trial(study, study.get_trials(deepcopy=False)[number]._trial_id)

    def __call__(self, row: dict[str, Any]) -> bool:
        try:
            return self._report(row)
        except Exception as err:  # the study unreachable: train on (under DDP the others wait for this answer)
            print(f"warning: the sweep's study could not be told epoch {row['epoch']}: {first_line(err)}",
                  file=sys.stderr)  # fmt: skip
            return False

    def _report(self, row: dict[str, Any]) -> bool:
        value, epoch = row.get(self.objective), row["epoch"]
        frozen = self.trial.storage.get_trial(self.trial._trial_id)
        if "pruned_at_epoch" in frozen.user_attrs:
            return True
        if value is None or not math.isfinite(value):
            return False
        if epoch not in frozen.intermediate_values:  # (a resumed trial reaches some epochs twice)
            self.trial.report(value, epoch)
        if not self.trial.should_prune():
            return False
        self.trial.set_user_attr("pruned_at_epoch", epoch)
        print(f"Pruned by the sweep after epoch {epoch}: {self.objective} {value:.4g} is worse than the median "
              "of the other trials there")  # fmt: skip
        return True


def trial_pruner() -> TrialReporter | None:
    """The reporter of this process's trial, if a pruning sweep started it (``TRIAL_ENV``)."""
    value = os.environ.get(TRIAL_ENV)
    if not value:
        return None
    sweep_dir, _, number = value.rpartition(":")
    return TrialReporter(Path(sweep_dir), int(number))


# -- where trials run ----------------------------------------------------------------------------
class LocalTrials:
    """Trials as child processes of this one, ``workers`` at once, with the cores shared out among them."""

    poll_s = 0.2

    def __init__(self, workers: int, nproc_per_node: int = 1):
        self.workers, self.running = workers, {}  # number -> (process, its stderr, its slot)
        self.gpus_per_trial, self.gpus = nproc_per_node, _visible_gpus()
        self.launcher = [sys.executable]
        if nproc_per_node > 1:  # (each trial's torchrun finds a free port of its own)
            self.launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc_per_node}"]
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        # Each process's PyTorch would use every core; N at once would then fight over them.
        threads = max(1, cores // (workers * nproc_per_node))
        self.env = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(threads))}

    def slots(self, grid: bool) -> int:
        return self.workers - len(self.running)

    def start(self, trials: list[tuple[int, list[str], dict[str, str]]]) -> dict[int, str]:
        """Start each ``(number, argv, extra environment)``; return their job ids by number (none here)."""
        for number, argv, env in trials:
            slot = min(set(range(self.workers)) - {slot for _, _, slot in self.running.values()})
            if self.gpus:  # each slot its own GPUs (round robin where there are fewer than the trials need)
                n = self.gpus_per_trial
                env = {**env, "CUDA_VISIBLE_DEVICES": ",".join(self.gpus[(slot * n + i) % len(self.gpus)]
                                                               for i in range(n))}  # fmt: skip
            err = tempfile.TemporaryFile()  # what it prints before its results directory exists (a bad value)
            # A session of its own: a Ctrl-C reaches it once, forwarded by stop(), not twice.
            process = subprocess.Popen([*self.launcher, *argv], env={**os.environ, **self.env, **env},
                                       stdout=subprocess.DEVNULL, stderr=err, start_new_session=True,
                                       preexec_fn=_die_with_parent)  # fmt: skip
            self.running[number] = (process, err, slot)
        return {}

    def take_over(self, number: int, user_attrs: dict) -> bool:
        """False: the trial must be started again (a local trial's process died with its sweep)."""
        return False

    def ended(self) -> list[tuple[int, int, str]]:
        """``(number, exit code, last line of stderr)`` of the trials that ended since the last call."""
        done = []
        for number, (process, err, _) in list(self.running.items()):
            if process.poll() is not None:
                err.seek(0)
                lines = err.read().decode(errors="replace").strip().splitlines()
                done.append((number, process.returncode, lines[-1] if lines else ""))
                err.close()
                del self.running[number]
        return done

    def stop(self, signum: int) -> None:
        """Pass the stop signal on to every running trial (it checkpoints and exits), and wait for them; a
        second Ctrl-C is passed on too (they stop at once)."""
        processes = [process for process, _, _ in self.running.values()]
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signum)
        for process in processes:
            try:
                process.wait()
            except KeyboardInterrupt:
                for other in processes:
                    with contextlib.suppress(ProcessLookupError):
                        other.send_signal(signal.SIGINT)
                process.wait()


def _visible_gpus() -> list[str]:
    """The CUDA devices this process may use, as CUDA_VISIBLE_DEVICES names them for its children."""
    import torch

    if not torch.cuda.is_available():
        return []
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    names = [name.strip() for name in listed.split(",")] if listed else [str(i) for i in range(99)]
    return names[: torch.cuda.device_count()]


def _die_with_parent() -> None:
    """In a trial's process: SIGKILL when the sweep process dies (Linux), so a rerun finds no trial still
    training; it resumes from the newest checkpoint."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class SlurmTrials:
    """Trials as SLURM jobs (``slurm.TrainingJob``: checkpointed, requeued and resumed as bin/submit.py's):
    each batch of new trials is one job array, ``workers`` of its tasks at once.  Jobs go on when this process
    stops; a rerun waits for them."""

    poll_s = 10.0

    def __init__(self, options: str, workers: int, sweep_dir: Path, train: Callable[[Sequence[str]], int]):
        said = io.StringIO()
        try:
            with contextlib.redirect_stderr(said):  # argparse's usage and error, made one line below
                args = slurm.parser("--slurm").parse_args(shlex.split(options))
        except SystemExit:
            why = said.getvalue().strip().splitlines()[-1:] or [""]
            raise ConfigError(f"--slurm {options!r}: {why[0].removeprefix('--slurm: error: ')}; give bin/submit.py's "
                              "options, e.g. '--time 60 --cpus_per_task 2' (bin/submit.py --help)") from None  # fmt: skip
        if args.train or args.wait:
            raise ConfigError(f"--slurm {options!r}: give the SLURM options only (the sweep waits by itself)")
        self.workers, self.train, self.logs = workers, train, sweep_dir / SLURM_LOGS
        self.executor = slurm.make_executor(args, self.logs, f"sweep:{sweep_dir.name}")
        self.executor.update_parameters(array_parallelism=workers)
        self.running = {}  # number -> submitit job

    def slots(self, grid: bool) -> int:
        # A grid is known in advance: one array holds all of it.  TPE learns from finished trials: ask as slots free.
        return sys.maxsize if grid else self.workers - len(self.running)

    def start(self, trials: list[tuple[int, list[str], dict[str, str]]]) -> dict[int, str]:
        if not trials:
            return {}
        try:
            with self.executor.batch():
                jobs = [self.executor.submit(slurm.TrainingJob(self.train, argv, env)) for _, argv, env in trials]
        except Exception as err:  # sbatch refused it (a partition, a limit): the trials wait for the next sweep
            raise ConfigError(f"SLURM refused the job array: {first_line(err)}; fix --slurm and run the sweep "
                              "again") from None  # fmt: skip
        for (number, _, _), job in zip(trials, jobs, strict=True):
            self.running[number] = job
        print(f"Submitted job array {jobs[0].job_id.split('_')[0]}: trials {', '.join(str(n) for n, _, _ in trials)}")
        return {number: job.job_id for (number, _, _), job in zip(trials, jobs, strict=True)}

    def take_over(self, number: int, user_attrs: dict) -> bool:
        """True if the trial's job is still queued or running (then it is waited for)."""
        import submitit

        job_id = user_attrs.get("slurm_job")
        if job_id is None:
            return False
        job = submitit.SlurmJob(folder=self.logs / "%j", job_id=job_id)
        if job.state.split()[0] in ENDED:  # ("UNKNOWN": not in the accounting yet; it is waited for)
            return False
        self.running[number] = job
        return True

    def ended(self) -> list[tuple[int, int, str]]:
        done = []
        if self.running:  # one sacct call for all (submitit's own refresh waits up to 10 minutes)
            next(iter(self.running.values())).watcher.update()
        for number, job in list(self.running.items()):
            state = job.watcher.get_state(job.job_id, mode="cache").split()[0]  # "CANCELLED by 0" -> CANCELLED
            if state in ENDED:  # (the run's folder says more: see Sweep.conclude)
                code = {"COMPLETED": 0, "FAILED": 1, "OUT_OF_MEMORY": 1}.get(state, -signal.SIGTERM)
                done.append((number, code, f"job {job.job_id} {state}"))
                del self.running[number]
        return done

    def stop(self, signum: int) -> None:
        print(f"The trials' jobs go on ({', '.join(job.job_id for job in self.running.values())}); "
              "run the same command again to collect them")  # fmt: skip
        self.running.clear()


# -- the sweep -----------------------------------------------------------------------------------
class Sweep:
    """Asks, starts, concludes: the loop of one sweep process (see the module's docstring)."""

    def __init__(self, spec: Spec, sweep_dir: Path, trials: LocalTrials | SlurmTrials, train_script: str):
        self.spec, self.sweep_dir, self.trials, self.train_script = spec, sweep_dir, trials, train_script
        self.study = open_study(sweep_dir, spec)
        self.parallel = trials.workers > 1

    def run(self, stop: StopFlag) -> int:
        """Take over the trials left running, then keep the slots full until every trial has ended; the exit
        code: 0 when all finished (or were pruned), 1 when some failed or stopped, 128+N after signal N."""
        from optuna.trial import TrialState

        left = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        orphans = [trial for trial in left if not self.trials.take_over(trial.number, trial.user_attrs)]
        for trial in list(orphans):  # ended before the sweep process that ran it could tell Optuna
            status = _read_json(trial_dir(self.sweep_dir, trial.number) / "meta.json").get("status")
            if status in (STATUS_FINISHED, STATUS_FAILED):
                self.conclude(trial.number, 0 if status == STATUS_FINISHED else 1, "", stop)
                orphans.remove(trial)
        for trial in orphans:
            print(f"trial {trial.number}: taken over (the process that ran it is gone); it resumes in its folder")
        waiting = [(trial.number, trial.params) for trial in orphans]  # started first, as slots free up
        while not stop.requested:
            slots = self.trials.slots(bool(self.spec.grid))
            new = min(max(slots - len(waiting), 0), self.spec.trials - len(self._trials()))
            taken, waiting = waiting[:slots], waiting[slots:]
            self._start(taken + [ask(self.study, self.spec, self.parallel) for _ in range(new)])
            if not self.trials.running:
                break
            time.sleep(self.trials.poll_s)
            self._conclude_ended(stop)
        if stop.requested:
            self.trials.stop(stop.signum)
            self._conclude_ended(stop)
        print_table(write_summary(self.sweep_dir, self.study, self.spec), self.study, self.spec)
        if stop.requested:
            return exit_code(stop.signum)
        return 0 if all(trial.state.name in ("COMPLETE", "PRUNED") for trial in self._trials()) else 1

    def _trials(self) -> list:
        return self.study.get_trials(deepcopy=False)

    def _conclude_ended(self, stop: StopFlag) -> None:
        ended = self.trials.ended()
        for number, code, last_line in ended:
            self.conclude(number, code, last_line, stop)
        if ended:  # (--status reads the study itself; summary.csv is for the other tools)
            write_summary(self.sweep_dir, self.study, self.spec)

    def _start(self, trials: list[tuple[int, dict[str, Any]]]) -> None:
        """Start each ``(number, parameters)``: ``bin/train.py CONFIG SWEEP_DIR/trial_NNNN <overrides> <params>``."""
        commands = []
        for number, params in trials:
            run, extra = trial_dir(self.sweep_dir, number), [as_override(key, value) for key, value in params.items()]
            _wait_until_free(run)  # a trial killed with its sweep process may take a moment to let its lock go
            print(f"trial {number}: {' '.join(extra)} -> {run}")
            argv = [self.train_script, self.spec.config, str(run), *self.spec.overrides, *extra]
            env = {TRIAL_ENV: f"{self.sweep_dir.absolute()}:{number}"} if self.spec.prune else {}
            commands.append((number, argv, env))
        for number, job_id in self.trials.start(commands).items():  # (SLURM's only)
            self.study._storage.set_trial_user_attr(self._trials()[number]._trial_id, "slurm_job", job_id)

    def conclude(self, number: int, code: int, last_line: str, stop: StopFlag) -> None:
        """Tell Optuna how trial ``number`` ended (exit ``code``): its objective, pruned or failed; or nothing
        when it was stopped (it stays RUNNING, and the next sweep process resumes it)."""
        from optuna.trial import TrialState

        run = trial_dir(self.sweep_dir, number)
        status = _read_json(run / "meta.json").get("status")
        signalled = code < 0 or code - 128 in SIGNALS or stop.requested  # (anything else is a failure)
        if code != 0 and status not in (STATUS_FAILED, STATUS_FINISHED) and signalled:
            print(f"trial {number}: stopped ({run}); run the same command again to resume it")
            return
        if code == 0 or status == STATUS_FINISHED:
            pruned_at = self._trials()[number].user_attrs.get("pruned_at_epoch")
            value, epoch = objective_value(run, self.spec.objective)
            if pruned_at is not None:
                self.study.tell(number, state=TrialState.PRUNED)
                print(f"trial {number}: pruned after epoch {pruned_at}")
                return
            if value is not None:
                self.study.tell(number, value)
                print(f"trial {number}: {self.spec.objective} {value:.6g} (epoch {epoch})")
                return
            last_line = f"no finite {self.spec.objective} in {run / 'history.csv'}"
        self.study.tell(number, state=TrialState.FAIL)
        where = run / "stderr.txt" if (run / "stderr.txt").is_file() else "its command"
        print(f"trial {number}: failed (exit {code}): {last_line or '?'}; see {where}", file=sys.stderr)


# -- the table -----------------------------------------------------------------------------------
STATES = {"COMPLETE": "finished", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running", "WAITING": "waiting"}


def summary(sweep_dir: Path, study, spec: Spec):
    """A row per trial: number, state, parameters, objective (at the best epoch), epochs done, duration, folder."""
    import pandas as pd

    rows = []
    for trial in study.get_trials(deepcopy=False):
        run = trial_dir(sweep_dir, trial.number)
        value, epoch = objective_value(run, spec.objective)
        meta, loop = _read_json(run / "meta.json"), _read_json(run / "loop_state.json")
        rows.append({
            "trial": trial.number,
            "state": STATES.get(trial.state.name, trial.state.name.lower()),
            **trial.params,
            spec.objective: value,
            "best_epoch": epoch,
            "epochs": loop.get("epoch", 0),
            "duration_s": round(sum(s.get("duration_s") or 0 for s in meta.get("sessions", [])), 1),
            "run": str(run),
        })  # fmt: skip
    return pd.DataFrame(rows)


def write_summary(sweep_dir: Path, study, spec: Spec):
    table = summary(sweep_dir, study, spec)
    atomic_write_bytes(sweep_dir / SUMMARY, table.to_csv(index=False).encode())
    return table


def print_table(table, study, spec: Spec) -> None:
    import pandas as pd

    with pd.option_context("display.width", 200, "display.max_columns", None, "display.max_colwidth", 80):
        print(table.to_string(index=False) if len(table) else "no trials yet")
    counts = table["state"].value_counts().to_dict() if len(table) else {}
    print(f"{len(table)} of {spec.trials} trials: " + ", ".join(f"{n} {state}" for state, n in counts.items()))
    finished = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if finished:
        best = study.best_trial
        params = " ".join(as_override(key, value) for key, value in best.params.items())
        print(f"best: trial {best.number}, {spec.objective} {best.value:.6g} ({spec.direction}): {params}")


def read_spec(sweep_dir: Path) -> Spec:
    data = _read_json(sweep_dir / SPEC)
    if not data:
        raise ConfigError(f"{sweep_dir} holds no sweep ({SPEC} is missing or unreadable)")
    return Spec(**data["spec"])


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def main(argv: Sequence[str], check: Check, maximize: Callable, train: Callable[[Sequence[str]], int],
         stop: StopFlag) -> int:  # fmt: skip
    """``bin/sweep.py``: ``check`` is bin/train.py's check of a command, ``maximize(cfg, column)`` the
    direction of a history column (``ConfigError`` for a column runs of ``cfg`` do not write), ``train`` the
    training function that SLURM jobs call."""
    split = list(argv).index("--") if "--" in argv else len(argv)
    args = parser(Path(argv[0]).name).parse_args(argv[1:split])
    overrides = list(argv[split + 1 :])
    if args.status:
        sweep_dir = Path(args.status)
        spec = read_spec(sweep_dir)
        study = open_study(sweep_dir, spec)
        print_table(write_summary(sweep_dir, study, spec) if _is_free(sweep_dir) else summary(sweep_dir, study, spec),
                    study, spec)  # fmt: skip
        return 0
    if not args.config or not args.sweep_dir:
        raise ConfigError("give CONFIG and SWEEP_DIR (or --status SWEEP_DIR); --help shows examples")
    sweep_dir = Path(args.sweep_dir)
    spec = make_spec(args, overrides, check, maximize)
    if args.slurm:
        trials = SlurmTrials(args.slurm, args.workers, sweep_dir, train)
    else:
        trials = LocalTrials(args.workers, args.nproc_per_node)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    try:
        lock = RunLock(sweep_dir).__enter__()
    except ResultsDirLocked as err:
        said = str(err).replace("another run", "another sweep")
        raise ConfigError(said.replace("RESULTS_DIR", "SWEEP_DIR")) from None
    with lock:
        if (sweep_dir / SPEC).exists():
            if not read_spec(sweep_dir).same_search(spec):
                raise ConfigError(f"{sweep_dir} holds another sweep ({sweep_dir / SPEC} has its command); run that "
                                  "command to resume it, or use another SWEEP_DIR")  # fmt: skip
            print(f"Resuming the sweep in {sweep_dir}")
        atomic_write_json(sweep_dir / SPEC, {"argv": list(argv), "time": utc_now(), "spec": asdict(spec)})
        script = str(Path(argv[0]).resolve().with_name("train.py"))
        return Sweep(spec, sweep_dir, trials, script).run(stop)


def _wait_until_free(run: Path, timeout_s: float = 120) -> None:
    """Wait until no process holds the results directory ``run`` (at most ``timeout_s``; the trial then says)."""
    deadline = time.monotonic() + timeout_s
    while run.is_dir() and not _is_free(run) and time.monotonic() < deadline:
        time.sleep(0.5)


def _is_free(sweep_dir: Path) -> bool:
    """No process holds ``sweep_dir``'s lock now (a sweep's folder, or a trial's)."""
    try:
        with RunLock(sweep_dir):
            return True
    except ResultsDirLocked:
        return False
