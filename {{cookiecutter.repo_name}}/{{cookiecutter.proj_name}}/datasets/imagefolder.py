"""Images in one folder per class, read lazily from their files (for data that does not fit in memory).

Expected layout under ``data.root`` (the same as torchvision's ``ImageFolder``)::

    data.root/<class>/<image>          training pool: validation is carved from it
    data.root/test/<class>/<image>     optional test set, with the same class folders

Classes are the sorted names of the folders under ``data.root`` (``test`` and
hidden folders excepted); images may also sit in subfolders of a class folder.
Accepted files: .png .jpg .jpeg .bmp .gif .webp, in any letter case.  Without
a ``test`` folder, a fixed 20 % of each class is held out as the test set.

Only the file paths are kept in memory.  Each image is opened when a sample is
asked for, converted to RGB and resized to ``data.image_size`` pixels square,
so the training device sees uint8 batches of one shape; ``batch_transform``
then normalises (and, when training with ``data.augment``, flips) them there.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset

from ..engine.cli import ConfigError, first_line
from .common import Split, carve_validation

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
TEST_FOLDER = "test"
TEST_FRACTION = 0.2  # fixed, so the test set never depends on a config
TEST_SEED = 0
TASKS = ("classification", "binary")
LAYOUT = "data.root/<class>/<image>"

if TYPE_CHECKING:
    from ..configs import DataConfig


def read_image(path: Path, size: int) -> torch.Tensor:
    """The image at ``path`` as uint8 ``[3, size, size]``: RGB, resized with antialiasing (aspect ratio not kept).

    PIL decodes, not ``torchvision.io``: the latter is deprecated (a warning per image) and reads no BMP.
    """
    from torchvision.transforms.v2 import functional as TF  # imported here: a second of every start-up otherwise

    try:
        with Image.open(path) as image:
            # Phone photos are stored sideways with an EXIF note saying how to turn them: apply it.
            rgb = ImageOps.exif_transpose(image).convert("RGB")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: image file missing (it was there when data.root was listed)") from None
    except Exception as err:  # a damaged file makes PIL raise many types (OSError, ValueError, SyntaxError...)
        raise OSError(f"{path}: cannot read the image ({first_line(err)})") from None
    return TF.resize(TF.pil_to_tensor(rgb), [size, size], antialias=True)


def list_images(folder: Path) -> list[Path]:
    """The image files under ``folder`` (subfolders included), sorted, hidden files and folders skipped."""
    # Sorted, because the order of a directory listing depends on the file system and the seeded splits
    # must pick the same files everywhere.  Hidden names are skipped: macOS leaves "._photo.jpg" files
    # (metadata, not images) beside every copied image.
    return sorted(
        path
        for path in folder.rglob("*")
        if path.suffix.lower() in EXTENSIONS
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
        and path.is_file()
    )


def class_folders(folder: Path, exclude: tuple[str, ...] = ()) -> list[str]:
    """The sorted names of the class folders in ``folder``: not hidden and not in ``exclude``."""
    return sorted(
        entry.name
        for entry in folder.iterdir()
        if entry.is_dir() and not entry.name.startswith(".") and entry.name not in exclude
    )


def scan(folder: Path, classes: list[str]) -> tuple[list[Path], torch.Tensor]:
    """The images of ``folder/<class>/`` for each class and their class indices; every class must have one."""
    paths, labels = [], []
    for label, name in enumerate(classes):
        found = list_images(folder / name)
        if not found:
            raise FileNotFoundError(
                f"{folder / name}: no image in this class folder; expected {LAYOUT} with extensions "
                f"{' '.join(EXTENSIONS)}"
            )
        paths += found
        labels += [label] * len(found)
    return paths, torch.tensor(labels, dtype=torch.int64)


def held_out(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """A mask of ``TEST_FRACTION`` of each class, chosen with ``TEST_SEED``: the same files whatever the config."""
    generator = torch.Generator().manual_seed(TEST_SEED)
    is_test = torch.zeros(len(labels), dtype=torch.bool)
    for label in range(num_classes):
        members = (labels == label).nonzero().flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        is_test[members[: round(len(members) * TEST_FRACTION)]] = True
    return is_test


class ImageFiles(Dataset):
    """Image files read one at a time: item ``i`` is ``(uint8 [3, size, size], int64 class index)``.

    Deterministic (no augmentation here), so any sampler or worker count gives the same samples.
    """

    def __init__(self, paths: list[Path], labels: torch.Tensor, image_size: int):
        # One numpy buffer rather than a list of Python strings: DataLoader workers are forked, and reading a
        # Python object writes its reference count, which would copy the whole list into every worker.
        self._paths = np.array([os.fsencode(path) for path in paths], dtype=np.bytes_)
        self.labels = labels
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return read_image(self.path(i), self.image_size), self.labels[i]

    def path(self, i: int) -> Path:
        """The file of item ``i``."""
        return Path(os.fsdecode(self._paths[i]))

    @property
    def paths(self) -> list[Path]:
        """The files of all items, in order."""
        return [self.path(i) for i in range(len(self))]


class ImageFolderLoader:
    """Image classification data from ``data.root/<class>/<image>`` files, read lazily.

    Args:
        cfg: the ``data`` config node (``root``, ``validation_split``, ``split_seed``, ``augment``,
            ``image_size``).
        task: ``classification`` or ``binary``; the labels are class indices, so ``regression`` is refused.
    """

    def __init__(self, cfg: DataConfig, task: str):
        if task not in TASKS:
            raise ConfigError(f"data.name=imagefolder has class labels: use task=classification or binary, not {task}")
        if not cfg.root:
            raise ConfigError(f"data.name=imagefolder needs data.root: a folder laid out as {LAYOUT}")
        if not (isinstance(cfg.image_size, int) and cfg.image_size > 0):
            raise ConfigError(f"data.image_size={cfg.image_size}: expected a positive number of pixels")
        self.root = Path(cfg.root)
        self.validation_split, self.split_seed, self.augment = cfg.validation_split, cfg.split_seed, cfg.augment
        self.image_size = cfg.image_size
        self.input_shape = [3, self.image_size, self.image_size]
        if not self.root.is_dir():
            raise FileNotFoundError(f"data.root={str(self.root)!r} is not a folder; expected {LAYOUT}")
        self.class_names = class_folders(self.root, exclude=(TEST_FOLDER,))
        if not self.class_names:
            raise FileNotFoundError(f"{self.root}: no class folder in data.root; expected {LAYOUT}")
        paths, labels = scan(self.root, self.class_names)
        test_root = self.root / TEST_FOLDER
        if test_root.is_dir():
            # Checked now rather than in test(): a wrong test folder should stop a run before it trains.
            test_classes = class_folders(test_root)
            if test_classes != self.class_names:
                raise ConfigError(
                    f"{test_root}: class folders {test_classes} differ from the training classes {self.class_names}; "
                    f"expected data.root/test/<class>/<image> with the same classes"
                )
            self._test = ImageFiles(*scan(test_root, self.class_names), self.image_size)
            self._pool_paths, self._pool_labels = paths, labels
        else:
            is_test = held_out(labels, len(self.class_names))
            chosen = is_test.tolist()
            test_paths = [p for p, t in zip(paths, chosen, strict=True) if t]
            self._test = ImageFiles(test_paths, labels[is_test], self.image_size)
            self._pool_paths = [p for p, t in zip(paths, chosen, strict=True) if not t]
            self._pool_labels = labels[~is_test]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def train_valid(self) -> tuple[ImageFiles, ImageFiles]:
        """Training and validation data (the validation part is carved from the training pool)."""
        # carve_validation shuffles the sample indices, so every loader splits with the same seeded permutation.
        indices = Split(torch.arange(len(self._pool_labels)), self._pool_labels)
        train, valid = carve_validation(indices, self.validation_split, self.split_seed)
        return self._subset(train), self._subset(valid)

    def test(self) -> ImageFiles:
        """The held-out test set: for ``bin/evaluate.py`` only, never for training."""
        return self._test

    def batch_transform(self, train: bool) -> Callable[[torch.Tensor], torch.Tensor]:
        """uint8 ``[N, 3, H, W]`` to floats in [-1, 1] on the batch's device; a random flip when training with augment.

        Only a flip: a crop after zero padding (as for CIFAR-10) would add black borders foreign to most photos.
        """
        augment = train and self.augment

        def transform(x: torch.Tensor) -> torch.Tensor:
            if augment:
                # Drawn from the global generator of x's device, which checkpoints save: a resumed run
                # flips the same samples.
                flip = torch.rand(len(x), 1, 1, 1, device=x.device) < 0.5
                x = torch.where(flip, x.flip(-1), x)
            return (x.float() / 255 - 0.5) / 0.5

        return transform

    def _subset(self, part: Split) -> ImageFiles:
        return ImageFiles([self._pool_paths[i] for i in part.x.tolist()], part.y, self.image_size)
