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

from .engine.cli import ConfigError, unknown
from .networks import NETWORKS, network_config
from .networks.cnn import CNNConfig
from .networks.mlp import MLPConfig


@dataclass
class DataConfig:
    name: str = "iris"  # a key of datasets.DATASETS
    root: str = ""  # where the data lives; "" = the loader's default (Iris: the CSV in the package)
    validation_split: float = 0.2  # fraction of the training data held out for validation
    split_seed: int = 0  # seed of the train/validation split (kept apart from `seed`)
    augment: bool = False  # random crop + flip (image data)
    positive_class: int = 0  # with a one-output network: this class against the rest
    loader: str = "memory"  # memory: tensors on the training device; dataloader: DataLoader with workers
    num_workers: int = 2  # DataLoader worker processes (loader=dataloader only)


@dataclass
class OptimizerConfig:
    name: str = "SGD"  # any torch.optim optimizer
    lr: float = 0.1  # the learning rate when lr_schedule is empty or has not started
    momentum: float = 0.0  # used by optimizers that take it (SGD, RMSprop)
    weight_decay: float = 0.0
    extra: Dict[str, Any] = field(default_factory=dict)  # other arguments, e.g. --optimizer.extra.nesterov=true


@dataclass
class CheckpointConfig:
    every_steps: int = 0  # also checkpoint every N optimisation steps inside an epoch (0: off)
    every_minutes: float = 10.0  # ... and once this long has passed since the last checkpoint (0: off)
    min_interval_s: float = 1.0  # epoch ends: skip the checkpoint if the last is younger (0: every epoch)
    keep: int = 2  # newest checkpoints kept in RESULTS_DIR/checkpoints


@dataclass
class ExperimentConfig:
    model: Any = field(default_factory=MLPConfig)  # the network; --model=NAME picks another
    training_model: str = "BaseModel"  # a key of training_models.TRAINING_MODELS
    data: DataConfig = field(default_factory=DataConfig)
    loss: str = "CrossEntropyLoss"  # any torch.nn loss; BCEWithLogitsLoss needs model.output_shape=1
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    lr_schedule: List[List[float]] = field(default_factory=list)  # [[from_epoch, lr], ...], epochs from 1
    num_epochs: int = 30
    batch_size: int = 16
    seed: int = 0  # seeds weights, data order and augmentation
    device: str = "auto"  # auto = cuda if available, else mps, else cpu
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)  # every epoch end, and more often
    log_every_steps: int = 50  # read the training loss back and log it (TensorBoard, progress bar) every N steps
    early_stopping_patience: int = 0  # stop after N epochs without a better valid_loss (0: off)
    nonfinite_loss: str = "stop"  # a NaN/Inf training loss: stop (no checkpoint of that state) or skip the step
    # Speed: safe defaults; on a GPU try precision=bf16, channels_last=true, compile=true.
    precision: str = "fp32"  # fp32, bf16 or fp16 (autocast; fp16 adds a grad scaler)
    compile: bool = False  # torch.compile the network (slow first steps, faster after)
    channels_last: bool = False  # channels-last memory format for CNNs (faster on tensor cores)
    grad_accum_steps: int = 1  # batches per optimisation step (effective batch = batch_size * N)
    grad_clip_norm: float = 0.0  # clip the gradients' global norm to this (0: off)
    cudnn_benchmark: bool = False  # let cuDNN time its algorithms (faster convolutions, not bitwise reproducible)


def iris() -> ExperimentConfig:
    """An MLP on the Iris data shipped with the package: offline, a few seconds on a CPU."""
    return ExperimentConfig(optimizer=OptimizerConfig(lr=0.05, momentum=0.9))


def cifar10() -> ExperimentConfig:
    """A small CNN (width n_filters) on CIFAR-10 with crop/flip augmentation; data under data.root."""
    return ExperimentConfig(
        model=CNNConfig(n_filters=32),
        # $DATA_ROOT/cifar10, or data/cifar10 where DATA_ROOT is not set (see env.sh.example)
        data=DataConfig(name="cifar10", root="${oc.env:DATA_ROOT,data}/cifar10", validation_split=0.1, augment=True),
        optimizer=OptimizerConfig(lr=0.05, momentum=0.9, weight_decay=5e-4),
        lr_schedule=[[1, 0.05], [15, 0.005]],
        num_epochs=20,
        batch_size=128,
    )


CONFIGS = {"iris": iris, "cifar10": cifar10}

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
    "checkpoint.min_interval_s",
    "checkpoint.keep",
    "log_every_steps",
)
CHOICES = {
    "precision": ("fp32", "bf16", "fp16"),
    "nonfinite_loss": ("stop", "skip"),
    "data.loader": ("memory", "dataloader"),
}


def check(cfg) -> None:
    """Checks that types alone cannot express; raises ConfigError with one readable line.

    Values that only the data can refute (``model.output_shape``, the network's
    arguments, the loss) are checked when the run is built, also before
    anything is written (``experiment.build``).
    """
    from .datasets import DATASETS
    from .training_models import TRAINING_MODELS
    from .training_models.base import BINARY_LOSSES, make_loss, optimizer_class

    for key, value in _leaves(OmegaConf.to_container(cfg, resolve=True)):
        if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**63:
            raise ConfigError(f"{key}={value} is out of range: a 64-bit integer at most")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key}={value} must be a finite number")
    for key, choices in {"model.name": NETWORKS, "data.name": DATASETS, "training_model": TRAINING_MODELS}.items():
        if OmegaConf.select(cfg, key) not in choices:
            raise unknown(key, OmegaConf.select(cfg, key), choices)
    make_loss(cfg.loss)
    optimizer_class(cfg.optimizer.name)
    binary = cfg.loss in BINARY_LOSSES
    if binary != (cfg.model.output_shape == 1):
        raise ConfigError(
            f"loss {cfg.loss} with model.output_shape={cfg.model.output_shape}: "
            f"use model.output_shape=1 exactly with {' or '.join(BINARY_LOSSES)}"
        )
    ranges = {
        "num_epochs": (0, None), "batch_size": (1, None), "seed": (0, 2**32 - 1), "data.split_seed": (0, 2**32 - 1),
        "data.num_workers": (0, 1024), "checkpoint.keep": (1, None), "checkpoint.every_steps": (0, None),
        "checkpoint.every_minutes": (0, None), "checkpoint.min_interval_s": (0, None), "log_every_steps": (1, None),
        "grad_accum_steps": (1, None), "grad_clip_norm": (0, None), "early_stopping_patience": (0, None),
    }  # fmt: skip
    for key, (low, high) in ranges.items():
        value = OmegaConf.select(cfg, key)
        if value < low or (high is not None and value > high):
            raise ConfigError(f"{key}={value} must be >= {low}" + (f" and <= {high}" if high is not None else ""))
    for key, allowed in CHOICES.items():
        value = OmegaConf.select(cfg, key)
        if value not in allowed:
            raise ConfigError(f"{key}={value!r}: choose one of {', '.join(allowed)}")
    if cfg.early_stopping_patience and not cfg.data.validation_split:
        raise ConfigError("early_stopping_patience needs a validation set: set data.validation_split > 0")
    if not 0 <= cfg.data.validation_split < 1:
        raise ConfigError(f"data.validation_split={cfg.data.validation_split} must be in [0, 1)")
    for pair in cfg.lr_schedule:
        if len(pair) != 2 or pair[0] < 1 or pair[0] != int(pair[0]) or pair[1] < 0:
            raise ConfigError(f"lr_schedule entry {list(pair)} must be [from_epoch >= 1 (integer), lr >= 0]")
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", cfg.device):
        raise ConfigError(f"device={cfg.device!r}: use auto, cpu, cuda, cuda:N or mps")


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
