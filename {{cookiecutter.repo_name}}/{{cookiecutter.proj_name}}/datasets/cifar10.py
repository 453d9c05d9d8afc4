"""CIFAR-10 from the official *binary* version (no pickle is ever loaded).

Expected layout under ``data.root`` (the archive's own folder)::

    cifar-10-batches-bin/data_batch_1.bin ... data_batch_5.bin, test_batch.bin

Each record is 1 label byte followed by 3072 image bytes (1024 red, 1024 green,
1024 blue, row-major 32x32).  If the files are absent, the archive is
downloaded once and its MD5 checked; an extracted folder is used as it is.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from ..engine.cli import ConfigError, first_line
from .common import Split, carve_validation

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
FOLDER = "cifar-10-batches-bin"
TRAIN_FILES = [f"data_batch_{i}.bin" for i in range(1, 6)]
TEST_FILE = "test_batch.bin"
RECORD = 1 + 3 * 32 * 32
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
# Per-channel statistics of the training set, for normalisation.
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)

if TYPE_CHECKING:
    from ..configs import DataConfig


def read_batch(path: Path) -> Split:
    """Read one ``.bin`` file into uint8 images ``[N, 3, 32, 32]`` and int64 labels ``[N]``."""
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % RECORD:
        raise ValueError(f"{path}: size {raw.size} bytes is not a whole number of {RECORD}-byte CIFAR-10 records")
    records = raw.reshape(-1, RECORD)
    labels = torch.from_numpy(records[:, 0].astype(np.int64))
    if labels.max() >= len(CLASSES):
        raise ValueError(f"{path}: label {int(labels.max())} out of range 0..9")
    images = torch.from_numpy(records[:, 1:].copy()).view(-1, 3, 32, 32)
    return Split(images, labels)


def find_folder(root: Path, download: bool = True) -> Path:
    """The folder holding the ``.bin`` files; download the archive first only if none exists."""
    for folder in (root / FOLDER, root):
        if all((folder / name).is_file() for name in [*TRAIN_FILES, TEST_FILE]):
            return folder
    if not download:
        raise FileNotFoundError(f"CIFAR-10 binary files not found under {root}")
    from torchvision.datasets.utils import download_and_extract_archive

    # Into a temporary folder beside root, moved into place once complete: a failed download (no network, a
    # mistyped data.root) leaves no folder behind.
    nearest = next(folder for folder in [root, *root.parents] if folder.is_dir())
    with tempfile.TemporaryDirectory(dir=nearest, prefix=".cifar10-download-") as tmp:
        try:
            download_and_extract_archive(URL, tmp, md5=MD5)
        except Exception as err:
            raise FileNotFoundError(
                f"CIFAR-10 not found under {root} and the download failed ({first_line(err)}). "
                f"Put the extracted {FOLDER}/ there (from {URL}) or set --data.root"
            ) from None
        root.mkdir(parents=True, exist_ok=True)
        os.replace(Path(tmp) / FOLDER, root / FOLDER)
    return find_folder(root, download=False)


def random_crop_flip(x: torch.Tensor, pad: int = 4) -> torch.Tensor:
    """Random crop after ``pad``-pixel zero padding, and random horizontal flip, of a whole batch."""
    n, c, h, w = x.shape
    device = x.device
    padded = F.pad(x, (pad, pad, pad, pad))
    rows = torch.randint(0, 2 * pad + 1, (n, 1), device=device) + torch.arange(h, device=device)  # [n, h]
    cols = torch.randint(0, 2 * pad + 1, (n, 1), device=device) + torch.arange(w, device=device)  # [n, w]
    flip = torch.rand(n, 1, device=device) < 0.5
    cols = torch.where(flip, cols.flip(1), cols)  # a flip is a crop read right to left
    batch = torch.arange(n, device=device).view(n, 1, 1, 1)
    channel = torch.arange(c, device=device).view(1, c, 1, 1)
    return padded[batch, channel, rows.view(n, 1, h, 1), cols.view(n, 1, 1, w)]


class Cifar10Loader:
    """CIFAR-10: 50,000 training images (validation carved from them) and 10,000 test images.

    Images stay uint8 in memory (150 MB instead of 600 MB) and are normalised,
    and augmented when training, one batch at a time on the training device.
    """

    input_shape = [3, 32, 32]
    class_names = CLASSES

    def __init__(self, cfg: DataConfig, task: str = "classification"):
        if task == "regression":
            raise ConfigError(f"data.name=cifar10 has class labels: use task=classification or binary, not {task}")
        self.root = Path(cfg.root)
        self.validation_split, self.split_seed, self.augment = cfg.validation_split, cfg.split_seed, cfg.augment
        self.folder = find_folder(self.root)

    @property
    def num_classes(self) -> int:
        return len(CLASSES)

    def train_valid(self) -> tuple[Split, Split]:
        batches = [read_batch(self.folder / name) for name in TRAIN_FILES]
        pool = Split(torch.cat([b.x for b in batches]), torch.cat([b.y for b in batches]))
        return carve_validation(pool, self.validation_split, self.split_seed)

    def test(self) -> Split:
        return read_batch(self.folder / TEST_FILE)

    def batch_transform(self, train: bool):
        stats: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}
        augment = train and self.augment

        def transform(x: torch.Tensor) -> torch.Tensor:
            if x.device not in stats:  # copied to the device once: a copy per batch would synchronise
                stats[x.device] = (torch.tensor(MEAN, device=x.device), torch.tensor(STD, device=x.device))
            mean, std = (t.view(1, 3, 1, 1) for t in stats[x.device])
            if augment:
                x = random_crop_flip(x)
            return (x.float() / 255 - mean) / std

        return transform
