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

from .engine.cli import ConfigError
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


@dataclass
class OptimizerConfig:
    name: str = "SGD"  # any torch.optim optimizer
    lr: float = 0.1  # the learning rate when lr_schedule is empty or has not started
    momentum: float = 0.0  # used by optimizers that take it (SGD, RMSprop)
    weight_decay: float = 0.0
    extra: Dict[str, Any] = field(default_factory=dict)  # other arguments, e.g. --optimizer.extra.nesterov=true


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
    keep_checkpoints: int = 2  # newest checkpoints kept in RESULTS_DIR/checkpoints


def iris() -> ExperimentConfig:
    """An MLP on the Iris data shipped with the package: offline, a few seconds on a CPU."""
    return ExperimentConfig(optimizer=OptimizerConfig(lr=0.05, momentum=0.9))


def cifar10() -> ExperimentConfig:
    """A small CNN (width n_filters) on CIFAR-10 with crop/flip augmentation; data under data.root."""
    return ExperimentConfig(
        model=CNNConfig(n_filters=32),
        data=DataConfig(name="cifar10", root="data/cifar10", validation_split=0.1, augment=True),
        optimizer=OptimizerConfig(lr=0.05, momentum=0.9, weight_decay=5e-4),
        lr_schedule=[[1, 0.05], [15, 0.005]],
        num_epochs=20,
        batch_size=128,
    )


CONFIGS = {"iris": iris, "cifar10": cifar10}

# ``--model=NAME`` replaces the whole ``model`` node by that network's defaults.
SELECTORS = {"model": network_config}

# Keys that may differ when an existing run is resumed (anything else needs --allow-config-change).
RESUMABLE_CHANGES = ("num_epochs", "device")


def check(cfg) -> None:
    """Checks that types alone cannot express; raises ConfigError with one readable line."""
    from .datasets import DATASETS
    from .training_models import TRAINING_MODELS
    from .training_models.base import BINARY_LOSSES, make_loss

    if cfg.model.name not in NETWORKS:
        raise ConfigError(f"model.name {cfg.model.name!r} unknown; choose one of: {', '.join(NETWORKS)}")
    if cfg.data.name not in DATASETS:
        raise ConfigError(f"data.name {cfg.data.name!r} unknown; choose one of: {', '.join(DATASETS)}")
    if cfg.training_model not in TRAINING_MODELS:
        raise ConfigError(f"training_model {cfg.training_model!r} unknown; choose one of: {', '.join(TRAINING_MODELS)}")
    make_loss(cfg.loss)
    binary = cfg.loss in BINARY_LOSSES
    if binary != (cfg.model.output_shape == 1):
        raise ConfigError(
            f"loss {cfg.loss} with model.output_shape={cfg.model.output_shape}: "
            f"use model.output_shape=1 exactly with {' or '.join(BINARY_LOSSES)}"
        )
    for name, low in (("num_epochs", 0), ("batch_size", 1), ("keep_checkpoints", 1)):
        if cfg[name] < low:
            raise ConfigError(f"{name}={cfg[name]} must be >= {low}")
    if not 0 <= cfg.data.validation_split < 1:
        raise ConfigError(f"data.validation_split={cfg.data.validation_split} must be in [0, 1)")
    for pair in cfg.lr_schedule:
        if len(pair) != 2 or not all(map(math.isfinite, pair)) or pair[0] < 1 or pair[0] != int(pair[0]) or pair[1] < 0:
            raise ConfigError(f"lr_schedule entry {list(pair)} must be [from_epoch >= 1 (integer), lr >= 0]")
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", cfg.device):
        raise ConfigError(f"device={cfg.device!r}: use auto, cpu, cuda, cuda:N or mps")
