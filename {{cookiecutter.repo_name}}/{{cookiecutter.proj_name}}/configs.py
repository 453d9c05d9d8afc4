"""The config schema and the registry of named base configs.

``python bin/train.py CONFIG RESULTS_DIR --key=value`` starts from
``CONFIGS[CONFIG]()`` and applies the overrides; OmegaConf checks every value
against the types below.  To add a config, write a function returning an
``ExperimentConfig`` and add it to ``CONFIGS``; to add a key, add a typed field.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List

from omegaconf import OmegaConf

from .engine.cli import ConfigError, check_settings, setting, unknown
from .engine.loop import TrainingSettings
from .metrics import METRICS, TASKS, metric_names
from .networks import NETWORKS, network_config

SEED_RANGE = {"low": 0, "high": 2**32 - 1}  # what NumPy's seeding takes


@dataclass
class DataConfig:
    name: str = "iris"  # a key of datasets.DATASETS
    root: str = ""  # where the data lives; "" = the loader's default (Iris: the CSV in the package)
    targets: List[str] = field(default_factory=list)  # task=regression: the CSV's target columns ([]: the last)
    validation_split: float = setting(0.2, low=0)  # fraction of the training data held out for validation
    split_seed: int = setting(0, **SEED_RANGE)  # seed of the train/validation split (kept apart from `seed`)
    augment: bool = False  # random crop + flip (image data)
    image_size: int = setting(32, low=1)  # imagefolder: images are resized to image_size x image_size
    positive_class: int = setting(0, low=0)  # task=binary: this class against the rest
    # auto: tensors on the training device when the loader returns tensors, else a DataLoader with workers
    loader: str = setting("auto", choices=("auto", "memory", "dataloader"))
    num_workers: int = setting(2, low=0, high=1024)  # DataLoader worker processes


@dataclass
class OptimizerConfig:
    name: str = "SGD"  # any torch.optim optimizer
    lr: float = 0.1  # the learning rate when lr_schedule is empty or has not started
    momentum: float = 0.0  # used by optimizers that take it (SGD, RMSprop)
    weight_decay: float = 0.0
    extra: Dict[str, Any] = field(default_factory=dict)  # other arguments, e.g. --optimizer.extra.nesterov=true


@dataclass
class ExperimentConfig(TrainingSettings):  # num_epochs, monitor, checkpoint, ...: the loop's settings
    task: str = setting("classification", choices=TASKS)
    model: Any = field(default_factory=lambda: network_config("mlp"))  # the network; --model=NAME picks another
    training_model: str = "BaseModel"  # a key of training_models.TRAINING_MODELS
    data: DataConfig = field(default_factory=DataConfig)
    loss: str = "auto"  # a torch.nn loss that fits the task; auto: CrossEntropyLoss, BCEWithLogitsLoss, MSELoss
    metrics: List[str] = field(default_factory=list)  # keys of metrics.METRICS; []: acc, or mae, rmse, r2
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    lr_schedule: List[List[float]] = field(default_factory=list)  # [[from_epoch, lr], ...], epochs from 1
    batch_size: int = setting(16, low=1)
    seed: int = setting(0, **SEED_RANGE)  # seeds weights, data order and augmentation
    device: str = "auto"  # auto = cuda if available, else mps, else cpu
    nonfinite_loss: str = setting("stop", choices=("stop", "skip"))  # a NaN/Inf loss: stop (no checkpoint) or skip
    # Speed: safe defaults; on a GPU try precision=bf16, channels_last=true, compile=true.
    precision: str = setting("fp32", choices=("fp32", "bf16", "fp16"))  # autocast; fp16 adds a grad scaler
    compile: bool = False  # torch.compile the network (slow first steps, faster after)
    channels_last: bool = False  # channels-last memory format for CNNs (faster on tensor cores)
    grad_clip_norm: float = setting(0.0, low=0)  # clip the gradients' global norm to this (0: off)
    cudnn_benchmark: bool = False  # let cuDNN time its algorithms (faster convolutions, not bitwise reproducible)
    sync_batchnorm: bool = False  # several processes (torchrun, SLURM tasks): BatchNorm statistics over all (CUDA)


def iris() -> ExperimentConfig:
    """An MLP on the Iris data shipped with the package: offline, a few seconds on a CPU."""
    return ExperimentConfig(optimizer=OptimizerConfig(lr=0.05, momentum=0.9))


def cifar10() -> ExperimentConfig:
    """A small CNN (width n_filters) on CIFAR-10 with crop/flip augmentation; data under data.root."""
    return ExperimentConfig(
        model=network_config("cnn", n_filters=32),
        # $DATA_ROOT/cifar10, or data/cifar10 where DATA_ROOT is not set (see env.sh.example)
        data=DataConfig(name="cifar10", root="${oc.env:DATA_ROOT,data}/cifar10", validation_split=0.1, augment=True),
        optimizer=OptimizerConfig(lr=0.05, momentum=0.9, weight_decay=5e-4),
        lr_schedule=[[1, 0.05], [15, 0.005]],
        num_epochs=20,
        batch_size=128,
    )


def images() -> ExperimentConfig:
    """A small CNN on your own images, read lazily from data.root/<class>/<image> (see datasets/imagefolder.py)."""
    return ExperimentConfig(
        model=network_config("cnn", n_filters=32),
        # $DATA_ROOT/images, or data/images where DATA_ROOT is not set
        data=DataConfig(name="imagefolder", root="${oc.env:DATA_ROOT,data}/images", augment=True),
        optimizer=OptimizerConfig(lr=0.05, momentum=0.9, weight_decay=5e-4),
        num_epochs=20,
        batch_size=64,
    )


CONFIGS = {"iris": iris, "cifar10": cifar10, "images": images}

# ``--model=NAME`` replaces the whole ``model`` node by that network's defaults.
SELECTORS = {"model": network_config}

# Keys that may differ when an existing run is resumed (anything else needs --allow-config-change).
RESUMABLE_CHANGES = (
    "num_epochs",
    "device",
    "data.root",
    "data.num_workers",
    "checkpoint.every_steps",
    "checkpoint.every_minutes",
    "checkpoint.keep",
    "log_every_steps",
)


def check(cfg) -> None:
    """Checks that types alone cannot express; raises ConfigError with one readable line.

    Bounds and choices are declared with each field (``setting``).  Values
    that only the data can refute (``model.output_shape``, the network's
    arguments, a metric for the number of classes) are checked when the run is
    built, also before anything is written (``experiment.build``).
    """
    from .datasets import DATASETS
    from .training_models import TRAINING_MODELS
    from .training_models.base import loss_name, optimizer_class

    for key, value in _leaves(OmegaConf.to_container(cfg, resolve=True)):
        if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**63:
            raise ConfigError(f"{key}={value} is out of range: a 64-bit integer at most")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key}={value} must be a finite number")
    check_settings(cfg)
    for key, choices in {"model.name": NETWORKS, "data.name": DATASETS, "training_model": TRAINING_MODELS}.items():
        if OmegaConf.select(cfg, key) not in choices:
            raise unknown(key, OmegaConf.select(cfg, key), choices)
    loss_name(cfg.task, cfg.loss)
    optimizer_class(cfg.optimizer.name)
    for name in cfg.metrics:
        if not isinstance(name, str) or name not in METRICS:
            raise unknown("metric", name, METRICS)
    columns = history_columns(cfg)
    if cfg.monitor not in columns:
        raise ConfigError(
            f"monitor={cfg.monitor!r} is not a column this run writes; choose one of {', '.join(columns)}"
        )
    if not cfg.data.validation_split < 1:
        raise ConfigError(f"data.validation_split={cfg.data.validation_split} must be < 1")
    if cfg.early_stopping_patience and cfg.monitor.startswith("valid_") and not cfg.data.validation_split:
        raise ConfigError(f"early_stopping_patience with monitor={cfg.monitor} needs data.validation_split > 0")
    for pair in cfg.lr_schedule:
        if len(pair) != 2 or pair[0] < 1 or pair[0] != int(pair[0]) or pair[1] < 0:
            raise ConfigError(f"lr_schedule entry {list(pair)} must be [from_epoch >= 1 (integer), lr >= 0]")
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", cfg.device):
        raise ConfigError(f"device={cfg.device!r}: use auto, cpu, cuda, cuda:N or mps")


def history_columns(cfg) -> list[str]:
    """The loss and metric columns of history.csv in a run of ``cfg`` (what ``monitor`` and a sweep's objective
    may name)."""
    names = metric_names(cfg.task, cfg.metrics)
    return ["train_loss", "valid_loss"] + [f"{part}_{name}" for name in names for part in ("train", "valid")]


def _leaves(node: Any, key: str = ""):
    """``(dotted key, value)`` of every number, string or boolean in a nested config container."""
    if isinstance(node, dict):
        for name, value in node.items():
            yield from _leaves(value, f"{key}.{name}" if key else str(name))
    elif isinstance(node, list):
        for value in node:
            yield from _leaves(value, key)
    else:
        yield key, node
