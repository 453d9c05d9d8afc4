"""Vegab-style command line: ``CONFIG RESULTS_DIR [--key=value ...]``.

A run starts from a named base config (a function returning a typed dataclass)
and changes it with ``--key=value`` overrides.  OmegaConf does the merging and
the type checking; this module only turns its exceptions into one readable line
and adds "did you mean" suggestions.  It knows nothing about networks or data:
the caller passes the registry of configs and the *selectors*, keys such as
``model`` whose string value swaps the whole sub-config for a named default.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import sys
import typing
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

ConfigFactory = Callable[[], Any]
Selector = Callable[[str], Any]


class ConfigError(ValueError):
    """A bad config or override; its message is one line meant for the user."""


@dataclass
class Command:
    """What the command line asked for."""

    config_name: str
    results_dir: str
    cfg: DictConfig
    overrides: list[str]
    dry_run: bool = False
    allow_config_change: bool = False


def setting(
    default: Any = dataclasses.MISSING,
    *,
    factory: Callable[[], Any] | Any = dataclasses.MISSING,
    low: float | None = None,
    high: float | None = None,
    choices: Sequence[str] | None = None,
) -> Any:
    """A config field with its checks beside it (``check_settings`` applies them): ``low <= value <= high``,
    ``value in choices``.  ``--help`` lists the choices."""
    bounds = {"low": low, "high": high, "choices": choices}
    return dataclasses.field(default=default, default_factory=factory, metadata=bounds)


def check_settings(cfg: DictConfig, prefix: str = "") -> None:
    """Check every field of a structured config against its ``setting``; ``ConfigError`` with one line."""
    for field in dataclasses.fields(OmegaConf.get_type(cfg)):
        key, value = f"{prefix}{field.name}", cfg[field.name]
        if isinstance(value, DictConfig) and dataclasses.is_dataclass(OmegaConf.get_type(value)):
            check_settings(value, f"{key}.")
            continue
        low, high, choices = (field.metadata.get(name) for name in ("low", "high", "choices"))
        if choices is not None and value not in choices:
            raise ConfigError(f"{key}={value!r}: choose one of {', '.join(choices)}")
        if (low is not None and value < low) or (high is not None and value > high):
            limits = [f">= {low}"] * (low is not None) + [f"<= {high}"] * (high is not None)
            raise ConfigError(f"{key}={value} must be {' and '.join(limits)}")


def load_config(
    configs: Mapping[str, ConfigFactory],
    name: str,
    overrides: Sequence[str] = (),
    selectors: Mapping[str, Selector] | None = None,
) -> DictConfig:
    """Build base config ``name`` and apply ``--key=value`` overrides to it."""
    if name not in configs:
        raise unknown("config", name, configs)
    cfg = OmegaConf.structured(configs[name]())
    apply_overrides(cfg, overrides, selectors or {})
    try:
        OmegaConf.resolve(cfg)  # an interpolation such as ${oc.env:X} fails here, not mid-run
    except OmegaConfBaseException as err:
        raise ConfigError(f"cannot resolve the config: {first_line(err)}") from None
    return cfg


def apply_overrides(cfg: DictConfig, overrides: Sequence[str], selectors: Mapping[str, Selector]) -> None:
    """Apply ``--key=value`` strings to ``cfg`` in place, selectors first."""
    pairs = [_split(item) for item in overrides]
    # ``--model=lenet`` replaces the whole ``model`` node, so it must happen before
    # ``--model.n_filters=10`` whatever order they were typed in.
    for key, raw in pairs:
        if key in selectors:
            value = parse_value(key, raw)
            if not isinstance(value, str):
                raise ConfigError(f"--{key}={raw}: expected a name, one of the choices listed by --help")
            cfg[key] = OmegaConf.structured(selectors[key](value))
    for key, raw in pairs:
        if key in selectors:
            continue
        _check_key(cfg, key)
        value = parse_value(key, raw)
        try:
            OmegaConf.update(cfg, key, value, merge=False)
        except OmegaConfBaseException as err:
            expected = type_of(cfg, key)
            raise ConfigError(f"--{key}={raw}: expected {expected} ({first_line(err)})") from None


def describe(cfg: DictConfig, prefix: str = "") -> list[tuple[str, str, str]]:
    """Every leaf key of ``cfg`` as ``(dotted key, type, current value)``."""
    rows = []
    for key in cfg:
        full = f"{prefix}{key}"
        value = cfg[key]
        if isinstance(value, DictConfig) and dataclasses.is_dataclass(OmegaConf.get_type(value)):
            rows.extend(describe(value, f"{full}."))
            continue
        shown = OmegaConf.to_container(value) if isinstance(value, (DictConfig, ListConfig)) else value
        rows.append((full, type_of(cfg, str(key)), repr(shown)))
    return rows


def type_of(cfg: DictConfig, dotted_key: str) -> str:
    """The declared type of ``dotted_key`` as a short string, e.g. ``List[List[float]]``."""
    *parents, leaf = dotted_key.split(".")
    node: Any = cfg
    for part in parents:
        node = node[part] if isinstance(node, DictConfig) else None
    owner = OmegaConf.get_type(node) if isinstance(node, DictConfig) else None
    if owner is None or not dataclasses.is_dataclass(owner):
        return "any value"
    field = next((f for f in dataclasses.fields(owner) if f.name == leaf), None)
    if field is not None and field.metadata.get("choices"):
        return "|".join(field.metadata["choices"])
    hint = typing.get_type_hints(owner).get(leaf)
    if hint is None:
        return "any value"
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")


def build_parser(
    prog: str, description: str, configs: Mapping[str, ConfigFactory], epilog: str
) -> argparse.ArgumentParser:
    """The argparse parser for ``CONFIG RESULTS_DIR [--key=value ...] [flags]``."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog=epilog,
        allow_abbrev=False,  # --dry=1 must be an unknown key, not --dry-run
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("config", metavar="CONFIG", help=f"base config, one of: {', '.join(configs)}")
    parser.add_argument(
        "results_dir", metavar="RESULTS_DIR", help="where the run writes everything (resumed if it exists)"
    )
    parser.add_argument("--dry-run", action="store_true", help="print the resolved config and exit (default: off)")
    parser.add_argument(
        "--allow-config-change",
        action="store_true",
        help="resume even if the config differs from the saved one (default: off)",
    )
    return parser


def parse_command_line(
    argv: Sequence[str],
    *,
    prog: str,
    description: str,
    configs: Mapping[str, ConfigFactory],
    selectors: Mapping[str, Selector],
    help_epilog: Callable[[], str],
) -> Command:
    """Parse argv; raises ConfigError for a bad config or override."""
    wants_help = any(arg in ("-h", "--help") for arg in argv)
    parser = build_parser(prog, description, configs, help_epilog() if wants_help else "")
    args, overrides = parser.parse_known_args(list(argv))
    for item in overrides:
        if not item.startswith("--") or "=" not in item:
            raise ConfigError(f"unexpected argument {item!r}: overrides are written --key=value (see --help)")
    overrides = [item[2:] for item in overrides]
    cfg = load_config(configs, args.config, overrides, selectors)
    return Command(args.config, args.results_dir, cfg, overrides, args.dry_run, args.allow_config_change)


def format_keys(cfg: DictConfig) -> str:
    """A ``key  type  default`` table for --help."""
    rows = describe(cfg)
    width = max(len(key) for key, _, _ in rows)
    type_width = max(len(kind) for _, kind, _ in rows)
    return "\n".join(f"  --{key:<{width}}  {kind:<{type_width}}  default: {value}" for key, kind, value in rows)


def config_diff(old: Any, new: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """Differences between two nested dicts as ``(dotted key, old, new)``."""
    if isinstance(old, dict) and isinstance(new, dict):
        if "name" in old and "name" in new and old["name"] != new["name"]:
            return [(prefix.rstrip("."), old, new)]  # another network altogether: one row, not one per argument
        rows = []
        for key in list(old) + [k for k in new if k not in old]:
            rows += config_diff(old.get(key, "<absent>"), new.get(key, "<absent>"), f"{prefix}{key}.")
        return rows
    return [] if old == new else [(prefix.rstrip("."), old, new)]


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as dotted keys (``optimizer.lr``) with scalar values: a list or an empty dict becomes its
    JSON text, so that each value fits a table cell or a TensorBoard hyperparameter."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = json.dumps(value) if isinstance(value, (list, Mapping)) else value
    return flat


def _split(item: str) -> tuple[str, str]:
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"bad override {item!r}: write --key=value")
    return key, raw


def parse_value(key: str, raw: str) -> Any:
    """Read ``raw`` as a YAML literal (numbers, lists, true/false, null), else a string."""
    try:
        return OmegaConf.from_dotlist([f"value={raw}"])["value"]
    except Exception as err:  # yaml raises several unrelated types; all mean "cannot parse"
        raise ConfigError(f"--{key}={raw}: cannot parse the value ({first_line(err)})") from None


def _check_key(cfg: DictConfig, key: str) -> None:
    """Fail with a suggestion unless ``key`` names an existing key (or a free-form dict entry)."""
    node: Any = cfg
    for depth, part in enumerate(key.split(".")):
        if not isinstance(node, DictConfig):
            break
        if part not in node:
            free_form = not dataclasses.is_dataclass(OmegaConf.get_type(node))
            if free_form and depth > 0:
                return  # e.g. optimizer.extra.betas: extra is a Dict[str, Any]
            known = [row[0] for row in describe(cfg)]
            hint = suggest(key, known)
            name = node.get("name") if depth > 0 else None
            if isinstance(name, str):  # e.g. model.n_filters while model is an mlp
                hint += f" ({key.rsplit('.', 1)[0]} is {name!r}; select another first, e.g. --model=NAME)"
            raise ConfigError(f"unknown key {key!r}{hint}; --help lists every key")
        node = node[part]


def suggest(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'X'?)`` for the choice closest to ``word``, or "" if none is close.

    The same name in other letter case wins (``adam`` -> ``Adam``), then a
    dotted key ending in ``word`` (``lr`` -> ``optimizer.lr``), then spelling.
    """
    choices = list(choices)
    close = [c for c in choices if c.lower() == word.lower()] or [c for c in choices if c.endswith(f".{word}")]
    close = close or difflib.get_close_matches(word, choices, n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown(what: str, value: Any, choices: Iterable[str]) -> ConfigError:
    """The error for a name that is not one of ``choices``, with the closest one and the list."""
    choices = list(choices)
    return ConfigError(f"{what} {value!r} unknown{suggest(str(value), choices)}; choose one of: {', '.join(choices)}")


def escape_unencodable_output() -> None:
    """Print what the terminal's encoding lacks (a path of non-UTF-8 bytes) as escapes instead of failing."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")


def first_line(err: BaseException) -> str:
    """The first line of ``err``'s message (at most 300 characters), or its type's name: for one-line errors."""
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else type(err).__name__
