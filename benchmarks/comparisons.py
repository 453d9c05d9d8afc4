"""The five comparisons; each returns result rows and checks that its sides computed the same thing."""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from measure import Row, Side, alternate
from project import TABLE_DATASET, Project, TrainerRun, features_on, null_terminal, run_trainer, sync
from sides import lightning_missing, make_workload, run_bare, run_lightning

CIFAR10_TRAIN_RECORDS = 50_000  # the real data set, for the epoch-time estimate of the shipped cifar10 config
LOSS_RTOL = 1e-4  # final losses of two sides may differ by this much (relative): summation order only
WEIGHT_ATOL = 1e-4  # ... and their final weights by this much (absolute)
DATA_REPEATS = 5  # the data rows time epochs of milliseconds: 5x the repetitions, for stable medians
# The trainer rows checkpoint every epoch, as the comparison asks, also epochs shorter than the
# project's checkpoint.min_interval_s (which would space their checkpoints out).
EVERY_EPOCH = {"checkpoint.min_interval_s": 0}


@dataclass(frozen=True)
class Settings:
    """Sizes of one benchmark run (``FULL`` or ``QUICK``)."""

    repeats: int  # timed repetitions of every side
    warmup: int  # untimed rounds first (lazy imports, first-call kernel choice, cold caches)
    mlp_samples: int  # rows of the synthetic table: 10% test, then 20% of the rest validates
    mlp_features: int
    mlp_epochs: int
    cifar_samples: int  # synthetic CIFAR-10 training records: 10% validates (the cifar10 config)
    cnn_filters: int  # the small CNN of the trainer comparisons (the checkpoint row uses the config's 32)
    cnn_epochs: int
    mlp_images_samples: int  # synthetic CIFAR-10 records for the MLP on images (50,000: the real size)
    checkpoint_steps: int  # timed training steps and checkpoint writes per network
    startup_runs: int  # timed runs of each start-up command

    def with_repeats(self, repeats: int) -> Settings:
        return dataclasses.replace(self, repeats=repeats, startup_runs=repeats)


FULL = Settings(
    repeats=7, warmup=1, mlp_samples=50_000, mlp_features=64, mlp_epochs=6,
    cifar_samples=5_000, cnn_filters=8, cnn_epochs=2, mlp_images_samples=50_000, checkpoint_steps=5, startup_runs=7,
)  # fmt: skip
QUICK = Settings(
    repeats=1, warmup=0, mlp_samples=2_000, mlp_features=16, mlp_epochs=1,
    cifar_samples=500, cnn_filters=4, cnn_epochs=1, mlp_images_samples=500, checkpoint_steps=1, startup_runs=1,
)  # fmt: skip


@dataclass
class Bench:
    """Everything the comparisons share: the baked project, a scratch folder, the settings."""

    project: Project
    work_dir: Path
    settings: Settings
    device: str  # the config's device key: auto, cpu, cuda, ...
    cifar_root: Path
    cifar_full_root: Path  # mlp_images_samples records: epochs as long as real CIFAR-10's

    def mlp_config(self, **overrides):
        """The iris config (MLP, SGD with momentum) on the synthetic table, at batch size 128."""
        s = self.settings
        base = {"data.name": TABLE_DATASET, "batch_size": 128, "num_epochs": s.mlp_epochs, "device": self.device}
        return self.project.config("iris", {**base, **EVERY_EPOCH, **overrides})

    def cnn_config(self, **overrides):
        """The cifar10 config on the synthetic CIFAR-10 files, without augmentation (see README)."""
        s = self.settings
        base = {
            "data.root": self.cifar_root, "data.augment": False, "model.n_filters": s.cnn_filters,
            "num_epochs": s.cnn_epochs, "device": self.device, **EVERY_EPOCH,
        }  # fmt: skip
        return self.project.config("cifar10", {**base, **overrides})

    def mlp_images_config(self):
        """The cifar10 config with ``--model=mlp`` on CIFAR-10-sized data: the classic MLP baseline."""
        s = self.settings
        base = {"model": "mlp", "data.root": self.cifar_full_root, "data.augment": False, "num_epochs": s.cnn_epochs}
        return self.project.config("cifar10", {**base, "device": self.device, **EVERY_EPOCH})


# -- 1 and 2: the generated trainer vs a bare loop and vs Lightning ---------------------------------------
def compare_training(reference: list[TrainerRun], runs: list[TrainerRun]) -> tuple[bool, str]:
    """Did every run start from the reference's weights and end with its losses and weights?"""
    ref = reference[0]
    same_start = all(
        torch.equal(run.initial[name], value) for run in [*reference, *runs] for name, value in ref.initial.items()
    )
    loss_diff = weight_diff = 0.0
    for run in [*reference[1:], *runs]:
        for mine, theirs in ((run.train_loss, ref.train_loss), (run.valid_loss, ref.valid_loss)):
            loss_diff = max(loss_diff, abs(mine - theirs) / max(abs(theirs), 1e-12))
        for name, value in ref.final.items():
            if value.is_floating_point():
                weight_diff = max(weight_diff, (run.final[name] - value).abs().max().item())
            elif not torch.equal(run.final[name], value):
                weight_diff = math.inf
    passed = same_start and loss_diff <= LOSS_RTOL and weight_diff <= WEIGHT_ATOL
    detail = (
        f"{'same' if same_start else 'DIFFERENT'} initial weights; final train/valid loss "
        f"{ref.train_loss:.6g}/{ref.valid_loss:.6g}, max rel. difference {loss_diff:.2g} (tol {LOSS_RTOL:g}); "
        f"max weight difference {weight_diff:.2g} (tol {WEIGHT_ATOL:g})"
    )
    return passed, detail


def trainer_rows(bench: Bench) -> list[Row]:
    s, project = bench.settings, bench.project
    workloads = {
        "mlp": (bench.mlp_config(), s.mlp_epochs, False),
        "mlp_images": (bench.mlp_images_config(), s.cnn_epochs, True),
        "cnn": (bench.cnn_config(), s.cnn_epochs, True),
    }
    no_lightning = lightning_missing()
    if no_lightning:
        print(f"  note: skipping the Lightning rows: {no_lightning}")
    rows = []
    for name, (cfg, epochs, normalise) in workloads.items():
        # The bare loop and Lightning use one SGD learning rate: the config's schedule must not change it.
        assert all(lr == cfg.optimizer.lr for start, lr in cfg.lr_schedule if start <= epochs), cfg.lr_schedule
        workload = make_workload(project, cfg, normalise)  # for the description; every run builds its own:
        # the trainer builds fresh tensors every run, so the other sides do too (untimed), and no side runs on
        # memory that another one has warmed or placed differently.
        sides: dict[str, Callable[[], TrainerRun]] = {
            "trainer": lambda cfg=cfg: run_trainer(project, cfg, bench.work_dir),
            "bare": lambda cfg=cfg, n=normalise, e=epochs: run_bare(project, make_workload(project, cfg, n), e),
        }
        if not no_lightning:
            sides["lightning"] = lambda cfg=cfg, n=normalise, e=epochs: run_lightning(
                project, make_workload(project, cfg, n), e, bench.work_dir
            )
        print(f"  {name}: {', '.join(sides)} x {s.repeats} (+{s.warmup} warm-up), {epochs} epochs each")
        threads = torch.get_num_threads()
        runs = alternate(sides, s.repeats, s.warmup)
        if torch.get_num_threads() != threads:  # a side must not change the conditions of the next one
            raise RuntimeError(f"a side changed torch's thread count from {threads} to {torch.get_num_threads()}")

        trainer = runs["trainer"]
        steps = len(workload.train)
        shape = "x".join(map(str, workload.train.x.shape))
        workload_text = f"train {shape}, valid {len(workload.valid.x)}, batch {cfg.batch_size}, {epochs} epochs"
        per_epoch = Side("generated trainer, all features", "s/epoch", [r.seconds / epochs for r in trainer])
        missing = [gap for run in trainer if (gap := features_on(run, epochs))]

        bare = Side("bare PyTorch loop", "s/epoch", [r.seconds / epochs for r in runs["bare"]])
        passed, detail = compare_training(trainer, runs["bare"])
        if missing:
            passed, detail = False, f"trainer features missing: {missing[0]}; {detail}"
        # What the trainer adds per optimisation step, from the paired repetitions.
        overhead_us = statistics.median(a - b for a, b in zip(per_epoch.values, bare.values, strict=True)) / steps * 1e6
        # fit() time outside the epochs' own epoch_time_s (train + validate): TensorBoard writers opened, epoch-end
        # rows, scalars and checkpoint copies, the wait for the last checkpoint to reach the disk.
        outside_ms = statistics.median(r.seconds - sum(r.epoch_times) for r in trainer) * 1e3
        rows.append(
            Row(
                f"trainer_vs_bare/{name}",
                f"{name}: generated trainer vs bare loop",
                per_epoch,
                bare,
                target_op="<=",
                target=1.05,
                check_passed=passed,
                check_detail=detail,
                notes={
                    "workload": workload_text,
                    "overhead_per_step_us": round(overhead_us, 1),
                    "trainer_outside_epochs_ms_per_run": round(outside_ms, 1),
                },
            )
        )
        lightning_row = Row(
            f"trainer_vs_lightning/{name}", f"{name}: generated trainer vs Lightning", target_op="<", target=1.0
        )
        if no_lightning:
            lightning_row.skipped = no_lightning
        else:
            lightning = Side("Lightning Trainer", "s/epoch", [r.seconds / epochs for r in runs["lightning"]])
            passed, detail = compare_training(trainer, runs["lightning"])
            if not all(r.features["checkpoints"] for r in runs["lightning"]):
                passed, detail = False, f"Lightning wrote no checkpoint; {detail}"
            lightning_row.a, lightning_row.b = per_epoch, lightning
            lightning_row.check_passed, lightning_row.check_detail = passed, detail
            lightning_row.notes = {"workload": workload_text}
        rows.append(lightning_row)
    return rows


# -- 3: batches from memory vs through a DataLoader --------------------------------------------------------
def timed_epoch(batches, device: torch.device) -> float:
    start = time.perf_counter()
    for _ in batches:
        pass
    sync(device)
    return time.perf_counter() - start


def epoch_sources(bench: Bench, cfg) -> tuple[object, torch.utils.data.TensorDataset, Callable, torch.device]:
    """``cfg``'s training split as the project's ``InMemoryBatches``, as a ``TensorDataset``, and a plain
    per-sample ``DataLoader`` epoch over it in the same order: ``(memory, dataset, plain_epoch, device)``."""
    project = bench.project
    device = project.device(cfg)
    split = project.experiment.build(cfg, device)["batches"]["train"]
    memory = project.data.InMemoryBatches(split.x, split.y, cfg.batch_size, shuffle=True, seed=cfg.seed)
    dataset = torch.utils.data.TensorDataset(split.x.cpu(), split.y.cpu())
    order = memory.order(1).cpu().tolist()  # the same batches on every side
    plain = torch.utils.data.DataLoader(dataset, batch_size=cfg.batch_size, sampler=order, num_workers=0)

    def plain_epoch():
        return ((xb.to(device), yb.to(device)) for xb, yb in plain)  # on the device, like the other sides

    return memory, dataset, plain_epoch, device


def same_batches(memory, served: dict[str, list]) -> tuple[bool, str]:
    """Did every side serve exactly the batches of ``memory.epoch(1)``? (untimed)"""
    reference = list(memory.epoch(1))
    same = all(len(batches) == len(reference) for batches in served.values()) and all(
        torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        for batches in served.values()
        for a, b in zip(reference, batches, strict=True)
    )
    shape = "x".join(map(str, memory.x.shape[1:]))
    return same, f"{'all' if same else 'NOT all'} {len(reference)} batches equal ({len(memory.x)} samples {shape})"


def data_rows(bench: Bench) -> list[Row]:
    """One epoch of CIFAR-sized uint8 tensors, just iterating the batches (no transform, no training)."""
    s, project = bench.settings, bench.project
    cfg = bench.cnn_config()
    memory, dataset, plain_epoch, device = epoch_sources(bench, cfg)
    default_workers = project.configs.DataConfig().num_workers
    workers = project.data.DataLoaderBatches(
        dataset, cfg.batch_size, device, shuffle=True, seed=cfg.seed, num_workers=default_workers
    )  # as experiment.make_batches builds it for data.loader=dataloader
    # Same result, untimed; this first pass also starts the persistent workers.
    same, detail = same_batches(memory, {"plain": list(plain_epoch()), "workers": list(workers.epoch(1))})

    repeats = s.repeats * DATA_REPEATS
    print(f"  one epoch of {len(memory.x)} images, batch {cfg.batch_size}: 3 sides x {repeats} (+{s.warmup} warm-up)")
    times = alternate(
        {
            "memory": lambda: timed_epoch(memory.epoch(1), device),
            "plain": lambda: timed_epoch(plain_epoch(), device),
            "workers": lambda: timed_epoch(workers.epoch(1), device),
        },
        repeats,
        s.warmup,
    )
    memory_side = Side("InMemoryBatches (index slicing)", "s/epoch", times["memory"])
    return [
        Row(
            "data/memory_vs_dataloader",
            "in-memory batches vs DataLoader(TensorDataset), num_workers=0",
            memory_side,
            Side("DataLoader, per-sample indexing, 0 workers", "s/epoch", times["plain"]),
            target_op="<=",
            target=0.1,
            check_passed=same,
            check_detail=detail,
        ),
        Row(
            "data/memory_vs_dataloaderbatches",
            f"in-memory batches vs the project's DataLoaderBatches ({default_workers} workers, its default)",
            memory_side,
            Side(f"DataLoaderBatches, {default_workers} persistent workers", "s/epoch", times["workers"]),
            target_op="<=",
            target=0.1,
            check_passed=same,
            check_detail=detail,
        ),
        table_data_row(bench),
    ]


def table_data_row(bench: Bench) -> Row:
    """The same on small per-sample tensors: the training rows of the mlp workload's table (64 floats each)."""
    s = bench.settings
    cfg = bench.mlp_config()
    memory, _, plain_epoch, device = epoch_sources(bench, cfg)
    same, detail = same_batches(memory, {"plain": list(plain_epoch())})
    repeats = s.repeats * DATA_REPEATS
    print(
        f"  one epoch of {len(memory.x)} table rows, batch {cfg.batch_size}: 2 sides x {repeats} (+{s.warmup} warm-up)"
    )
    times = alternate(
        {"memory": lambda: timed_epoch(memory.epoch(1), device), "plain": lambda: timed_epoch(plain_epoch(), device)},
        repeats,
        s.warmup,
    )
    return Row(
        "data/table_memory_vs_dataloader",
        "in-memory batches vs DataLoader(TensorDataset), num_workers=0, on table rows",
        Side("InMemoryBatches (index slicing)", "s/epoch", times["memory"]),
        Side("DataLoader, per-sample indexing, 0 workers", "s/epoch", times["plain"]),
        target_op="<=",
        target=0.1,
        check_passed=same,
        check_detail=detail,
    )


# -- 4: checkpoint time against epoch time ----------------------------------------------------------------
def time_saves(project: Project, trainer, saves: int) -> tuple[list[float], list[float], bool]:
    """Time ``saves`` checkpoints of ``trainer``'s current state; True if the last one reads back equal.

    Returns the time ``Trainer.save()`` holds up the training thread (copying
    the state and handing it to the background writer), the time until the
    checkpoint is on disk (``save()`` plus waiting for the writer), and the check.
    """
    blocking, total = [], []
    for _ in range(saves):
        trainer.global_step += 1  # a new step: save() skips a state that is already on disk
        start = time.perf_counter()
        trainer.save()
        blocking.append(time.perf_counter() - start)
        trainer.wait_for_disk()  # as after an epoch: the writer is idle when the next checkpoint comes
        total.append(time.perf_counter() - start)
    return blocking, total, newest_checkpoint_is_the_network(project, trainer)


def newest_checkpoint_is_the_network(project: Project, trainer) -> bool:
    """Does the newest checkpoint on disk hold ``trainer``'s current step and weights?"""
    checkpoint = project.module("engine.checkpoint")
    newest = checkpoint.list_checkpoints(trainer.results.path)[-1]
    weights, _, loop = checkpoint.load_checkpoint(newest)
    network = trainer.model.network.state_dict()
    return loop["global_step"] == trainer.global_step and all(
        torch.equal(weights[name], value.cpu()) for name, value in network.items()
    )


def checkpoint_work_per_epoch(bench: Bench, cfg, runs: int) -> tuple[list[float], list[float], dict, bool]:
    """Fit ``cfg`` ``runs`` times and time the training thread's checkpoint work, as the config ships.

    The work is every checkpoint's copy of the state and its hand-over to the
    writer (what ``Trainer.save()`` does) and, at epoch ends that
    ``checkpoint.min_interval_s`` does not checkpoint, the copy of a new best
    epoch's weights for best_model.pt.
    Returns per run that work divided by the epochs, the median epoch time,
    notes and whether every run's newest checkpoint is its final network.
    """
    project, per_epoch, epoch_medians, checkpoints, same = bench.project, [], [], [], True
    for _ in range(runs):
        results = project.results.ResultsDir(Path(tempfile.mkdtemp(dir=bench.work_dir, prefix="checkpoint-")))
        trainer = project.experiment.make_trainer(cfg, results, project.device(cfg))
        spent, handed_over = [], []
        # Instance attributes: the loop's self._capture() etc. call these.
        for name in ("_capture", "_keep_best_weights"):
            setattr(trainer, name, _timed(getattr(trainer, name), spent))
        trainer._hand_over = _timed(trainer._hand_over, handed_over)
        with null_terminal():
            trainer.resume()
            trainer.fit()
        with open(results.history_path, newline="") as f:
            epoch_times = [float(row["epoch_time_s"]) for row in csv.DictReader(f)]
        per_epoch.append((sum(spent) + sum(handed_over)) / len(epoch_times))
        epoch_medians.append(statistics.median(epoch_times))
        checkpoints.append(len(handed_over))
        same = same and newest_checkpoint_is_the_network(project, trainer)
    notes = {
        "epochs": cfg.num_epochs,
        "checkpoints_written": f"{min(checkpoints)}-{max(checkpoints)} per run",
        "min_interval_s": cfg.checkpoint.min_interval_s,
    }
    return per_epoch, epoch_medians, notes, same


def _timed(function: Callable, spent: list[float]) -> Callable:
    def timed(*args):
        start = time.perf_counter()
        result = function(*args)
        spent.append(time.perf_counter() - start)
        return result

    return timed


def fitted_trainer(bench: Bench, cfg):
    """A trainer that has run ``cfg`` to its end (fresh results directory), and its epoch times."""
    project = bench.project
    results = project.results.ResultsDir(Path(tempfile.mkdtemp(dir=bench.work_dir, prefix="checkpoint-")))
    trainer = project.experiment.make_trainer(cfg, results, project.device(cfg))
    with null_terminal():
        trainer.resume()
        trainer.fit()
    with open(results.history_path, newline="") as f:
        return trainer, [float(row["epoch_time_s"]) for row in csv.DictReader(f)]


def estimated_cifar10_epoch(bench: Bench, steps: int) -> tuple[object, float, dict]:
    """A trainer of the shipped cifar10 config and its epoch time on the real CIFAR-10 size, estimated.

    A full epoch (45,000 images through the 32-filter CNN) takes minutes on a
    small CPU, so ``steps`` training steps and as many validation steps are
    timed, batches included (augmentation on, as shipped), and scaled to the
    real number of steps.
    """
    project = bench.project
    cfg = project.config("cifar10", {"data.root": bench.cifar_root, "num_epochs": 1, "device": bench.device})
    results = project.results.ResultsDir(Path(tempfile.mkdtemp(dir=bench.work_dir, prefix="checkpoint-")))
    device = project.device(cfg)
    trainer = project.experiment.make_trainer(cfg, results, device)
    model = trainer.model

    def timed(iterator, step: Callable) -> list[float]:
        times = []
        for i in range(steps + 1):  # the first step pays one-off costs: not counted
            start = time.perf_counter()
            x, y = next(iterator)
            step(x, y)
            sync(device)
            if i:
                times.append(time.perf_counter() - start)
        return times

    def endless(batches, epoch: int):  # the synthetic files may hold fewer batches than there are steps to time
        while True:
            yield from batches.epoch(epoch)

    model.network.train()
    train_times = timed(endless(trainer.train, 1), lambda x, y: model.train_step([(x, y)]))
    model.network.eval()
    with torch.no_grad():
        valid_times = timed(endless(trainer.valid, 0), model.eval_step)
    trainer.global_step = steps + 1
    n_valid = round(CIFAR10_TRAIN_RECORDS * cfg.data.validation_split)
    train_steps = math.ceil((CIFAR10_TRAIN_RECORDS - n_valid) / cfg.batch_size)
    valid_steps = math.ceil(n_valid / cfg.batch_size)
    median = statistics.median(train_times), statistics.median(valid_times)
    estimate = train_steps * median[0] + valid_steps * median[1]
    notes = {
        "epoch": f"estimated: {train_steps} x {median[0]:.3f} s training steps + {valid_steps} x {median[1]:.3f} s "
        f"validation steps (CIFAR-10 size, batch {cfg.batch_size}, n_filters {cfg.model.n_filters}, augment on)",
    }
    return trainer, estimate, notes


def checkpoint_row(row_id: str, title: str, a: Side, b: Side, passed: bool, detail: str, notes: dict) -> Row:
    """A checkpoint row: checkpoint time over epoch time, <= 2% (one measurement per side, so not paired)."""
    return Row(
        row_id, title, a, b, target_op="<=", target=0.02, check_passed=passed, check_detail=detail, paired=False,
        notes=notes,
    )  # fmt: skip


def checkpoint_rows(bench: Bench) -> list[Row]:
    s = bench.settings
    saves = 3 * s.checkpoint_steps if s.repeats > 1 else 1
    rows = []

    print("  cifar10 config (cnn, 32 filters): timing steps for the epoch estimate, then checkpoints")
    trainer, estimate, notes = estimated_cifar10_epoch(bench, s.checkpoint_steps)
    times, written, same = time_saves(bench.project, trainer, saves)
    notes["written_s"] = round(statistics.median(written), 5)
    rows.append(
        checkpoint_row(
            "checkpoint/cnn32",
            "checkpoint vs epoch: cifar10 config (cnn, n_filters=32), full CIFAR-10 epoch",
            Side("Trainer.save(), training thread", "s", times),
            Side("epoch (estimated, see notes)", "s", [estimate]),
            passed=same and math.isfinite(estimate),
            detail=f"the timed checkpoint {'reads back equal to' if same else 'DIFFERS from'} the network",
            notes=notes,
        )
    )
    print("  mlp: training, then checkpoints")
    trainer, epoch_times = fitted_trainer(bench, bench.mlp_config())
    times, written, same = time_saves(bench.project, trainer, saves)
    rows.append(
        checkpoint_row(
            "checkpoint/mlp",
            f"checkpoint vs epoch: mlp (iris config) on the synthetic table, {s.mlp_samples} rows",
            Side("Trainer.save(), training thread", "s", times),
            Side("epoch (epoch_time_s of history.csv)", "s", epoch_times),
            passed=same and all(map(math.isfinite, epoch_times)),
            detail=f"the timed checkpoint {'reads back equal to' if same else 'DIFFERS from'} the network",
            notes={"epochs": len(epoch_times), "written_s": round(statistics.median(written), 5)},
        )
    )

    print(f"  iris: {s.repeats} runs of the shipped config, timing their checkpoint work")
    cfg = bench.project.config("iris", {"device": bench.device})
    work, epochs, notes, same = checkpoint_work_per_epoch(bench, cfg, s.repeats)
    rows.append(
        checkpoint_row(
            "checkpoint/iris",
            "checkpoint work per epoch vs epoch: iris config as shipped (150 rows, epochs of milliseconds)",
            Side("checkpoint work / epochs, training thread", "s", work),
            Side("epoch (epoch_time_s of history.csv)", "s", epochs),
            passed=same and all(map(math.isfinite, epochs)),
            detail=f"every run's newest checkpoint {'is' if same else 'is NOT'} its final network",
            notes=notes,
        )
    )
    return rows


# -- 5: start-up time ---------------------------------------------------------------------------------------
def startup_rows(bench: Bench) -> list[Row]:
    """``bin/train.py --help`` and a config error against ``python -c "import torch"``, as separate processes."""
    s, root = bench.settings, bench.project.root
    # As in a user's checkout: bytecode is cached after the first (warm-up) run.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    commands = {
        "help": [sys.executable, "bin/train.py", "--help"],
        "torch": [sys.executable, "-c", "import torch"],
        "error": [sys.executable, "bin/train.py", "iris", "x", "--num_epochs=abc"],
    }
    outputs: dict[str, subprocess.CompletedProcess] = {}

    def run(name: str) -> float:
        start = time.perf_counter()
        outputs[name] = subprocess.run(commands[name], cwd=root, env=env, capture_output=True, text=True, timeout=300)
        return time.perf_counter() - start

    print(f"  3 commands x {s.startup_runs} (+{s.warmup} warm-up)")
    times = alternate({name: lambda name=name: run(name) for name in commands}, s.startup_runs, s.warmup)
    help_ok = outputs["help"].returncode == 0 and "configs" in outputs["help"].stdout
    torch_ok = outputs["torch"].returncode == 0
    error_ok = outputs["error"].returncode == 2 and "num_epochs" in outputs["error"].stderr
    error_ok = error_ok and not (root / "x").exists()  # a config error writes nothing
    torch_side = Side('python -c "import torch"', "s", times["torch"])
    detail = f"--help exit {outputs['help'].returncode}, import torch exit {outputs['torch'].returncode}"
    return [
        Row(
            "startup/help",
            "start-up: bin/train.py --help vs import torch",
            Side("bin/train.py --help", "s", times["help"]),
            torch_side,
            target_op="<=",
            target=1.3,
            check_passed=help_ok and torch_ok,
            check_detail=detail + (", --help lists the configs" if help_ok else ", --help output WRONG"),
        ),
        Row(
            "startup/config_error",
            "start-up: a config error (bin/train.py iris x --num_epochs=abc) vs import torch",
            Side("bin/train.py iris x --num_epochs=abc", "s", times["error"]),
            torch_side,
            target_op="<=",
            target=1.3,
            check_passed=error_ok and torch_ok,
            check_detail=f"config error exit {outputs['error'].returncode}: {outputs['error'].stderr.strip()[:120]}",
        ),
    ]


GROUPS = {
    "trainer": trainer_rows,
    "data": data_rows,
    "checkpoint": checkpoint_rows,
    "startup": startup_rows,
}
