"""Wiring: config -> dataset, network, training model -> training loop -> results directory.

This is the one module that knows both sides: the project's components
(configs, datasets, networks, training_models) and the infrastructure
(``engine``).  ``bin/train.py``, ``bin/evaluate.py`` and
``training_scripts/run_experiment.py`` are thin wrappers around it; how a
training session goes and what its exit codes mean is in ``engine/session.py``.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from . import configs
from .datasets import Split, build_dataset, one_vs_rest
from .engine import cli, distributed, session, signals, slurm, sweep
from .engine.checkpoint import DamagedFileError, UntrustedFileError, atomic_write_json, load_tensors
from .engine.data import DataLoaderBatches, InMemoryBatches, epoch_seed
from .engine.distributed import World
from .engine.loop import Trainer, evaluate
from .engine.results import ResultsDir
from .engine.session import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from .engine.signals import StopFlag
from .metrics import METRICS, TaskMetrics, higher_is_better, metric_names
from .networks import BAD_ARGUMENT, NETWORKS, build_network
from .training_models import TRAINING_MODELS
from .training_models.base import loss_name


def resolve_device(name: str, world: World | None = None) -> torch.device:
    """``auto`` -> the best available device; anything else as given (checked).  One of several processes
    trains on the GPU of its local rank."""
    if world is not None and world.size > 1 and name in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda", world.local_rank)
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


def output_size(cfg: DictConfig, dataset) -> int:
    """The network's outputs for the task: one per class, one logit (binary), one per target column."""
    if cfg.task == "regression":
        return dataset.num_targets
    if dataset.num_classes is None:
        raise cli.ConfigError(f"data.name={cfg.data.name!r} has no class labels: use task=regression")
    return 1 if cfg.task == "binary" else dataset.num_classes


def check_world(cfg: DictConfig, world: World, device: torch.device) -> None:
    """Settings that several training processes cannot take; ``ConfigError`` with one line."""
    if world.size == 1:
        return
    if cfg.batch_size % world.size:
        raise cli.ConfigError(
            f"batch_size={cfg.batch_size} is the batch of all {world.size} processes together, so it must divide "
            f"by {world.size}: use {cfg.batch_size - cfg.batch_size % world.size or world.size}, for example"
        )
    if cfg.nonfinite_loss == "skip":
        raise cli.ConfigError("nonfinite_loss=skip works in one process only: each would skip on its own loss")
    if cfg.sync_batchnorm and device.type != "cuda":
        raise cli.ConfigError(f"sync_batchnorm=true needs CUDA (torch's SyncBatchNorm); this run is on {device}")
    if re.fullmatch(r"cuda:\d+", cfg.device):
        raise cli.ConfigError(f"device={cfg.device}: each of several processes takes the GPU of its local rank; "
                              "use device=auto or cuda")  # fmt: skip


def build(cfg: DictConfig, device: torch.device, with_test: bool = False, world: World | None = None) -> dict[str, Any]:
    """Dataset splits as batches, network, training model and metrics for ``cfg``, on ``device``: this process's
    share, with the network wrapped for data parallelism, where ``world`` has several.

    Raises ``ConfigError`` for values that only the data can show to be wrong.
    """
    world = world or World()
    dataset = build_dataset(cfg)
    outputs = output_size(cfg, dataset)
    if cfg.model.output_shape not in (None, outputs):
        raise cli.ConfigError(
            f"model.output_shape={cfg.model.output_shape} does not fit task={cfg.task} on data.name={cfg.data.name!r}, "
            f"which needs {outputs} output(s); leave it null (taken from the data)"
        )
    if cfg.task == "binary" and not 0 <= cfg.data.positive_class < dataset.num_classes:
        raise cli.ConfigError(
            f"data.positive_class={cfg.data.positive_class}: choose a class of the data, 0..{dataset.num_classes - 1}"
        )
    if with_test:
        splits = {"test": dataset.test()}
    else:
        train, valid = dataset.train_valid()
        if not _num_samples(train):
            raise cli.ConfigError(f"data.validation_split={cfg.data.validation_split} leaves no training samples")
        splits = {"train": train, "valid": valid}
    if cfg.task == "binary":  # positive_class against the rest
        splits = {name: one_vs_rest(split, cfg.data.positive_class) for name, split in splits.items()}
    network = build_network(cfg.model, dataset.input_shape, outputs).to(device)
    if cfg.sync_batchnorm and world.size > 1:
        network = torch.nn.SyncBatchNorm.convert_sync_batchnorm(network)
    model = TRAINING_MODELS[cfg.training_model](network, cfg)
    try:
        metrics = [TaskMetrics(metric_names(cfg.task, cfg.metrics), cfg.task, outputs, device) for _ in range(2)]
    except ValueError as err:
        raise cli.ConfigError(f"{err} (data.name={cfg.data.name!r})") from None
    check_fit(model, metrics[0], next(iter(splits.values())), dataset.batch_transform(train=False), cfg)
    batches = {
        name: make_batches(cfg, split, name == "train", dataset, device, world)
        for name, split in splits.items()
        if _num_samples(split)
    }
    if world.size > 1:
        parallel = torch.nn.parallel.DistributedDataParallel(
            network, device_ids=[device.index] if device.type == "cuda" else None
        )
        parallel = torch.compile(parallel) if cfg.compile else parallel
        alone = model.forward  # evaluation: each process on its own share, no collective per batch
        model.forward = lambda x: parallel(x) if torch.is_grad_enabled() else alone(x)
    return {"model": model, "batches": batches, "metrics": metrics}


def _num_samples(split) -> int:
    return len(split.y) if isinstance(split, Split) else len(split)


@torch.no_grad()
def check_fit(model, metrics: TaskMetrics, split, transform, cfg: DictConfig) -> None:
    """Raise ``ConfigError`` unless the network, the loss and the metrics take two samples of ``split``.

    A wrong loss or shape then stops the run before anything is written, not
    at its first step.  Nothing changes: eval mode (BatchNorm statistics stay),
    the plain network (not its compiled version), random numbers forked, the
    metrics reset afterwards.
    """
    if isinstance(split, Split):
        x, y = split.x[:2], split.y[:2]
    else:
        x, y = torch.utils.data.default_collate([split[i] for i in range(min(2, len(split)))])
    x, y = x.to(model.device), y.to(model.device)
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the error below says it; a warning before it would be a second line
        try:
            model.network.eval()
            outputs = model.network(transform(x) if transform else x)
            model.loss(outputs, y)
            metrics.update(outputs, y)
        except BAD_ARGUMENT as err:
            raise cli.ConfigError(
                f"the network and loss={loss_name(cfg.task, cfg.loss)} of task={cfg.task} cannot take this data "
                f"(samples of shape {list(x.shape[1:])}, targets of type {y.dtype} and shape {list(y.shape[1:])}): "
                f"{cli.first_line(err)}"
            ) from None
        finally:
            model.network.train()
            metrics.reset()


def make_batches(cfg: DictConfig, split, train: bool, dataset, device: torch.device, world: World):
    """The batches of one split (this process's share): tensors on ``device``, or a DataLoader over a Dataset
    (see ``data.loader``)."""
    common = dict(shuffle=train, seed=cfg.seed, transform=dataset.batch_transform(train=train), rank=world.rank,
                  world_size=world.size)  # fmt: skip
    if isinstance(split, Split) and cfg.data.loader != "dataloader":
        return InMemoryBatches(split.x.to(device), split.y.to(device), cfg.batch_size, **common)
    if cfg.data.loader == "memory":
        raise cli.ConfigError(f"data.loader=memory, but data.name={cfg.data.name!r} reads lazily: use auto")
    if isinstance(split, Split):
        split = torch.utils.data.TensorDataset(split.x, split.y)
    return DataLoaderBatches(split, cfg.batch_size, device, num_workers=cfg.data.num_workers, **common)


def make_trainer(
    cfg: DictConfig, results: ResultsDir, device: torch.device, stop: StopFlag | None = None, world: World | None = None
) -> Trainer:
    """Seed, build data, network, training model and metrics, and wrap them in a Trainer writing to ``results``."""
    world = world or World()
    check_world(cfg, world, device)
    torch.backends.cudnn.benchmark = cfg.cudnn_benchmark
    seed_everything(cfg.seed)  # the same weights in every process
    built = build(cfg, device, world=world)
    if world.size > 1:  # augmentation and dropout: a stream of random numbers per process
        seed_everything(epoch_seed(cfg.seed, world.rank) % 2**32)
    batches, pruner = built["batches"], sweep.trial_pruner()  # (a pruning sweep's trial reports each epoch)
    return Trainer(built["model"], batches["train"], batches.get("valid"), built["metrics"], results, cfg, stop, world,
                   early_stop=pruner, hparams=OmegaConf.to_container(cfg, resolve=True))  # fmt: skip


def train(cfg: DictConfig, results_dir: str | Path, argv: Sequence[str], allow_config_change: bool = False) -> int:
    """Train (or resume) the run in ``results_dir``, alone or as one of several processes (torchrun, SLURM
    tasks); return the exit code (see ``engine/session.py``)."""
    world = distributed.start(cfg.device)
    code = EXIT_FAILED
    try:
        device = resolve_device(cfg.device, world)
        code = session.run(
            results_dir,
            argv,
            OmegaConf.to_container(cfg, resolve=True),
            build=lambda results, stop: make_trainer(cfg, results, device, stop, world),
            resumable_changes=configs.RESUMABLE_CHANGES,
            allow_config_change=allow_config_change,
            meta={"device": str(device), **distributed.describe(world, device)},
            world=world,
        )
        return code
    finally:
        world.close(code)


WEIGHTS = {"best": "best_model.pt", "last": "model.pt"}


def evaluate_run(results_dir: str | Path, weights: str = "best") -> tuple[dict[str, float], str]:
    """Test-set loss and metrics of the run in ``results_dir`` with its ``best`` or ``last`` weights.

    Returns the metrics and the weights file used: best_model.pt, or model.pt
    when the run kept no best (no validation set).  ``write_test_metrics`` records them.
    """
    results_dir = Path(results_dir)
    name = WEIGHTS[weights]
    if weights == "best" and not (results_dir / name).is_file() and (results_dir / "model.pt").is_file():
        print("note: this run kept no best_model.pt (no validation set): evaluating model.pt", file=sys.stderr)
        name = "model.pt"
    if not (results_dir / "config.json").is_file() or not (results_dir / name).is_file():
        raise cli.ConfigError(f"{results_dir} is not a results directory with a trained model (config.json, {name})")
    device = resolve_device("auto")  # the machine evaluating may differ from the one that trained
    try:
        saved = _read_json(results_dir / "config.json")
        cfg = OmegaConf.structured(configs.ExperimentConfig)  # typed, with the keys an older run did not have
        cfg.model = OmegaConf.structured(configs.SELECTORS["model"](saved["model"]["name"]))
        cfg = OmegaConf.merge(cfg, saved)
        built = build(cfg, device, with_test=True)
    except (OmegaConfBaseException, KeyError, AttributeError, TypeError) as err:  # edited by hand: keys wrong
        raise cli.ConfigError(
            f"{results_dir / 'config.json'} does not describe a run ({cli.first_line(err)})"
        ) from None
    model = built["model"]
    try:
        model.network.load_state_dict(load_tensors(results_dir / name, device))
    except RuntimeError as err:
        raise cli.ConfigError(f"{results_dir / name} does not fit the run's network: {cli.first_line(err)}") from None
    return evaluate(model, built["batches"]["test"], built["metrics"][0], prefix="test_"), name


def write_test_metrics(results_dir: str | Path, metrics: dict[str, float], weights: str) -> None:
    """Write ``metrics`` to RESULTS_DIR/test_metrics.json with the weights file and the epoch they are from."""
    loop = _read_json(Path(results_dir) / "loop_state.json")
    epoch = loop.get("best_epoch") if weights == "best_model.pt" else loop.get("epoch")
    atomic_write_json(Path(results_dir) / "test_metrics.json", {**metrics, "weights": weights, "epoch": epoch})


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_bytes())
    except (ValueError, OSError) as err:
        raise cli.ConfigError(f"{path} is unreadable ({type(err).__name__}: {err})") from None
    if not isinstance(value, dict):
        raise cli.ConfigError(f"{path} does not hold a JSON object")
    return value


def help_epilog() -> str:
    """The long part of ``--help``: configs, every key with type and default, the choices."""
    base = OmegaConf.structured(configs.ExperimentConfig)
    width = max(map(len, [*configs.CONFIGS, *NETWORKS])) + 2  # the name column fits the longest name
    lines = ["configs (how each differs from the defaults below):"]
    for name, factory in configs.CONFIGS.items():
        doc = (factory.__doc__ or "").strip().splitlines()[0]
        diff = cli.config_diff(OmegaConf.to_container(base), OmegaConf.to_container(OmegaConf.structured(factory())))
        lines.append(f"  {name:<{width}} {doc}")
        lines += [f"{'':{width + 3}}{key}={new!r}" for key, _, new in diff if new != "<absent>"]
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
        lines.append(f"  {name:<{width}} {args or '(no arguments of its own)'}")
    from .datasets import DATASETS

    lines += ["", f"data.name:        {', '.join(DATASETS)}", f"training_model:   {', '.join(TRAINING_MODELS)}"]
    lines += [f"metrics:          {', '.join(METRICS)} (default: acc; mae, rmse, r2 for task=regression)"]
    lines += [
        "",
        "examples:",
        "  python bin/train.py iris runs/iris_mlp",
        "  python bin/train.py cifar10 runs/test --model.n_filters=10",
        "  python bin/train.py cifar10 runs/test_lenet --model=lenet",
        "  python bin/train.py cifar10 runs/f1 --metrics=[acc,f1_macro,top5] --monitor=valid_f1_macro",
        "  python bin/train.py iris runs/table --task=regression --data.root=table.csv",
        '  python bin/train.py cifar10 runs/test_lrsch --lr_schedule="[[3, 0.1],[100, 0.01]]"',
        "",
        "Running the same command on an existing RESULTS_DIR resumes it exactly where the last checkpoint was.",
        "SIGTERM, SIGUSR1, SIGUSR2 or Ctrl-C: checkpoint at the next step, then exit (a second Ctrl-C: at once).",
        "exit codes: 0 finished, 1 failed, 2 bad command line, config, data or RESULTS_DIR (nothing written),",
        "            128+N stopped by signal N after a checkpoint (130 Ctrl-C, 138 SIGUSR1, 140 SIGUSR2, 143 SIGTERM)",
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
    cli.escape_unencodable_output()
    try:
        command = parse_and_check(argv)
        if command.dry_run:
            print(OmegaConf.to_yaml(command.cfg), end="")
            return EXIT_OK
        return train(command.cfg, command.results_dir, argv, command.allow_config_change)
    except cli.ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE


def main_submit(argv: Sequence[str]) -> int:
    """``bin/submit.py [SLURM options] -- CONFIG RESULTS_DIR [--key=value ...]`` (see ``engine/slurm.py``)."""
    cli.escape_unencodable_output()
    try:
        return slurm.main(argv, train=main_train, check=lambda train_argv: parse_and_check(train_argv).results_dir)
    except cli.ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE


def objective_maximized(cfg: DictConfig, column: str) -> bool:
    """Is a larger ``column`` of history.csv better, in runs of ``cfg``?  ``ConfigError`` if they lack it."""
    columns = configs.history_columns(cfg)
    if column not in columns:
        raise cli.ConfigError(f"--objective={column} is not a column these runs write; choose one of "
                              f"{', '.join(columns)}")  # fmt: skip
    return higher_is_better(column)


def main_sweep(argv: Sequence[str]) -> int:
    """``bin/sweep.py CONFIG SWEEP_DIR [--grid ...] [--search ...] [-- --key=value ...]`` (see ``engine/sweep.py``)."""
    cli.escape_unencodable_output()
    try:
        return sweep.main(argv, check=parse_and_check, maximize=objective_maximized, train=main_train,
                          stop=signals.catch())  # fmt: skip
    except cli.ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE


def main_evaluate(argv: Sequence[str]) -> int:
    """``bin/evaluate.py RESULTS_DIR``: report and record the test metrics of a run."""
    cli.escape_unencodable_output()
    parser = argparse.ArgumentParser(
        prog=Path(argv[0]).name,
        description="Report the test-set metrics of a finished run and write them to RESULTS_DIR/test_metrics.json.",
    )
    parser.add_argument("results_dir", metavar="RESULTS_DIR", help="a results directory written by bin/train.py")
    parser.add_argument(
        "--weights",
        choices=list(WEIGHTS),
        default="best",
        help="best: best_model.pt (the best epoch by `monitor`), last: model.pt (default: best)",
    )
    args = parser.parse_args(argv[1:])  # exits 2 with the usage on a bad command line
    try:
        metrics, weights = evaluate_run(args.results_dir, args.weights)
    except (cli.ConfigError, UntrustedFileError, DamagedFileError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    print(f"{weights}: " + "  ".join(f"{key} {value:.4f}" for key, value in metrics.items()))
    try:
        write_test_metrics(args.results_dir, metrics, weights)
    except (cli.ConfigError, OSError) as err:  # e.g. a read-only results directory: the metrics are printed above
        print(f"error: the metrics above could not be written to test_metrics.json: {err}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def main_compare(argv: Sequence[str]) -> int:
    """``bin/compare.py PATH... [--metric NAME]... [--group-by KEY,...]`` (see ``engine/compare.py``): the engine
    reads the runs, the project says which way each metric is better (``metrics.higher_is_better``)."""
    from .engine import compare  # pandas, scipy and matplotlib: not imported for training

    cli.escape_unencodable_output()
    return compare.main(argv, higher_is_better)
