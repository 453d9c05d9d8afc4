"""The baked project under test: baking, importing, synthetic data and running its trainer.

Everything here goes through the generated project's own code paths: its
config registry and overrides (``engine.cli``), ``experiment.make_trainer``,
the CIFAR-10 binary reader and the ``DATASETS`` registry, which is the
documented way to add a dataset.
"""

from __future__ import annotations

import contextlib
import csv
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

TEMPLATE_ROOT = Path(__file__).resolve().parents[1]
TABLE_DATASET = "synthetic_table"  # name of the benchmark's tabular loader in the project's DATASETS


def bake(output_dir: Path) -> tuple[Path, str]:
    """Bake the template with its default answers into ``output_dir``; return (project root, package name).

    The hooks are skipped: with ``setup_env=false init_git=false`` they only
    pick the license file and record the answers, nothing the benchmarks use.
    Cookiecutter's replay files and its config go under ``output_dir`` too, so
    nothing is written to the home folder.
    """
    from cookiecutter.main import cookiecutter

    output_dir.mkdir(parents=True, exist_ok=True)
    config = output_dir / "cookiecutter-config.yaml"
    config.write_text(f"cookiecutters_dir: {output_dir / 'cookiecutters'}\nreplay_dir: {output_dir / 'replay'}\n")
    root = cookiecutter(
        str(TEMPLATE_ROOT),
        no_input=True,
        output_dir=str(output_dir),
        config_file=str(config),
        extra_context={"setup_env": False, "init_git": False},
        accept_hooks=False,
    )
    package = json.loads((TEMPLATE_ROOT / "cookiecutter.json").read_text())["proj_name"]
    return Path(root), package


def template_version() -> dict[str, Any]:
    """The template's git commit, and whether its project folder, answers or hooks differ from it."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(TEMPLATE_ROOT), *args], capture_output=True, text=True, check=True, timeout=30
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--", "{{cookiecutter.repo_name}}", "cookiecutter.json", "hooks"))
    except (OSError, subprocess.SubprocessError):  # not a git checkout, or no git
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": dirty}


class Project:
    """The baked project's modules, imported from ``root`` (put first on ``sys.path``)."""

    def __init__(self, root: Path, package: str):
        self.root, self.package = root, package
        sys.path.insert(0, str(root))
        self.experiment = self.module("experiment")
        self.configs = self.module("configs")
        self.cli = self.module("engine.cli")
        self.data = self.module("engine.data")
        self.results = self.module("engine.results")
        self.datasets = self.module("datasets")
        self.cifar10 = self.module("datasets.cifar10")
        self.networks = self.module("networks")

    def module(self, name: str) -> ModuleType:
        return importlib.import_module(f"{self.package}.{name}")

    def config(self, name: str, overrides: dict[str, Any]):
        """Config ``name`` with ``--key=value`` overrides, parsed and checked exactly as ``bin/train.py`` does."""
        items = [f"{key}={value}" for key, value in overrides.items()]
        cfg = self.cli.load_config(self.configs.CONFIGS, name, items, self.configs.SELECTORS)
        self.configs.check(cfg)
        return cfg

    def device(self, cfg) -> torch.device:
        return self.experiment.resolve_device(cfg.device)


# -- synthetic data ---------------------------------------------------------------------------------
def write_cifar10(root: Path, train_samples: int, test_samples: int, seed: int = 0) -> Path:
    """Random CIFAR-10 in the official binary format under ``root/cifar-10-batches-bin``; return ``root``.

    Each record is 1 label byte and 3072 image bytes; the training records are
    spread over ``data_batch_1..5.bin`` like the real archive.
    """
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    def write(path: Path, n: int) -> None:
        records = np.empty((n, 1 + 3 * 32 * 32), dtype=np.uint8)
        records[:, 0] = rng.integers(0, 10, n)
        records[:, 1:] = rng.integers(0, 256, (n, 3 * 32 * 32))
        records.tofile(path)

    for index, part in enumerate(np.array_split(np.arange(train_samples), 5), start=1):
        write(folder / f"data_batch_{index}.bin", len(part))
    write(folder / "test_batch.bin", test_samples)
    return root


def register_table_dataset(project: Project, samples: int, features: int, classes: int = 10, seed: int = 0) -> None:
    """Add a synthetic tabular dataset (standard-normal features, labels from a random linear teacher).

    It is registered as ``DATASETS["synthetic_table"]``, the project's own
    extension point, so ``make_trainer`` builds it like any other dataset; the
    tensors are generated once here, not in every build.
    """
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, features, generator=generator)
    y = (x @ torch.randn(features, classes, generator=generator)).argmax(1)
    n_test = samples // 10
    common = project.module("datasets.common")

    class SyntheticTable:
        input_shape = [features]
        num_classes = classes
        class_names = [f"c{i}" for i in range(classes)]

        def __init__(self, cfg):
            self.validation_split, self.split_seed = cfg.validation_split, cfg.split_seed

        def train_valid(self):
            pool = common.Split(x[n_test:], y[n_test:])
            return common.carve_validation(pool, self.validation_split, self.split_seed)

        def test(self):
            return common.Split(x[:n_test], y[:n_test])

        def batch_transform(self, train: bool):
            return None

    project.datasets.DATASETS[TABLE_DATASET] = SyntheticTable


# -- a terminal that discards -------------------------------------------------------------------------
class NullTerminal:
    """A stream that claims to be a terminal and discards what it gets, counting the characters.

    Progress bars (``tqdm(disable=None)`` switches itself off on a non-terminal)
    then render at their real cost whether the benchmark runs in a terminal, a
    pipe or a test, and nothing reaches the screen.
    """

    encoding = "utf-8"

    def __init__(self) -> None:
        self._sink = open(os.devnull, "w")
        self.chars = 0

    def write(self, text: str) -> int:
        self.chars += len(text)
        return self._sink.write(text)

    def flush(self) -> None:
        self._sink.flush()

    def isatty(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._sink.fileno()

    def close(self) -> None:
        self._sink.close()


@contextlib.contextmanager
def null_terminal() -> Iterator[NullTerminal]:
    """Point ``sys.stdout`` and ``sys.stderr`` at one ``NullTerminal`` for the duration."""
    terminal = NullTerminal()
    saved = sys.stdout, sys.stderr
    sys.stdout = sys.stderr = terminal
    try:
        yield terminal
    finally:
        sys.stdout, sys.stderr = saved
        terminal.close()


# -- the generated trainer, all features on ------------------------------------------------------------
@dataclass
class TrainerRun:
    """What one run of a training loop leaves for the comparison."""

    seconds: float  # wall time of the epochs (fit), excluding building data and model
    train_loss: float  # mean training loss of the last epoch
    valid_loss: float  # validation loss after the last epoch
    initial: dict[str, torch.Tensor]  # the network's weights before training
    final: dict[str, torch.Tensor]  # ... and after
    epoch_times: list[float] = field(default_factory=list)  # the trainer's own epoch_time_s (train + valid)
    features: dict[str, Any] = field(default_factory=dict)  # evidence that every feature was on


def clone_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone().cpu() for name, value in module.state_dict().items()}


def run_trainer(project: Project, cfg, work_dir: Path) -> TrainerRun:
    """Train ``cfg`` with the generated Trainer into a fresh results directory; time ``fit()`` only.

    As ``experiment.train`` does: ``make_trainer``, ``capture_output()``
    (stdout.txt / stderr.txt), ``resume()``, ``fit()`` with history.csv,
    TensorBoard, a checkpoint per epoch and the tqdm bar on a (null) terminal.
    """
    results = project.results.ResultsDir(Path(tempfile.mkdtemp(dir=work_dir, prefix="trainer-")))
    device = project.device(cfg)
    trainer = project.experiment.make_trainer(cfg, results, device)
    initial = clone_state(trainer.model.network)
    with null_terminal() as terminal:
        results.capture_output()
        try:
            trainer.resume()
            start = time.perf_counter()
            trainer.fit()
            seconds = time.perf_counter() - start
        finally:
            results.release_output()
    with open(results.history_path, newline="") as f:
        history = list(csv.DictReader(f))
    features = {
        "history_rows": len(history),
        "tensorboard_files": len(list(results.path.rglob("events.out.tfevents.*"))),
        # The kept checkpoints (the newest checkpoint.keep) must be those of the last epoch ends.
        "checkpoint_steps": sorted(int(p.name.split("_")[1]) for p in (results.path / "checkpoints").glob("step_*")),
        "last_epoch_end_steps": [len(trainer.train) * e for e in range(1, cfg.num_epochs + 1)][-cfg.checkpoint.keep :],
        "stdout_txt_bytes": (results.path / "stdout.txt").stat().st_size,
        "progress_bar_chars": terminal.chars,
    }
    return TrainerRun(
        seconds=seconds,
        train_loss=float(history[-1]["train_loss"]),
        valid_loss=float(history[-1]["valid_loss"]),
        initial=initial,
        final=clone_state(trainer.model.network),
        epoch_times=[float(row["epoch_time_s"]) for row in history],
        features=features,
    )


def features_on(run: TrainerRun, epochs: int) -> str | None:
    """None if every trainer feature left its trace, else what is missing."""
    f = run.features
    missing = [
        name
        for name, ok in (
            ("history.csv rows", f["history_rows"] == epochs),
            ("TensorBoard events", f["tensorboard_files"] >= 1),
            ("a checkpoint at each of the last epoch ends", f["checkpoint_steps"] == f["last_epoch_end_steps"]),
            ("stdout.txt", f["stdout_txt_bytes"] > 0),
            ("progress bar", f["progress_bar_chars"] > 0),
        )
        if not ok
    ]
    return ", ".join(missing) or None


def sync(device: torch.device) -> None:
    """Wait for queued device work, so that a timer stops after it (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
