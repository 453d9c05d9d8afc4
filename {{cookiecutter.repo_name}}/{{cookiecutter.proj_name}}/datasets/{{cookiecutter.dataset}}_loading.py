"""{{ cookiecutter.dataset_loading_class }}: a table of numeric features with a class column, or with value columns.

By default it serves the Iris data (Fisher, 1936) shipped beside this file, so
everything runs offline.  Point ``data.root`` at your own CSV: one header row,
numeric feature columns, and

* ``task=classification`` or ``binary``: the class in the last column (names or
  integers).  A numeric class column with fractions or more than
  ``MAX_NUMERIC_CLASSES`` distinct values is refused: it is a regression target;
* ``task=regression``: numeric target columns, named by ``data.targets`` (the
  last column when empty).

Or rewrite ``_read`` for another format: ``train_valid`` and ``test`` are all
the trainer needs.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..engine.cli import ConfigError
from .common import Split, carve_validation

MAX_NUMERIC_CLASSES = 100  # a numeric class column with more distinct values is taken for a regression target
IRIS_CSV = Path(__file__).with_name("iris.csv")
TEST_FRACTION = 0.2  # fixed, so the test set never depends on a config
TEST_SEED = 0

if TYPE_CHECKING:
    from ..configs import DataConfig


class {{ cookiecutter.dataset_loading_class }}:
    """Tabular data; the features are standardised with the statistics of the training part.

    Args:
        cfg: the ``data`` config node (``root``, ``targets``, ``validation_split``, ``split_seed``).
        task: ``classification`` and ``binary`` read a class column, ``regression`` value columns.
    """

    def __init__(self, cfg: DataConfig, task: str = "classification"):
        self.path = Path(cfg.root) if cfg.root else IRIS_CSV
        self.validation_split, self.split_seed = cfg.validation_split, cfg.split_seed
        header, rows = self._read(self.path)
        if task == "regression":
            features, targets = self._values(header, rows, list(cfg.targets) or header[-1:])
            self.class_names, self.num_targets = None, targets.shape[1]
            is_test = self._held_out([torch.arange(len(targets))])
        else:
            if cfg.targets:
                raise ConfigError(f"data.targets={list(cfg.targets)} names regression targets, but task={task}")
            features, targets = self._classes(header, rows)
            is_test = self._held_out([(targets == label).nonzero().flatten() for label in range(self.num_classes)])
        pool = features[~is_test]
        self.mean, self.std = pool.mean(0), pool.std(0).clamp_min(1e-8)
        self._pool = Split((pool - self.mean) / self.std, targets[~is_test])
        self._test = Split((features[is_test] - self.mean) / self.std, targets[is_test])

    @property
    def input_shape(self) -> list[int]:
        return [self._pool.x.shape[1]]

    @property
    def num_classes(self) -> int | None:
        return None if self.class_names is None else len(self.class_names)

    def train_valid(self) -> tuple[Split, Split]:
        """Training and validation data (the validation part is carved from training data)."""
        return carve_validation(self._pool, self.validation_split, self.split_seed)

    def test(self) -> Split:
        """The held-out test set: for ``bin/evaluate.py`` only, never for training."""
        return self._test

    def batch_transform(self, train: bool):
        """Per-batch transform on the device (none: the features are ready)."""
        return None

    @staticmethod
    def _held_out(groups: list[torch.Tensor]) -> torch.Tensor:
        """A fixed test part, the same samples whatever the config: ``TEST_FRACTION`` of each group (class)."""
        generator = torch.Generator().manual_seed(TEST_SEED)
        is_test = torch.zeros(sum(len(g) for g in groups), dtype=torch.bool)
        for members in groups:
            members = members[torch.randperm(len(members), generator=generator)]
            is_test[members[: round(len(members) * TEST_FRACTION)]] = True
        return is_test

    def _classes(self, header: list[str], rows: list[list[str]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Features and class indices, the class in the last column."""
        names = {row[-1] for row in rows}
        numbers = _numbers(names)
        if numbers is not None and (any(n != int(n) for n in numbers) or len(names) > MAX_NUMERIC_CLASSES):
            raise ConfigError(
                f"{self.path}: the class column {header[-1]!r} holds {len(names)} distinct numbers, not classes; "
                f"for a value to predict use --task=regression"
            )
        self.class_names = sorted(names, key=float) if numbers is not None else sorted(names)
        index = {name: i for i, name in enumerate(self.class_names)}
        features = _float_columns(self.path, header, rows, range(len(header) - 1))
        return features, torch.tensor([index[row[-1]] for row in rows])

    def _values(self, header: list[str], rows: list[list[str]], targets: list[str]) -> tuple[torch.Tensor, ...]:
        """Features and float targets ``[N, len(targets)]``."""
        missing = [name for name in targets if name not in header]
        if missing:
            raise ConfigError(f"data.targets: {missing} not among the columns of {self.path}: {header}")
        target_columns = [header.index(name) for name in targets]
        feature_columns = [i for i in range(len(header)) if i not in target_columns]
        if not feature_columns:
            raise ConfigError(f"{self.path}: every column is a target, none is left as a feature")
        return (
            _float_columns(self.path, header, rows, feature_columns),
            _float_columns(self.path, header, rows, target_columns),
        )

    def _read(self, path: Path) -> tuple[list[str], list[list[str]]]:
        if not path.is_file():
            raise FileNotFoundError(f"data.root={str(path)!r} is not a CSV file")
        with open(path, newline="") as f:
            rows = [row for row in csv.reader(f) if row]
        if len(rows) < 2 or any(len(row) != len(rows[0]) for row in rows):
            raise ConfigError(f"{path}: expected a header row and rows of {len(rows[0]) if rows else 'its'} columns")
        return rows[0], rows[1:]


def _numbers(values) -> list[float] | None:
    """``values`` as floats, or None if one is not a number."""
    try:
        return [float(value) for value in values]
    except ValueError:
        return None


def _float_columns(path: Path, header: list[str], rows: list[list[str]], columns) -> torch.Tensor:
    try:
        return torch.tensor([[float(row[i]) for i in columns] for row in rows], dtype=torch.float32)
    except ValueError as err:
        raise ConfigError(f"{path}: columns {[header[i] for i in columns]} must be numeric ({err})") from None
