"""The dataset loaders: Iris (the project's own loader) and CIFAR-10 from its binary files."""

from __future__ import annotations

import os
import re
import subprocess
import urllib.request
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import PROJECT_ROOT, history_epochs, read_history, read_json, run_script
from omegaconf import OmegaConf

from {{ cookiecutter.proj_name }}.configs import DataConfig, ExperimentConfig, check
from {{ cookiecutter.proj_name }}.datasets import DATASETS, build_dataset
from {{ cookiecutter.proj_name }}.datasets.cifar10 import Cifar10Loader, random_crop_flip
from {{ cookiecutter.proj_name }}.engine.cli import ConfigError

# isort: split
from {{ cookiecutter.proj_name }}.datasets.{{ cookiecutter.dataset }}_loading import IRIS_CSV

# The project's loader, looked up by its name as data.name: no import binds the class's name here, so no
# answer to the template's dataset_loading_class prompt can collide with a name this module uses.
LOADER = DATASETS["{{ cookiecutter.dataset_loading_class }}"]
CIFAR_FOLDER = "cifar-10-batches-bin"
TRAIN_FILES = [f"data_batch_{i}.bin" for i in range(1, 6)]
TEST_FILE = "test_batch.bin"
RECORDS_PER_FILE = 10


def data_config(**values):
    return OmegaConf.structured(DataConfig(**values))


def run_config(task: str = "classification", **values):
    """What ``build_dataset`` reads: the task and the data node."""
    return OmegaConf.create({"task": task, "data": data_config(**values)})


# -- Iris -------------------------------------------------------------------------------------


def iris_rows() -> list[list[str]]:
    lines = [line.split(",") for line in IRIS_CSV.read_text().splitlines() if line.strip()]
    return lines[1:]


def dense_ranks(features: torch.Tensor) -> list[tuple[int, ...]]:
    """Each row as the ranks of its values among the distinct values of their column.

    Standardising a column is an increasing affine map, so these ranks are the same
    before and after it: they identify a row of the CSV in the loader's output.
    """
    columns = [torch.unique(column, return_inverse=True)[1] for column in features.T]
    return [tuple(int(c[i]) for c in columns) for i in range(len(features))]


def test_iris_loader_is_registered():
    assert LOADER.__name__ == "{{ cookiecutter.dataset_loading_class }}"
    assert DATASETS["iris"] is LOADER
    assert isinstance(build_dataset(run_config()), LOADER)


def test_iris_sizes_features_and_classes():
    loader = LOADER(data_config())
    train, valid = loader.train_valid()
    test = loader.test()
    assert len(train.y) + len(valid.y) + len(test.y) == 150
    assert len(iris_rows()) == 150
    assert loader.input_shape == [4]
    assert loader.num_classes == 3
    for split in (train, valid, test):
        assert split.x.shape == (len(split.y), 4)
        assert split.x.dtype == torch.float32
        assert split.y.dtype == torch.int64
        assert set(split.y.tolist()) <= {0, 1, 2}
    assert set(train.y.tolist()) == {0, 1, 2}
    assert len(valid.y) == round((len(train.y) + len(valid.y)) * 0.2)
    assert loader.batch_transform(train=True) is None or callable(loader.batch_transform(train=True))


def test_iris_splits_partition_the_csv():
    loader = LOADER(data_config())
    train, valid = loader.train_valid()
    test = loader.test()
    x = torch.cat([train.x, valid.x, test.x])
    y = torch.cat([train.y, valid.y, test.y])
    names = sorted({row[-1] for row in iris_rows()})
    csv_x = torch.tensor([[float(v) for v in row[:-1]] for row in iris_rows()])
    csv_y = [names.index(row[-1]) for row in iris_rows()]
    served = Counter(zip(dense_ranks(x), y.tolist(), strict=True))
    expected = Counter(zip(dense_ranks(csv_x), csv_y, strict=True))
    assert served == expected, "every CSV row is served exactly once, in exactly one split"


def test_iris_splits_do_not_overlap_on_unique_data(tmp_path):
    """Same check on a CSV whose rows are all distinct (Iris has duplicate rows): column 0 is a row id."""
    path = tmp_path / "unique.csv"
    rows = [f"{i},{(i * 7) % 13},{i % 5}.5,{chr(97 + i % 3)}" for i in range(90)]
    path.write_text("id,f1,f2,kind\n" + "\n".join(rows) + "\n")
    loader = LOADER(data_config(root=str(path), validation_split=0.25, split_seed=3))
    train, valid = loader.train_valid()
    test = loader.test()
    ids = [{round(float(v), 4) for v in split.x[:, 0]} for split in (train, valid, test)]
    assert not ids[0] & ids[1] and not ids[0] & ids[2] and not ids[1] & ids[2]
    assert len(ids[0]) + len(ids[1]) + len(ids[2]) == 90
    assert loader.num_classes == 3 and loader.input_shape == [3]


@pytest.mark.parametrize(
    "changes", [{"split_seed": 7}, {"validation_split": 0.5}, {"split_seed": 1, "validation_split": 0.0}]
)
def test_iris_test_set_does_not_depend_on_the_split(changes):
    reference = LOADER(data_config()).test()
    other_loader = LOADER(data_config(**changes))
    other = other_loader.test()
    assert torch.equal(reference.x, other.x)
    assert torch.equal(reference.y, other.y)
    assert len(set(Counter(other.y.tolist()).values())) == 1, "a stratified test split (Iris has 50 of each)"


def test_iris_split_seed_changes_the_validation_set():
    train_a, valid_a = LOADER(data_config(split_seed=0)).train_valid()
    train_b, valid_b = LOADER(data_config(split_seed=1)).train_valid()
    assert len(valid_a.y) == len(valid_b.y)
    assert not torch.equal(valid_a.x, valid_b.x)
    again = LOADER(data_config(split_seed=0)).train_valid()
    assert torch.equal(again[0].x, train_a.x) and torch.equal(again[1].x, valid_a.x)


def test_iris_missing_csv_is_a_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.csv"):
        LOADER(data_config(root=str(tmp_path / "nothing.csv")))


def test_unknown_dataset_name():
    cfg = OmegaConf.structured(ExperimentConfig)
    cfg.data.name = "nope"
    with pytest.raises(ConfigError, match="nope"):
        check(cfg)


# -- CIFAR-10 files -------------------------------------------------------------------------------


def write_cifar(folder: Path, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Write tiny CIFAR-10 binary files; return each file's (labels, images [N, 3, 32, 32])."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for name in [*TRAIN_FILES, TEST_FILE]:
        labels = rng.integers(0, 10, RECORDS_PER_FILE, dtype=np.uint8)
        images = rng.integers(0, 256, (RECORDS_PER_FILE, 3, 32, 32), dtype=np.uint8)
        records = []
        for label, image in zip(labels, images, strict=True):
            red, green, blue = (image[c].reshape(-1) for c in range(3))  # each plane row-major
            records.append(np.concatenate([[label], red, green, blue]).astype(np.uint8))
        assert all(len(record) == 3073 for record in records)
        (folder / name).write_bytes(b"".join(record.tobytes() for record in records))
        written[name] = (labels.astype(np.int64), images)
    return written


@pytest.fixture
def cifar_root(tmp_path) -> tuple[Path, dict]:
    root = tmp_path / "cifar10"
    return root, write_cifar(root / CIFAR_FOLDER)


def cifar_loader(root: Path, **values):
    values = {"name": "cifar10", "root": str(root), "validation_split": 0.1, **values}
    return build_dataset(run_config(**values))


def image_keys(images) -> Counter:
    return Counter(np.asarray(image).tobytes() for image in images)


def test_cifar_test_file_round_trips_exactly(cifar_root):
    root, written = cifar_root
    loader = cifar_loader(root)
    assert isinstance(loader, Cifar10Loader)
    test = loader.test()
    labels, images = written[TEST_FILE]
    assert test.x.dtype == torch.uint8 and test.x.shape == (RECORDS_PER_FILE, 3, 32, 32)
    assert test.y.dtype == torch.int64
    assert test.y.tolist() == labels.tolist()
    assert np.array_equal(test.x.numpy(), images)
    raw = (root / CIFAR_FOLDER / TEST_FILE).read_bytes()
    first = raw[1:3073]  # the first record's pixels: 1024 red, 1024 green, 1024 blue, rows of 32
    assert test.x[0, 0, 0, 0] == first[0]
    assert test.x[0, 0, 0, 1] == first[1]
    assert test.x[0, 0, 1, 0] == first[32]
    assert test.x[0, 1, 0, 0] == first[1024]
    assert test.x[0, 2, 31, 31] == first[3071]
    assert loader.input_shape == [3, 32, 32] and loader.num_classes == 10


def test_cifar_validation_is_carved_from_the_training_files(cifar_root):
    root, written = cifar_root
    train, valid = cifar_loader(root).train_valid()
    n_train = RECORDS_PER_FILE * len(TRAIN_FILES)
    assert len(train.y) + len(valid.y) == n_train
    assert len(valid.y) == round(n_train * 0.1)
    training_images = np.concatenate([written[name][1] for name in TRAIN_FILES])
    training_labels = np.concatenate([written[name][0] for name in TRAIN_FILES])
    assert image_keys(torch.cat([train.x, valid.x]).numpy()) == image_keys(training_images)
    assert not set(image_keys(valid.x.numpy())) & set(image_keys(train.x.numpy()))
    assert not set(image_keys(written[TEST_FILE][1])) & set(image_keys(torch.cat([train.x, valid.x]).numpy()))
    # labels stay with their images
    label_of = {image.tobytes(): int(label) for image, label in zip(training_images, training_labels, strict=True)}
    for x, y in zip(torch.cat([train.x, valid.x]).numpy(), torch.cat([train.y, valid.y]).tolist(), strict=True):
        assert label_of[x.tobytes()] == y


def test_cifar_files_directly_under_root(tmp_path):
    written = write_cifar(tmp_path / "flat")
    test = cifar_loader(tmp_path / "flat").test()
    assert test.y.tolist() == written[TEST_FILE][0].tolist()


def test_cifar_truncated_file_is_a_clear_value_error(cifar_root):
    root, _ = cifar_root
    path = root / CIFAR_FOLDER / "data_batch_3.bin"
    path.write_bytes(path.read_bytes()[:-100])
    loader = cifar_loader(root)
    with pytest.raises(ValueError, match=r"data_batch_3\.bin.*record"):
        loader.train_valid()


def test_cifar_bad_label_is_a_value_error(cifar_root):
    root, _ = cifar_root
    path = root / CIFAR_FOLDER / TEST_FILE
    data = bytearray(path.read_bytes())
    data[3073] = 10  # the second record's label
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="label"):
        cifar_loader(root).test()


@pytest.fixture
def no_network(monkeypatch):
    """Send every download to a closed local port: fails at once, never reaches the internet."""
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(urllib.request, "_opener", None)  # rebuilt from the variables above


def test_cifar_missing_files_and_no_network_is_a_file_not_found_error(tmp_path, no_network):
    root = tmp_path / "nothing_here"
    with pytest.raises(FileNotFoundError) as info:
        cifar_loader(root)
    message = str(info.value)
    assert str(root) in message
    assert CIFAR_FOLDER in message
    assert "\n" not in message
    assert list(tmp_path.iterdir()) == [], "a failed download leaves no folder (not even a misspelt data.root)"


def test_training_without_cifar_is_one_line_and_writes_nothing(tmp_path):
    """No data and no network: exit 2 with the reason; no results directory, no data.root, no word of a checkpoint."""
    env = {**os.environ, "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"}
    env = {key: value for key, value in env.items() if key.lower() != "no_proxy"}
    root, results = tmp_path / "dta" / "cifar10", tmp_path / "runs" / "x"  # a misspelt data.root
    result = run_script("bin/train.py", "cifar10", results, f"--data.root={root}", check=False, env=env)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: CIFAR-10 not found under"), result.stderr
    assert "checkpoint" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_cifar_incomplete_folder_is_not_used(tmp_path, no_network):
    root = tmp_path / "cifar10"
    write_cifar(root / CIFAR_FOLDER)
    (root / CIFAR_FOLDER / "data_batch_5.bin").unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(root))):
        cifar_loader(root)


# -- augmentation ------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_random_crop_flip_keeps_shape_and_dtype(dtype):
    torch.manual_seed(0)
    x = (torch.rand(16, 3, 32, 32) * 255).to(dtype)
    out = random_crop_flip(x)
    assert out.shape == x.shape
    assert out.dtype == x.dtype


def test_random_crop_flip_without_padding_is_the_image_or_its_mirror():
    torch.manual_seed(0)
    x = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    out = random_crop_flip(x, pad=0)
    same = [torch.equal(o, i) for o, i in zip(out, x, strict=True)]
    mirrored = [torch.equal(o, i.flip(-1)) for o, i in zip(out, x, strict=True)]
    assert all(s or m for s, m in zip(same, mirrored, strict=True))
    assert any(same) and any(mirrored), "64 images: both cases happen"


def test_random_crop_flip_pads_with_zeros_and_shifts():
    torch.manual_seed(0)
    x = torch.full((64, 1, 8, 8), 7, dtype=torch.uint8)
    out = random_crop_flip(x, pad=2)
    assert set(out.unique().tolist()) <= {0, 7}
    assert (out == 0).any(), "some crops are shifted into the padding"
    assert (out == 7).sum(dim=(1, 2, 3)).min() >= 6 * 6, "a crop of at most 2 pixels each way keeps the centre"


def test_cifar_batch_transform_normalises_to_float(cifar_root):
    root, _ = cifar_root
    loader = cifar_loader(root, augment=True)
    x = loader.test().x
    for train in (True, False):
        out = loader.batch_transform(train=train)(x)
        assert out.shape == x.shape and out.dtype == torch.float32
    plain = loader.batch_transform(train=False)
    assert torch.equal(plain(x), plain(x)), "no randomness outside training"


# -- end to end -------------------------------------------------------------------------------------


def train_and_evaluate_cifar10(folder: Path) -> tuple[Path, Path, subprocess.CompletedProcess]:
    root, results = folder / "cifar10", folder / "results"
    write_cifar(root / CIFAR_FOLDER)
    args = (f"--data.root={root}", "--num_epochs=1", "--batch_size=8", "--model.n_filters=4")
    run_script("bin/train.py", "cifar10", results, *args)
    return root, results, run_script("bin/evaluate.py", results)


def test_train_and_evaluate_cifar10_on_tiny_files(tmp_path):
    root, results, evaluated = train_and_evaluate_cifar10(tmp_path)
    assert read_json(results / "meta.json")["status"] == "finished"
    config = read_json(results / "config.json")
    assert config["model"] == {**config["model"], "name": "cnn", "n_filters": 4}
    assert config["data"]["root"] == str(root)
    assert (results / "model.pt").is_file()
    assert "test_acc" in evaluated.stdout
    metrics = read_json(results / "test_metrics.json")
    assert 0 <= metrics["test_acc"] <= 1
    assert metrics["test_acc"] * RECORDS_PER_FILE == pytest.approx(round(metrics["test_acc"] * RECORDS_PER_FILE))


@pytest.mark.parametrize(
    "results, overrides",
    [
        ("test_run", ["--model.n_filters=10"]),
        ("test_run_lenet", ["--model=lenet"]),
        ("test_run_lrsch", ["--lr_schedule=[[3, 0.1],[100, 0.01]]"]),
    ],
)
def test_seed_000_commands_run_as_written(tmp_path, results, overrides):
    """``python bin/train.py cifar10 test_run --model.n_filters=10`` and friends, data under data.root."""
    write_cifar(tmp_path / "data" / "cifar10" / CIFAR_FOLDER)  # the cifar10 config's data.root, relative
    env = {key: value for key, value in os.environ.items() if key != "DATA_ROOT"}  # as on a machine without env.sh
    run_script(PROJECT_ROOT / "bin" / "train.py", "cifar10", results, *overrides, cwd=tmp_path, env=env)
    config = read_json(tmp_path / results / "config.json")
    assert history_epochs(tmp_path / results) == list(range(1, config["num_epochs"] + 1))
    if results == "test_run":
        assert config["model"]["name"] == "cnn" and config["model"]["n_filters"] == 10
    if results == "test_run_lenet":
        assert config["model"]["name"] == "lenet"
    if results == "test_run_lrsch":
        lrs = [float(row["lr"]) for row in read_history(tmp_path / results)]
        assert lrs[:2] == [config["optimizer"]["lr"]] * 2 and set(lrs[2:]) == {0.1}
