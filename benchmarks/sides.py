"""The baked project, the benchmarks' data, and the three in-process sides: the project's trainer, the bare
loop (``bare.py``) and Lightning.  Every side gets the same tensors from the project's own dataset loader, the
same network class built after the same seed, the same batch order and the same augmentation function."""

from __future__ import annotations

import contextlib
import csv
import importlib
import inspect
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import bare
import numpy as np
import torch
from torch import nn

TEMPLATE_ROOT = Path(__file__).resolve().parents[1]
TABLE = "synthetic_table"  # the table workload's name in the project's DATASETS


def bake(output_dir: Path) -> tuple[Path, str]:
    """Bake the template with its default answers; return (project root, package).  Hooks skipped: with
    ``setup_env=false init_git=false`` they only pick the licence file.  Cookiecutter's files stay in here."""
    from cookiecutter.main import cookiecutter

    output_dir.mkdir(parents=True, exist_ok=True)
    config = output_dir / "cookiecutter-config.yaml"
    config.write_text(f"cookiecutters_dir: {output_dir / 'cc'}\nreplay_dir: {output_dir / 'replay'}\n")
    root = cookiecutter(str(TEMPLATE_ROOT), no_input=True, output_dir=str(output_dir), config_file=str(config),
                        extra_context={"setup_env": False, "init_git": False}, accept_hooks=False)  # fmt: skip
    return Path(root), json.loads((TEMPLATE_ROOT / "cookiecutter.json").read_text())["proj_name"]


def template_version() -> dict:
    """The template's git commit, and whether the project template, answers or hooks differ from it."""
    try:
        git = ["git", "-C", str(TEMPLATE_ROOT)]
        commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout
        paths = ["{{cookiecutter.repo_name}}", "cookiecutter.json", "hooks"]
        status = subprocess.run([*git, "status", "--porcelain", "--", *paths], capture_output=True, text=True).stdout
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit.strip(), "dirty": bool(status.strip())}


def write_cifar10(root: Path, samples: int, seed: int = 0) -> Path:
    """Random images in the official CIFAR-10 binary format (``data_batch_1..5.bin``, ``test_batch.bin``)."""
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for index, n in enumerate([*(len(p) for p in np.array_split(np.arange(samples), 5)), 100], start=1):
        records = rng.integers(0, 256, (n, 1 + 3 * 32 * 32), dtype=np.uint8)
        records[:, 0] %= 10
        records.tofile(folder / (f"data_batch_{index}.bin" if index <= 5 else "test_batch.bin"))
    return root


class Project:
    """The baked project's modules (its root first on ``sys.path``)."""

    def __init__(self, root: Path, package: str):
        self.root, self.package = root, package
        sys.path.insert(0, str(root))
        self.experiment, self.configs, self.cli = (self.module(m) for m in ("experiment", "configs", "engine.cli"))
        self.results, self.datasets, self.cifar10 = (
            self.module(m) for m in ("engine.results", "datasets", "datasets.cifar10")
        )
        self.networks = self.module("networks")

    def module(self, name: str):
        return importlib.import_module(f"{self.package}.{name}")

    def config(self, name: str, overrides: dict):
        """Config ``name`` with ``--key=value`` overrides, parsed and checked as ``bin/train.py`` does."""
        cfg = self.cli.load_config(self.configs.CONFIGS, name, [f"{k}={v}" for k, v in overrides.items()],
                                   self.configs.SELECTORS)  # fmt: skip
        self.configs.check(cfg)
        return cfg

    def register_table(self, rows: int, features: int, classes: int = 10) -> None:
        """A synthetic table (standard-normal features, labels of a random linear teacher) as the dataset
        ``synthetic_table``: added to ``DATASETS``, the project's own extension point."""
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(rows, features, generator=generator)
        y = (x @ torch.randn(features, classes, generator=generator)).argmax(1)
        common = self.module("datasets.common")

        class SyntheticTable:
            input_shape, num_classes, class_names = [features], classes, [f"c{i}" for i in range(classes)]

            def __init__(self, cfg, task):
                self.cfg = cfg

            def train_valid(self):
                pool = common.Split(x[rows // 10 :], y[rows // 10 :])  # the first tenth is the test split
                return common.carve_validation(pool, self.cfg.validation_split, self.cfg.split_seed)

            def test(self):
                return common.Split(x[: rows // 10], y[: rows // 10])

            def batch_transform(self, train):
                return None

        self.datasets.DATASETS[TABLE] = SyntheticTable

    def write_parts(self, folder: Path) -> Path:
        """``project_parts.py`` for the bare script: the source of the project's CNN and augmentation."""
        cnn = self.module("networks.cnn")
        code = [inspect.getsource(f) for f in (cnn._block, cnn.CNN, self.cifar10.random_crop_flip)]
        head = "from typing import Sequence\n\nimport torch\nimport torch.nn.functional as F\nfrom torch import nn\n"
        (folder / "project_parts.py").write_text("\n\n".join([head, *code]))
        return folder

    def device(self, cfg) -> torch.device:
        return self.experiment.resolve_device(cfg.device)

    def bare_settings(self, cfg) -> dict:
        """What the bare loop and script need of ``cfg``."""
        opt, data = cfg.optimizer, cfg.data
        assert opt.name == "SGD" and not opt.extra and cfg.task == "classification" and cfg.loss == "auto", cfg
        return {
            "batch_size": cfg.batch_size, "lr": opt.lr, "momentum": opt.momentum, "weight_decay": opt.weight_decay,
            "lr_schedule": [list(pair) for pair in cfg.lr_schedule], "seed": cfg.seed, "split_seed": data.split_seed,
            "validation_split": data.validation_split, "augment": data.augment, "epochs": cfg.num_epochs,
            "device": str(self.device(cfg)), "n_filters": cfg.model.get("n_filters"),
            "mean": list(self.cifar10.MEAN), "std": list(self.cifar10.STD),
        }  # fmt: skip


class NullTerminal:
    """A stream that says it is a terminal and discards what it gets, counting it: progress bars then cost what
    they cost in a terminal, whether the benchmark runs in one, a pipe or a test."""

    encoding, chars = "utf-8", 0

    def __init__(self):
        self._sink = open(os.devnull, "w")

    def write(self, text: str) -> int:
        self.chars += len(text)
        return self._sink.write(text)

    def flush(self) -> None:
        self._sink.flush()

    def isatty(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._sink.fileno()


@contextlib.contextmanager
def null_terminal():
    saved, terminal = (sys.stdout, sys.stderr), NullTerminal()
    sys.stdout = sys.stderr = terminal
    try:
        yield terminal
    finally:
        sys.stdout, sys.stderr = saved
        terminal._sink.close()


@dataclass
class Run:
    """What one run of a training loop leaves for the comparison."""

    seconds: float  # the epochs only (fit()), not building data and network
    train_loss: float  # of the last epoch
    valid_loss: float
    initial: dict  # the network's weights before training
    final: dict  # ... and after
    missing: list[str] = field(default_factory=list)  # features that left no trace (trainer, Lightning)
    outside: float = 0.0  # the trainer's fit() outside its epochs (epoch_time_s): set-up, the last write


def weights(network: nn.Module) -> dict:
    return {name: value.detach().cpu().clone() for name, value in network.state_dict().items()}


def run_trainer(project: Project, cfg, work_dir: Path) -> Run:
    """The project's trainer, as ``experiment.train`` runs it: ``make_trainer`` into a fresh results directory,
    stdout.txt/stderr.txt captured, ``resume()``, then ``fit()`` (timed): history.csv, TensorBoard, a checkpoint
    per epoch, the tqdm bar on a null terminal."""
    results = project.results.ResultsDir(Path(tempfile.mkdtemp(dir=work_dir, prefix="trainer-")))
    trainer = project.experiment.make_trainer(cfg, results, project.device(cfg))
    initial = weights(trainer.model.network)
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
    checkpoints = list((results.path / "checkpoints").glob("step_*"))
    traces = {
        "history.csv rows": len(history) == cfg.num_epochs,
        "TensorBoard events": any(results.path.glob("events.out.tfevents.*")),
        "a checkpoint per epoch": len(checkpoints) == min(cfg.num_epochs, cfg.checkpoint.keep),
        "stdout.txt": (results.path / "stdout.txt").stat().st_size > 0,
        "progress bar": terminal.chars > 0,
    }
    last, outside = history[-1], seconds - sum(float(row["epoch_time_s"]) for row in history)
    return Run(seconds, float(last["train_loss"]), float(last["valid_loss"]), initial,
               weights(trainer.model.network), [name for name, ok in traces.items() if not ok], outside)  # fmt: skip


def workload(project: Project, cfg) -> tuple[list[torch.Tensor], tuple]:
    """Fresh tensors of ``cfg``'s training and validation splits from the project's loader, on the device, and
    the transforms for them: the dataset's normalisation (hand-written), with the project's augmentation."""
    device = project.device(cfg)
    (x, y), (xv, yv) = project.datasets.build_dataset(cfg).train_valid()
    data = [t.to(device) for t in (x, y, xv, yv)]
    if x.dim() != 4:
        return data, (None, None)
    augment = project.cifar10.random_crop_flip if cfg.data.augment else None
    mean, std = project.cifar10.MEAN, project.cifar10.STD
    return data, (bare.image_transform(mean, std, device, augment), bare.image_transform(mean, std, device))


def seeded_network(project: Project, cfg, data) -> nn.Module:
    """The network the trainer starts from: the project's class, built right after ``torch.manual_seed``."""
    torch.manual_seed(cfg.seed)
    return project.networks.build_network(cfg.model, list(data[0].shape[1:]), 10).to(project.device(cfg))


def run_bare(project: Project, cfg) -> Run:
    data, transforms = workload(project, cfg)
    network = seeded_network(project, cfg, data)
    initial = weights(network)
    with null_terminal():
        seconds, train_loss, valid_loss = bare.train(
            network, data, project.bare_settings(cfg), cfg.num_epochs, transforms
        )
    return Run(seconds, train_loss, valid_loss, initial, weights(network))


def lightning_missing() -> str | None:
    try:
        import lightning  # noqa: F401
    except ImportError as err:
        return f"lightning is not importable ({err}): pip install -r requirements-dev.txt"
    return None


def run_lightning(project: Project, cfg, work_dir: Path) -> Run:
    """Lightning's ``Trainer.fit()`` with the features that match the project's: a checkpoint per epoch, the
    TensorBoard and CSV loggers every ``log_every_steps``, loss and accuracy logged, the progress bar (redrawn
    every ``log_every_steps`` steps) on a null terminal; no sanity validation and no model summary."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    for name in ("lightning.pytorch", "lightning.fabric"):  # "GPU available: ..." and friends
        logging.getLogger(name).setLevel(logging.WARNING)
    data, transforms = workload(project, cfg)
    s = project.bare_settings(cfg)
    assert all(lr == s["lr"] for first, lr in s["lr_schedule"] if first <= cfg.num_epochs), "one lr for Lightning"

    class Classifier(L.LightningModule):
        def __init__(self, network):
            super().__init__()
            self.network, self.loss_fn = network, nn.CrossEntropyLoss()

        def training_step(self, batch, batch_idx):
            outputs = self.network(batch[0])
            loss = self.loss_fn(outputs, batch[1])
            self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(batch[1]))
            self.log(
                "train_acc", (outputs.argmax(1) == batch[1]).float().mean(), on_epoch=True, batch_size=len(batch[1])
            )
            return loss

        def validation_step(self, batch, batch_idx):
            outputs = self.network(batch[0])
            self.log("valid_loss", self.loss_fn(outputs, batch[1]), batch_size=len(batch[1]))
            self.log("valid_acc", (outputs.argmax(1) == batch[1]).float().mean(), batch_size=len(batch[1]))

        def configure_optimizers(self):
            return bare.optimizer(self.network, s)

    class Batches:  # what Lightning iterates: each pass serves the trainer's order of the current epoch
        def __init__(self, x, y, transform, order):
            self.x, self.y, self.transform, self.order = x, y, transform, order

        def __len__(self):
            return -(-len(self.x) // cfg.batch_size)

        def __iter__(self):
            return bare.batches(self.x, self.y, self.order(), cfg.batch_size, self.transform)

    network = seeded_network(project, cfg, data)
    initial, module = weights(network), Classifier(network)
    x, y, xv, yv = data
    # Lightning counts epochs from 0, the project from 1.
    train = Batches(x, y, transforms[0], lambda: bare.epoch_order(len(x), cfg.seed, module.current_epoch + 1, x.device))
    valid = Batches(xv, yv, transforms[1], lambda: torch.arange(len(xv), device=xv.device))
    folder = Path(tempfile.mkdtemp(dir=work_dir, prefix="lightning-"))
    trainer = L.Trainer(
        max_epochs=cfg.num_epochs, accelerator=x.device.type, devices=1, default_root_dir=folder,
        logger=[TensorBoardLogger(folder, name="tb"), CSVLogger(folder, name="csv")],
        log_every_n_steps=cfg.log_every_steps, num_sanity_val_steps=0, enable_model_summary=False,
        callbacks=[ModelCheckpoint(dirpath=folder / "checkpoints"),
                   TQDMProgressBar(refresh_rate=cfg.log_every_steps)],
    )  # fmt: skip
    with null_terminal(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. "does not have many workers": about DataLoaders, not used here
        start = time.perf_counter()
        trainer.fit(module, train_dataloaders=train, val_dataloaders=valid)
        seconds = time.perf_counter() - start
    metrics = trainer.callback_metrics
    # ModelCheckpoint writes one at every epoch end and keeps the newest.
    missing = (
        [] if list(folder.glob(f"checkpoints/epoch={cfg.num_epochs - 1}-*.ckpt")) else ["the last epoch's checkpoint"]
    )
    return Run(
        seconds, float(metrics["train_loss_epoch"]), float(metrics["valid_loss"]), initial, weights(network), missing
    )
