#!/usr/bin/env python
"""Run one experiment described by a JSON string (the seed-004 interface).

    python ./training_scripts/run_experiment.py '{"model": "BaseModel", "dataset": "IrisDataLoader",
        "network": "linear", "network_args": {"input_shape": 4, "output_shape": 1}, "num_epochs": 3,
        "device": "cpu", "dataset_args": {"validation_split": 0.2}, "optimizer": "SGD",
        "loss": "BCEWithLogitsLoss", "optimizer_args": {"lr": 1e-3}}' [RESULTS_DIR] [--key=value ...]

The JSON keys are mapped onto the same config schema and engine as
``bin/train.py``: ``model`` names the training model, ``network`` the
architecture, ``*_args`` set their arguments, other keys (``num_epochs``,
``device``, ``batch_size``, ``lr_schedule``, ...) are config keys.  Keys absent
from the JSON come from the base config ``"config"`` (default ``iris``).
Without RESULTS_DIR the run goes to ``runs/<UTC time>-<network>``.  ``--key=value``
overrides after it change the config as in ``bin/train.py`` (and win over the JSON).
"""

import datetime as dt
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # works from a checkout, installed or not

from {{ cookiecutter.proj_name }}.engine import signals  # noqa: E402

signals.catch()  # before the slow imports: a scheduler's stop signal during start-up is recorded, not fatal

from {{ cookiecutter.proj_name }} import configs  # noqa: E402
from {{ cookiecutter.proj_name }}.engine import cli  # noqa: E402
from {{ cookiecutter.proj_name }}.experiment import EXIT_USAGE, train  # noqa: E402

OPTIMIZER_FIELDS = ("lr", "momentum", "weight_decay")


def to_overrides(spec: dict) -> list[str]:
    """Translate the seed-004 JSON keys into ``key=value`` overrides of the config schema."""
    overrides = []

    def add(key: str, value) -> None:
        overrides.append(f"{key}={json.dumps(value)}")

    for key, value in spec.items():
        if key in ("config", "results_dir"):
            continue
        if key == "model":
            add("training_model", value)
        elif key == "network":
            add("model", value)
        elif key == "dataset":
            add("data.name", value)
        elif key == "optimizer":
            add("optimizer.name", value)
        elif key in ("network_args", "dataset_args", "optimizer_args"):
            if not isinstance(value, dict):
                raise cli.ConfigError(f"{key} must be a JSON object, got {value!r}")
            for arg, arg_value in value.items():
                if key == "network_args":
                    if arg == "input_shape" and isinstance(arg_value, int):
                        arg_value = [arg_value]  # the seed writes 4 for samples of shape [4]
                    add(f"model.{arg}", arg_value)
                elif key == "dataset_args":
                    add(f"data.{arg}", arg_value)
                else:
                    add(f"optimizer.{arg}" if arg in OPTIMIZER_FIELDS else f"optimizer.extra.{arg}", arg_value)
        else:
            add(key, value)
    if spec.get("loss") == "BCEWithLogitsLoss" and "task" not in spec:  # the seed's binary command: one logit
        add("task", "binary")
    return overrides


def main(argv: list[str]) -> int:
    cli.escape_unencodable_output()
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        print(__doc__)
        return 0 if len(argv) == 2 else EXIT_USAGE
    given_dir = argv[2] if len(argv) > 2 and not argv[2].startswith("--") else None
    extra = argv[3:] if given_dir is not None else argv[2:]
    try:
        spec = json.loads(argv[1])
        if not isinstance(spec, dict):
            raise cli.ConfigError("the argument must be a JSON object")
        bad = [item for item in extra if not item.startswith("--") or "=" not in item]
        if bad:
            raise cli.ConfigError(f"unexpected argument {bad[0]!r}: after the JSON come RESULTS_DIR and --key=value")
        overrides = to_overrides(spec) + [item[2:] for item in extra]
        cfg = cli.load_config(configs.CONFIGS, spec.get("config", "iris"), overrides, configs.SELECTORS)
        configs.check(cfg)
    except json.JSONDecodeError as err:
        print(f"error: the argument is not valid JSON ({err})", file=sys.stderr)
        return EXIT_USAGE
    except cli.ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S-%f")  # microseconds: two runs never share a folder
    results_dir = given_dir or spec.get("results_dir", f"runs/{stamp}-{cfg.model.name}")
    print(f"Results will be written to {results_dir}")
    return train(cfg, results_dir, argv)


if __name__ == "__main__":
    sys.exit(signals.exit_status(main(sys.argv)))  # 128+N if a stop signal came; ignored from here on
