"""{{ cookiecutter.dataset_loading_class }}: load a table of numeric features with a class column.

By default it serves the Iris data (Fisher, 1936) shipped beside this file, so
everything runs offline.  Point ``data.root`` at your own CSV (one header row,
numeric feature columns, the class name in the last column) or rewrite
``_read`` for another format: ``train_valid`` and ``test`` are all the
trainer needs.
"""

from __future__ import annotations

import csv
from pathlib import Path

import torch

from .common import Split, carve_validation

IRIS_CSV = Path(__file__).with_name("iris.csv")
TEST_FRACTION = 0.2  # fixed, so the test set never depends on a config
TEST_SEED = 0


class {{ cookiecutter.dataset_loading_class }}:
    """Tabular classification data; the training part is standardised with its own statistics.

    Args:
        cfg: the ``data`` config node (``root``, ``validation_split``, ``split_seed``).
    """

    def __init__(self, cfg):
        self.path = Path(cfg.root) if cfg.root else IRIS_CSV
        self.validation_split, self.split_seed = cfg.validation_split, cfg.split_seed
        features, labels, self.class_names = self._read(self.path)
        # A fixed, stratified test split: the same samples whatever the seed.
        generator = torch.Generator().manual_seed(TEST_SEED)
        is_test = torch.zeros(len(labels), dtype=torch.bool)
        for label in range(len(self.class_names)):
            members = (labels == label).nonzero().flatten()
            members = members[torch.randperm(len(members), generator=generator)]
            is_test[members[: round(len(members) * TEST_FRACTION)]] = True
        pool = features[~is_test]
        self.mean, self.std = pool.mean(0), pool.std(0).clamp_min(1e-8)
        self._pool = Split((pool - self.mean) / self.std, labels[~is_test])
        self._test = Split((features[is_test] - self.mean) / self.std, labels[is_test])

    @property
    def input_shape(self) -> list[int]:
        return [self._pool.x.shape[1]]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

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
    def _read(path: Path) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        if not path.is_file():
            raise FileNotFoundError(f"data.root={str(path)!r} is not a CSV file")
        with open(path, newline="") as f:
            rows = [row for row in csv.reader(f) if row]
        header, rows = rows[0], rows[1:]
        class_names = sorted({row[-1] for row in rows})
        try:
            features = torch.tensor([[float(v) for v in row[:-1]] for row in rows], dtype=torch.float32)
        except ValueError as err:
            raise ValueError(f"{path}: feature columns {header[:-1]} must be numeric ({err})") from None
        labels = torch.tensor([class_names.index(row[-1]) for row in rows])
        return features, labels, class_names
