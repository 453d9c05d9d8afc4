"""The image-folder loader, on small real PNG files written in a temporary folder (no training)."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from {{ cookiecutter.proj_name }}.datasets.imagefolder import ImageFolderLoader
from {{ cookiecutter.proj_name }}.engine.cli import ConfigError

COLORS = {"cat": (255, 0, 0), "dog": (0, 255, 0), "eel": (0, 0, 255)}  # one solid color per class
PER_CLASS = 8


def write_image(path: Path, color: tuple[int, int, int], size: tuple[int, int] = (24, 20)) -> Path:
    """A solid ``color`` image of ``size`` (width, height), in the format its extension names."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def write_classes(folder: Path, per_class: int = PER_CLASS) -> list[Path]:
    """``folder/<class>/NN.png`` for every class of COLORS; the files written."""
    return [
        write_image(folder / name / f"{i:02d}.png", color, size=(24, 20) if i % 2 else (17, 31))
        for name, color in COLORS.items()
        for i in range(per_class)
    ]


def data_cfg(root: Path | str, **values) -> SimpleNamespace:
    """A ``data`` config node; ``values`` override the defaults."""
    defaults = dict(root=str(root), validation_split=0.25, split_seed=0, augment=False, image_size=32)
    return SimpleNamespace(**(defaults | values))


def splits(loader: ImageFolderLoader) -> dict[str, list[Path]]:
    train, valid = loader.train_valid()
    return {"train": train.paths, "valid": valid.paths, "test": loader.test().paths}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    write_classes(tmp_path / "data")
    return tmp_path / "data"


def test_classes_from_the_folder_names(root):
    (root / ".thumbnails").mkdir()  # hidden folders are no class
    (root / "readme.txt").write_text("not a class either")
    loader = ImageFolderLoader(data_cfg(root), "classification")
    assert loader.class_names == ["cat", "dog", "eel"]
    assert loader.num_classes == 3
    assert loader.input_shape == [3, 32, 32]


@pytest.mark.parametrize("image_size", [8, 32])
def test_items_are_uint8_images_of_image_size_and_class_indices(root, image_size):
    loader = ImageFolderLoader(data_cfg(root, image_size=image_size), "binary")
    assert loader.input_shape == [3, image_size, image_size]
    train, valid = loader.train_valid()
    for part in (train, valid, loader.test()):
        for i in range(len(part)):
            x, y = part[i]
            assert x.shape == (3, image_size, image_size) and x.dtype == torch.uint8
            assert y.shape == () and y.dtype == torch.int64
            name = part.path(i).parent.name
            assert int(y) == loader.class_names.index(name)
            color = torch.tensor(COLORS[name], dtype=torch.int16).view(3, 1, 1)
            assert (x.to(torch.int16) - color).abs().max() <= 1  # a solid color stays solid through the resize


def test_items_are_deterministic_and_batch_with_a_dataloader(root):
    train, _ = ImageFolderLoader(data_cfg(root), "classification").train_valid()
    assert all(torch.equal(train[i][0], train[i][0]) for i in range(len(train)))
    x, y = next(iter(DataLoader(train, batch_size=5, num_workers=2)))
    assert x.shape == (5, 3, 32, 32) and x.dtype == torch.uint8
    assert y.shape == (5,) and y.dtype == torch.int64


def test_train_valid_test_share_no_file_and_cover_them_all(root):
    written = set(root.rglob("*.png"))
    parts = splits(ImageFolderLoader(data_cfg(root), "classification"))
    assert sum(len(paths) for paths in parts.values()) == len(written) == 3 * PER_CLASS
    assert set().union(*parts.values()) == written
    for a, b in [("train", "valid"), ("train", "test"), ("valid", "test")]:
        assert not set(parts[a]) & set(parts[b]), f"{a} and {b} share files"
    # 20 % of each class held out for test, then 25 % of the rest for validation.
    assert sorted(path.parent.name for path in parts["test"]) == ["cat", "cat", "dog", "dog", "eel", "eel"]
    assert len(parts["valid"]) == round(18 * 0.25)


def test_split_seed_moves_only_the_validation_part(root):
    first = splits(ImageFolderLoader(data_cfg(root, split_seed=0), "classification"))
    again = splits(ImageFolderLoader(data_cfg(root, split_seed=0), "classification"))
    other = splits(ImageFolderLoader(data_cfg(root, split_seed=1, validation_split=0.5), "classification"))
    assert first == again
    assert set(first["valid"]) != set(other["valid"])
    assert first["test"] == other["test"]  # the held-out test part never depends on the config


def test_a_test_folder_is_the_test_set(root):
    test_files = write_classes(root / "test", per_class=3)
    loader = ImageFolderLoader(data_cfg(root), "classification")
    assert loader.class_names == ["cat", "dog", "eel"]  # "test" is no class
    parts = splits(loader)
    assert sorted(parts["test"]) == sorted(test_files)
    assert len(parts["train"]) + len(parts["valid"]) == 3 * PER_CLASS  # the whole pool trains
    test = loader.test()
    assert [int(test[i][1]) for i in range(len(test))] == [0] * 3 + [1] * 3 + [2] * 3


def test_a_test_folder_with_other_classes_is_refused(root):
    write_classes(root / "test", per_class=1)
    write_image(root / "test" / "fox" / "0.png", (9, 9, 9))
    with pytest.raises(ConfigError, match="differ from the training classes") as err:
        ImageFolderLoader(data_cfg(root), "classification")
    assert "fox" in str(err.value) and "\n" not in str(err.value)


def test_every_accepted_extension_and_nothing_else(tmp_path):
    names = ["a.png", "b.PNG", "c.jpg", "d.JPEG", "e.bmp", "f.gif", "g.webp"]
    for name in names:
        write_image(tmp_path / "only" / "sub" / name, (10, 200, 30))
    write_image(tmp_path / "only" / "._a.png", (0, 0, 0))  # macOS metadata beside a copied file
    write_image(tmp_path / "only" / ".cache" / "h.png", (0, 0, 0))
    (tmp_path / "only" / "notes.txt").write_text("not an image")
    loader = ImageFolderLoader(data_cfg(tmp_path, validation_split=0.0), "classification")
    train, valid = loader.train_valid()
    found = train.paths + valid.paths + loader.test().paths
    assert sorted(path.name for path in found) == names
    for part in (train, loader.test()):
        for i in range(len(part)):
            assert part[i][0].shape == (3, 32, 32)


def test_images_are_read_when_asked_for(root):
    train, _ = ImageFolderLoader(data_cfg(root), "classification").train_valid()
    changed, gone = train.path(0), train.path(1)
    write_image(changed, (7, 7, 7))
    assert train[0][0].unique().tolist() == [7]  # the file as it is now, not as it was when listed
    gone.unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(gone))):
        train[1]
    assert train[2][0].shape == (3, 32, 32)  # only that item fails
    train.path(2).write_bytes(b"not a png")
    with pytest.raises(OSError, match=re.escape(f"{train.path(2)}: cannot read the image")):
        train[2]


def test_batch_transform_normalises_to_minus_one_one(root):
    loader = ImageFolderLoader(data_cfg(root, augment=True), "classification")
    x = torch.randint(0, 256, (16, 3, 5, 7), dtype=torch.uint8)
    x[0, 0, 0, 0], x[0, 0, 0, 1] = 0, 255
    out = loader.batch_transform(train=False)(x)
    assert out.dtype == torch.float32 and out.shape == x.shape
    assert out.min() == -1 and out.max() == 1
    torch.testing.assert_close(out, x.float() / 127.5 - 1)


@pytest.mark.parametrize("augment", [False, True])
def test_flips_only_when_training_with_augment(root, augment):
    loader = ImageFolderLoader(data_cfg(root, augment=augment), "classification")
    x = torch.randint(0, 256, (64, 3, 4, 6), dtype=torch.uint8)
    plain = loader.batch_transform(train=False)(x)
    torch.testing.assert_close(plain, x.float() / 127.5 - 1)  # no flip when evaluating
    torch.manual_seed(0)
    out = loader.batch_transform(train=True)(x)
    flipped = [torch.equal(o, p.flip(-1)) for o, p in zip(out, plain, strict=True)]
    kept = [torch.equal(o, p) for o, p in zip(out, plain, strict=True)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True))  # each sample whole, flipped or not
    if augment:
        assert 10 < sum(flipped) < 54  # per sample, about half
        torch.manual_seed(0)
        assert torch.equal(loader.batch_transform(train=True)(x), out)  # the global generator decides
    else:
        assert not any(flipped)


def test_regression_is_refused(root):
    with pytest.raises(ConfigError, match="task=classification or binary"):
        ImageFolderLoader(data_cfg(root), "regression")


@pytest.mark.parametrize(
    ("layout", "error", "message"),
    [
        ("missing", FileNotFoundError, "is not a folder"),
        ("empty", FileNotFoundError, "no class folder"),
        ("only_test", FileNotFoundError, "no class folder"),
        ("class_without_images", FileNotFoundError, "no image in this class folder"),
    ],
)
def test_a_root_without_images_is_refused_in_one_line(tmp_path, layout, error, message):
    root = tmp_path / "data"
    if layout != "missing":
        root.mkdir()
    if layout == "only_test":
        write_classes(root / "test", per_class=1)
    if layout == "class_without_images":
        write_classes(root, per_class=1)
        (root / "dog" / "00.png").unlink()
        (root / "dog" / "notes.txt").write_text("no image here")
    with pytest.raises(error, match=message) as err:
        ImageFolderLoader(data_cfg(root), "classification")
    text = str(err.value)
    assert "data.root/<class>/<image>" in text and "\n" not in text
    assert str(root / "dog" if layout == "class_without_images" else root) in text


@pytest.mark.parametrize(("values", "message"), [({"root": ""}, "needs data.root"), ({"image_size": 0}, "image_size")])
def test_bad_config_values_are_refused(root, values, message):
    with pytest.raises(ConfigError, match=message):
        ImageFolderLoader(data_cfg(**({"root": root} | values)), "classification")
