"""Networks, selected by name with ``--model=NAME``.

To add one: write ``mynet.py`` with a ``nn.Module`` whose ``__init__`` takes
``input_shape``, ``output_shape`` and then its own arguments, each with a type
hint and a default (``width: int = 8``), and add the class to ``NETWORKS``
below.  Those arguments are its config: ``--model=mynet --model.width=8`` works
at once, type-checked, and ``--help`` lists them.  Hints OmegaConf cannot check
(``Sequence[int]``, ``Callable``) take any value.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import inspect
import typing
from typing import Any, Optional, Sequence

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch import nn

from ..engine.cli import ConfigError, first_line, unknown
from .cnn import CNN
from .common import NetworkConfig
from .lenet import LeNet
from .linear import Linear
from .mlp import MLP
from .mlp_fixed import MLPFixed
from .resnet import ResNet18

NETWORKS: dict[str, type[nn.Module]] = {
    "linear": Linear,
    "mlp": MLP,
    "mlp_fixed": MLPFixed,
    "lenet": LeNet,
    "cnn": CNN,
    "resnet18": ResNet18,
}


# What a constructor raises for arguments it cannot take (torch raises AssertionError for some).
BAD_ARGUMENT = (ValueError, TypeError, RuntimeError, ArithmeticError, MemoryError, AssertionError, IndexError)

SHARED = tuple(f.name for f in dataclasses.fields(NetworkConfig))  # name, input_shape, output_shape


def network_config(name: str, **values: Any) -> NetworkConfig:
    """The config of network ``name`` (what ``--model=NAME`` selects): its defaults, changed by ``values``."""
    return config_class(name)(**values)


def config_class(name: str) -> type[NetworkConfig]:
    """The config dataclass of network ``name``: ``NetworkConfig`` plus the arguments of its constructor."""
    if name not in NETWORKS:
        raise unknown("model", name, NETWORKS)
    return _derive_config(name, NETWORKS[name])


def build_network(cfg, input_shape: Sequence[int], output_shape: int) -> nn.Module:
    """Instantiate the network described by ``cfg`` (a ``model`` config node) for this data."""
    cfg = cfg if isinstance(cfg, DictConfig) else OmegaConf.structured(cfg)
    names = [f.name for f in dataclasses.fields(config_class(cfg.name)) if f.name not in SHARED]
    if cfg.input_shape is not None and list(cfg.input_shape) != list(input_shape):
        raise ConfigError(
            f"model.input_shape={list(cfg.input_shape)} but the data has samples of shape {list(input_shape)}"
        )
    outputs = cfg.output_shape if cfg.output_shape is not None else output_shape
    values = OmegaConf.to_container(cfg, resolve=True)  # plain lists and dicts, not OmegaConf nodes
    arguments = {name: values[name] for name in names}
    try:
        return NETWORKS[cfg.name](list(input_shape), outputs, **arguments)
    except BAD_ARGUMENT as err:  # e.g. a negative or huge size
        raise ConfigError(
            f"model {cfg.name} cannot be built with {arguments} for this data: {first_line(err)}"
        ) from None


@functools.cache
def _derive_config(name: str, network: type[nn.Module]) -> type[NetworkConfig]:
    """``NetworkConfig`` with ``name`` defaulting to ``name`` and one field per argument of ``network``'s constructor
    after ``input_shape`` and ``output_shape``: its type hint (``Any`` where OmegaConf has no such type) and default."""
    where = f"network {name!r} ({network.__module__}.{network.__qualname__})"
    parameters = list(inspect.signature(network.__init__).parameters.values())[1:]  # without self
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if [p.name for p in parameters[:2]] != ["input_shape", "output_shape"] or any(
        p.kind not in positional for p in parameters[:2]
    ):
        raise TypeError(f"{where}: __init__ must start with (self, input_shape, output_shape, ...)")
    hints = _type_hints(network.__init__)
    fields: list[tuple[str, Any, Any]] = [("name", str, dataclasses.field(default=name))]
    for parameter in parameters[2:]:
        fields.append(_config_field(where, parameter, hints.get(parameter.name, Any)))
    config = dataclasses.make_dataclass(f"{network.__name__}Config", fields, bases=(NetworkConfig,))
    config.__module__ = network.__module__
    config.__doc__ = f"The arguments of {network.__qualname__}, read from its constructor."
    return config


def _config_field(where: str, parameter: inspect.Parameter, hint: Any) -> tuple[str, Any, Any]:
    """``(name, type, field)`` of one constructor argument, for ``make_dataclass``."""
    key = parameter.name
    if parameter.kind not in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY):
        raise TypeError(f"{where}: declare each argument by name instead of {parameter} (they are its config)")
    if key in SHARED:
        raise TypeError(f"{where}: argument {key!r} would hide the config's own {key!r}; rename it")
    if parameter.default is inspect.Parameter.empty:
        raise TypeError(f"{where}: argument {key!r} needs a default (the config's default is the constructor's)")
    default = parameter.default
    if default is None and hint is not Any:
        hint = Optional[hint]  # width: int = None
    if not _valid(key, hint):
        hint = Any  # e.g. Sequence[int] or Callable: OmegaConf has no such type and stores the value unchecked
    if type(default).__hash__ is None:  # a list or a dict: every config gets its own copy
        spec = dataclasses.field(default_factory=functools.partial(copy.deepcopy, default))
    else:
        spec = dataclasses.field(default=default)
    if not _valid(key, hint, spec):
        raise TypeError(f"{where}: the default of {key!r}, {default!r}, is not a config value of type {hint}")
    return key, hint, spec


def _valid(key: str, hint: Any, spec: Any = None) -> bool:
    """Whether OmegaConf takes a field ``key`` of type ``hint`` (with ``spec``'s default, if given)."""
    field = (key, hint) if spec is None else (key, hint, spec)
    try:
        OmegaConf.structured(dataclasses.make_dataclass("Probe", [field]))
    except (OmegaConfBaseException, TypeError, ValueError):
        return False
    return True


def _type_hints(function: Any) -> dict[str, Any]:
    """The type hints of ``function``; one that cannot be evaluated (a name imported only for type checkers) is
    left out, so its argument takes any value."""
    try:
        return typing.get_type_hints(function)
    except Exception:  # evaluating an annotation can raise anything; fall back to one at a time
        hints = {}
        for key, annotation in getattr(function, "__annotations__", {}).items():
            try:
                hints[key] = eval(annotation, function.__globals__) if isinstance(annotation, str) else annotation
            except Exception:
                continue
        return hints
