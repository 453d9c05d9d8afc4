"""Networks, selected by name with ``--model=NAME``.

To add one: write ``mynet.py`` with a ``nn.Module`` whose ``__init__`` takes
``input_shape``, ``output_shape`` and its own arguments, plus a config
dataclass (subclass of ``NetworkConfig``) with those arguments as typed fields,
then add it to ``NETWORKS`` below.  ``--model=mynet --model.width=8`` works at once.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from torch import nn

from ..engine.cli import ConfigError, first_line, unknown
from .cnn import CNN, CNNConfig
from .common import NetworkConfig
from .lenet import LeNet, LeNetConfig
from .linear import Linear, LinearConfig
from .mlp import MLP, MLPConfig
from .mlp_fixed import MLPFixed, MLPFixedConfig
from .resnet import ResNet18, ResNet18Config

NETWORKS: dict[str, tuple[type[nn.Module], type[NetworkConfig]]] = {
    "linear": (Linear, LinearConfig),
    "mlp": (MLP, MLPConfig),
    "mlp_fixed": (MLPFixed, MLPFixedConfig),
    "lenet": (LeNet, LeNetConfig),
    "cnn": (CNN, CNNConfig),
    "resnet18": (ResNet18, ResNet18Config),
}


# What a constructor raises for arguments it cannot take (torch raises AssertionError for some).
BAD_ARGUMENT = (ValueError, TypeError, RuntimeError, ArithmeticError, MemoryError, AssertionError, IndexError)


def network_config(name: str) -> NetworkConfig:
    """The default config of network ``name`` (what ``--model=NAME`` selects)."""
    if name not in NETWORKS:
        raise unknown("model", name, NETWORKS)
    return NETWORKS[name][1]()


def build_network(cfg, input_shape: Sequence[int], output_shape: int) -> nn.Module:
    """Instantiate the network described by ``cfg`` (a ``model`` config node) for this data."""
    network_cls, config_cls = NETWORKS[cfg.name]
    names = [f.name for f in dataclasses.fields(config_cls) if f.name not in ("name", "input_shape", "output_shape")]
    if cfg.input_shape is not None and list(cfg.input_shape) != list(input_shape):
        raise ConfigError(
            f"model.input_shape={list(cfg.input_shape)} but the data has samples of shape {list(input_shape)}"
        )
    outputs = cfg.output_shape if cfg.output_shape is not None else output_shape
    arguments = {name: cfg[name] for name in names}
    try:
        return network_cls(list(input_shape), outputs, **arguments)
    except BAD_ARGUMENT as err:  # e.g. a negative or huge size
        raise ConfigError(
            f"model {cfg.name} cannot be built with {arguments} for this data: {first_line(err)}"
        ) from None
