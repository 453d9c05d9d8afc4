"""Wiring: config -> dataset, network, training model -> training loop -> results directory.

This is the one module that knows both sides: the project's components
(configs, datasets, networks, training_models) and the infrastructure
(``engine``).  ``bin/train.py``, ``bin/evaluate.py`` and
``training_scripts/run_experiment.py`` are thin wrappers around it.

Exit codes: 0 finished (or nothing left to do), 1 the run failed (non-finite
loss, disk full, unreadable checkpoints, a bug), 2 bad command line or config
or RESULTS_DIR in use (nothing was written), 128+N stopped by signal N after
writing a checkpoint (130 Ctrl-C, 138 SIGUSR1, 143 SIGTERM): run the same
command again to resume.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from . import configs
from .datasets import build_dataset, one_vs_rest
from .engine import cli, signals
from .engine.checkpoint import CheckpointWriteError, UntrustedFileError, atomic_write_json, load_tensors
from .engine.data import DataLoaderBatches, InMemoryBatches
from .engine.lock import RunLock
from .engine.loop import CheckpointMismatch, NonFiniteLoss, NoReadableCheckpoint, Trainer, TrainerOptions, evaluate
from .engine.results import STATUS_FAILED, STATUS_FINISHED, STATUS_INTERRUPTED, ResultsDir, print_exception
from .networks import NETWORKS, build_network
from .training_models import TRAINING_MODELS, build_training_model

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
# Failures that deserve one line on stderr rather than a traceback.
EXPECTED_ERRORS = (
    NonFiniteLoss, UntrustedFileError, NoReadableCheckpoint, CheckpointMismatch, cli.ConfigError, FileNotFoundError,
)  # fmt: skip


def resolve_device(name: str) -> torch.device:
    """``auto`` -> the best available device; anything else as given (checked)."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise cli.ConfigError(f"device={name!r} but CUDA is not available here; use device=auto or cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise cli.ConfigError(f"device={name!r} but MPS is not available here; use device=auto or cpu")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def build(cfg: DictConfig, device: torch.device, with_test: bool = False) -> dict[str, Any]:
    """Dataset splits, network and training model for ``cfg``, on ``device``."""
    dataset = build_dataset(cfg.data)
    outputs = cfg.model.output_shape or dataset.num_classes
    if with_test:
        splits = {"test": dataset.test()}
    else:
        train, valid = dataset.train_valid()
        splits = {"train": train, "valid": valid}
    if outputs == 1:  # one logit: a binary task, positive_class against the rest
        splits = {name: one_vs_rest(split, cfg.data.positive_class) for name, split in splits.items()}
    network = build_network(cfg.model, dataset.input_shape, outputs).to(device)
    model = build_training_model(cfg.training_model, network, cfg)
    batches = {
        name: make_batches(cfg, split, name == "train", dataset, device)
        for name, split in splits.items()
        if len(split.y)
    }
    return {"model": model, "batches": batches}


def make_batches(cfg: DictConfig, split, train: bool, dataset, device: torch.device):
    """The batches of one split: tensors on ``device`` (data.loader=memory) or a DataLoader (dataloader)."""
    common = dict(shuffle=train, seed=cfg.seed, transform=dataset.batch_transform(train=train))
    if cfg.data.loader == "memory":
        return InMemoryBatches(split.x.to(device), split.y.to(device), cfg.batch_size, **common)
    dataset = torch.utils.data.TensorDataset(split.x, split.y)
    return DataLoaderBatches(dataset, cfg.batch_size, device, num_workers=cfg.data.num_workers, **common)


def trainer_options(cfg: DictConfig) -> TrainerOptions:
    return TrainerOptions(
        num_epochs=cfg.num_epochs,
        grad_accum_steps=cfg.grad_accum_steps,
        checkpoint_every_steps=cfg.checkpoint.every_steps,
        checkpoint_every_minutes=cfg.checkpoint.every_minutes,
        checkpoint_min_interval_s=cfg.checkpoint.min_interval_s,
        keep_checkpoints=cfg.checkpoint.keep,
        log_every_steps=cfg.log_every_steps,
        early_stopping_patience=cfg.early_stopping_patience,
    )


def make_trainer(cfg: DictConfig, results: ResultsDir, device: torch.device, stop=None) -> Trainer:
    """Seed, build data, network and training model, and wrap them in a Trainer writing to ``results``."""
    torch.backends.cudnn.benchmark = cfg.cudnn_benchmark
    seed_everything(cfg.seed)
    built = build(cfg, device)
    batches = built["batches"]
    return Trainer(built["model"], batches["train"], batches.get("valid"), results, trainer_options(cfg), stop)


def train(cfg: DictConfig, results_dir: str | Path, argv: Sequence[str], allow_config_change: bool = False) -> int:
    """Train (or resume) the run in ``results_dir``; return the exit code."""
    config = OmegaConf.to_container(cfg, resolve=True)
    results = ResultsDir(results_dir)
    device = resolve_device(cfg.device)
    results.path.mkdir(parents=True, exist_ok=True)
    lock = RunLock(results.path)
    lock.acquire()  # a second process on the same folder stops here (ResultsDirLocked, exit 2)
    try:
        # Refuse a changed config before anything is written.
        changes = results.check_config(config, configs.RESUMABLE_CHANGES, allow_any=allow_config_change)
        results.start(list(argv), {"device": str(device)})
    except BaseException:
        lock.release()
        raise
    results.capture_output()
    status, reason, code = STATUS_FAILED, None, EXIT_FAILED
    try:
        with signals.StopFlag() as stop:
            if lock.stale:
                print(f"Took over the lock left by a process that is gone: {lock.stale}")
            for change in changes:
                print(f"Resuming with a changed config: {change}")
            trainer = make_trainer(cfg, results, device, stop)
            trainer.resume()
            results.write_config(config)  # only now: a config whose model cannot load the checkpoint is not kept
            results.copy_script(argv[0])
            stopped_by = trainer.fit()
        if stopped_by:
            status, code = STATUS_INTERRUPTED, signals.exit_code(stop.signum)
            where = f"epoch {trainer.epoch}" + (f" + {trainer.batch} batches" if trainer.batch else "")
            reason = f"{stopped_by}: stopped after a checkpoint at {where} (step {trainer.global_step})"
            print(f"{reason}; run the same command to resume.", file=sys.stderr)
        else:
            status, code = STATUS_FINISHED, EXIT_OK
            reason = "early stopping" if trainer.stopped_early else None
            print(f"Results in {results.path}")
    except KeyboardInterrupt:  # a second Ctrl-C: stopped at once, without a checkpoint
        status, reason, code = STATUS_INTERRUPTED, "KeyboardInterrupt", EXIT_INTERRUPTED
        print("Interrupted; run the same command again to resume from the last checkpoint.", file=sys.stderr)
    except CheckpointWriteError as err:
        reason = f"CheckpointWriteError: {err}"
        hint = "the previous checkpoint is intact: make room, then run the same command to resume"
        print(f"error: {err}; {hint}", file=sys.stderr)
    except EXPECTED_ERRORS as err:
        reason = f"{type(err).__name__}: {err}"  # expected problems: one line, no traceback
        print(f"error: {err}", file=sys.stderr)
    except OSError as err:  # disk full, quota, I/O error while writing logs or history
        reason = f"{type(err).__name__}: {err}"
        print(f"error: {err}; the last checkpoint is intact: fix this, then run the same command to resume",
              file=sys.stderr)  # fmt: skip
    except Exception:
        reason = print_exception()
    finally:
        results.finish(status, reason)
        results.release_output()
        lock.release()
    return code


def evaluate_run(results_dir: str | Path) -> dict[str, float]:
    """Test-set metrics of the run in ``results_dir``, also written to its test_metrics.json."""
    results_dir = Path(results_dir)
    if not (results_dir / "config.json").is_file() or not (results_dir / "model.pt").is_file():
        raise cli.ConfigError(f"{results_dir} is not a results directory with a trained model (config.json, model.pt)")
    cfg = OmegaConf.create(json.loads((results_dir / "config.json").read_text()))
    device = resolve_device("auto")  # the machine evaluating may differ from the one that trained
    built = build(cfg, device, with_test=True)
    model = built["model"]
    model.network.load_state_dict(load_tensors(results_dir / "model.pt", device))
    metrics = evaluate(model, built["batches"]["test"], prefix="test_")
    epoch = json.loads((results_dir / "loop_state.json").read_text())["epoch"]
    atomic_write_json(results_dir / "test_metrics.json", {**metrics, "epoch": epoch})
    return metrics


def help_epilog() -> str:
    """The long part of ``--help``: configs, every key with type and default, the choices."""
    base = OmegaConf.structured(configs.ExperimentConfig)
    lines = ["configs (how each differs from the defaults below):"]
    for name, factory in configs.CONFIGS.items():
        doc = (factory.__doc__ or "").strip().splitlines()[0]
        diff = cli.config_diff(OmegaConf.to_container(base), OmegaConf.to_container(OmegaConf.structured(factory())))
        lines.append(f"  {name:<9} {doc}")
        lines += [f"{'':12}{key}={new!r}" for key, _, new in diff if new != "<absent>"]
    lines += ["", "keys (--key=value; values are read as literals: 3, 0.1, true, [[3, 0.1], [100, 0.01]]):"]
    lines.append(cli.format_keys(base))
    lines += [
        "",
        "models (--model=NAME selects one with its defaults; --model.KEY=VALUE sets an argument;",
        "        all also take input_shape and output_shape, taken from the data when null):",
    ]
    for name in NETWORKS:
        rows = cli.describe(OmegaConf.structured(configs.SELECTORS["model"](name)))
        shared = ("name", "input_shape", "output_shape")
        args = ", ".join(f"{key}: {kind} = {value}" for key, kind, value in rows if key not in shared)
        lines.append(f"  {name:<9} {args}")
    from .datasets import DATASETS

    lines += ["", f"data.name:        {', '.join(DATASETS)}", f"training_model:   {', '.join(TRAINING_MODELS)}"]
    lines += [
        "",
        "examples:",
        "  python bin/train.py iris runs/iris_mlp",
        "  python bin/train.py cifar10 runs/test --model.n_filters=10",
        "  python bin/train.py cifar10 runs/test_lenet --model=lenet",
        '  python bin/train.py cifar10 runs/test_lrsch --lr_schedule="[[3, 0.1],[100, 0.01]]"',
        "",
        "Running the same command on an existing RESULTS_DIR resumes it exactly where the last checkpoint was.",
        "SIGTERM, SIGUSR1 or Ctrl-C: checkpoint at the next step, then exit (a second Ctrl-C exits without one).",
        "exit codes: 0 finished, 1 failed, 2 bad command line, config or RESULTS_DIR in use,",
        "            128+N stopped by signal N after a checkpoint (130 Ctrl-C, 138 SIGUSR1, 143 SIGTERM)",
    ]
    return "\n".join(lines)


def parse_and_check(argv: Sequence[str]) -> cli.Command:
    command = cli.parse_command_line(
        argv[1:],
        prog=Path(argv[0]).name,
        description="Train a model from a named config, changed by --key=value overrides.",
        configs=configs.CONFIGS,
        selectors=configs.SELECTORS,
        help_epilog=help_epilog,
    )
    configs.check(command.cfg)
    return command


def main_train(argv: Sequence[str]) -> int:
    """``bin/train.py CONFIG RESULTS_DIR [--key=value ...]``."""
    try:
        command = parse_and_check(argv)
        if command.dry_run:
            print(OmegaConf.to_yaml(command.cfg), end="")
            return EXIT_OK
        return train(command.cfg, command.results_dir, argv, command.allow_config_change)
    except (cli.ConfigError, OSError) as err:  # OSError: RESULTS_DIR cannot be created or locked
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE


def main_evaluate(argv: Sequence[str]) -> int:
    """``bin/evaluate.py RESULTS_DIR``: report and record the test metrics of a run."""
    parser = argparse.ArgumentParser(
        prog=Path(argv[0]).name,
        description="Report the test-set metrics of a finished run and write them to RESULTS_DIR/test_metrics.json.",
    )
    parser.add_argument("results_dir", metavar="RESULTS_DIR", help="a results directory written by bin/train.py")
    args = parser.parse_args(argv[1:])  # exits 2 with the usage on a bad command line
    try:
        metrics = evaluate_run(args.results_dir)
    except (cli.ConfigError, UntrustedFileError, FileNotFoundError, ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)  # ValueError: a malformed JSON; RuntimeError: a damaged model.pt
        return EXIT_USAGE
    print("  ".join(f"{key} {value:.4f}" for key, value in metrics.items()))
    return EXIT_OK
