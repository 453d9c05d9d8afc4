"""Tasks, metrics and lazily read data, as a user runs them: train, SIGKILL, resume exactly, evaluate.

* a regression table (``--task=regression --data.root=table.csv``),
* a classification monitored by macro-F1 (``--metrics=[acc,f1_macro] --monitor=valid_f1_macro``),
* an image folder read lazily through DataLoader workers (the ``images`` config),

and the one-line refusals of what does not fit: a loss for another task, a class column of numbers, an
output shape or a metric the data cannot take.  Kills happen at a seeded step, paused there by
``tests/faulty_train.py``; the resumed run must end with the weights and history of an uninterrupted one.
"""

from __future__ import annotations

import csv
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import PROJECT_ROOT, TIMEOUT_S, kill_process, read_history, read_json, run_script, start_script
from PIL import Image

TIMES = ("epoch_time_s", "time")
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}


def write_table(path: Path, rows: int = 300, targets: int = 1) -> Path:
    """A CSV of 3 features and ``targets`` continuous target columns (a noisy linear function)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, 3))
    y = x @ rng.normal(size=(3, targets)) + 0.1 * rng.normal(size=(rows, targets))
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["a", "b", "c", *[f"y{i}" for i in range(targets)]])
        writer.writerows([[*map(float, features), *map(float, values)] for features, values in zip(x, y, strict=True)])
    return path


def write_images(root: Path, classes: int = 3, per_class: int = 12, size: int = 10) -> Path:
    """Small PNG files in ``root/<class>/``: each class a colour, with noise."""
    rng = np.random.default_rng(0)
    for label in range(classes):
        folder = root / f"class_{label}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            colour = np.array([60 * label, 255 - 60 * label, 120])
            pixels = np.clip(colour + rng.normal(0, 30, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def untimed(results: Path) -> list[dict[str, str]]:
    return [{k: v for k, v in row.items() if k not in TIMES} for row in read_history(results)]


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)


def assert_same_run(mine: Path, reference: Path) -> None:
    """The same history (but times) and bitwise the same model.pt and best_model.pt."""
    assert untimed(mine) == untimed(reference)
    for name in ("model.pt", "best_model.pt"):
        a, b = weights(mine / name), weights(reference / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


def killed_and_resumed(tmp_path: Path, command: tuple, step: int) -> Path:
    """Run ``command`` until it pauses before ``step`` (after its first checkpoint), SIGKILL it there, then run it
    to its end again."""
    results = Path(command[1])
    faults = {**ONE_THREAD, "TRAINER_FAULTS": f"record_samples=1,pause_at_step={step}"}
    with open(tmp_path / "killed.txt", "w") as out:
        process = start_script("tests/faulty_train.py", *command, stdout=out, stderr=subprocess.STDOUT, env=faults)
        try:
            deadline = time.monotonic() + TIMEOUT_S
            while not (
                any(
                    line.split()[1] == str(step)
                    for f in results.glob("samples_*.txt")
                    for line in f.read_text().split("\n")
                    if line
                )
                and list(results.glob("checkpoints/step_*"))  # the step's checkpoint is written
            ):
                assert process.poll() is None, (tmp_path / "killed.txt").read_text()
                assert time.monotonic() < deadline, f"step {step} never came"
                time.sleep(0.05)
        finally:
            kill_process(process)
    assert process.returncode == -signal.SIGKILL
    resumed = run_script("bin/train.py", *command, env=ONE_THREAD)
    assert "Resuming" in resumed.stdout
    return results


# -- regression ------------------------------------------------------------------------------------


def test_regression_table_trains_resumes_exactly_after_sigkill_and_evaluates(tmp_path):
    table = write_table(tmp_path / "table.csv", targets=2)
    args = ("--task=regression", f"--data.root={table}", "--data.targets=[y0,y1]", "--num_epochs=4",
            "--optimizer.lr=0.01", "--checkpoint.every_steps=5", "--device=cpu")  # fmt: skip
    reference = tmp_path / "reference"
    run_script("bin/train.py", "iris", reference, *args, env=ONE_THREAD)
    history = read_history(reference)
    for column in ("train_mae", "train_rmse", "train_r2", "valid_mae", "valid_rmse", "valid_r2"):
        assert column in history[0], column
    assert "train_acc" not in history[0] and "valid_acc" not in history[0]
    assert float(history[-1]["valid_r2"]) > float(history[0]["valid_r2"]), "it learns"
    assert read_json(reference / "config.json")["loss"] == "auto"  # MSELoss, the task's default

    step = random.Random(14).randrange(6, 4 * 12)  # after the first checkpoint; 12 steps per epoch (192 rows)
    assert_same_run(killed_and_resumed(tmp_path, ("iris", tmp_path / "killed", *args), step), reference)

    evaluated = run_script("bin/evaluate.py", reference)
    metrics = read_json(reference / "test_metrics.json")
    assert {"test_loss", "test_mae", "test_rmse", "test_r2"} <= metrics.keys()
    assert metrics["weights"] == "best_model.pt" and "test_r2" in evaluated.stdout


def test_classification_refuses_a_continuous_target_and_writes_nothing(tmp_path):
    table = write_table(tmp_path / "table.csv")
    results = tmp_path / "run"
    result = run_script("bin/train.py", "iris", results, f"--data.root={table}", check=False)
    assert result.returncode == 2
    assert "--task=regression" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not results.exists()


@pytest.mark.parametrize(
    "args, words",
    [
        (("--loss=MSELoss",), ("loss=MSELoss", "task=classification", "task=regression")),
        (("--task=regression", "--loss=CrossEntropyLoss"), ("loss=CrossEntropyLoss", "task=regression")),
        (("--loss=BCEWithLogitsLoss", "--model.output_shape=1"), ("BCEWithLogitsLoss", "task=binary")),
        (("--model.output_shape=2",), ("model.output_shape=2", "task=classification", "3 output")),
        (("--task=binary", "--model.output_shape=3"), ("model.output_shape=3", "task=binary", "1 output")),
        (("--metrics=[top5]",), ("top5", "3 outputs")),
        (("--metrics=[mae]",), ("mae", "task=classification")),
        (("--metrics=[f1]",), ("f1_macro",)),
        (("--monitor=valid_f1_macro",), ("monitor", "valid_acc")),
    ],
)
def test_what_does_not_fit_the_task_is_one_line_and_nothing_is_written(tmp_path, args, words):
    results = tmp_path / "run"
    result = run_script("bin/train.py", "iris", results, *args, check=False)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert not results.exists()


# -- metrics and monitor ----------------------------------------------------------------------------


def test_macro_f1_monitor_picks_best_model_and_survives_a_kill(tmp_path):
    args = ("--metrics=[acc,f1_macro,auroc]", "--monitor=valid_f1_macro", "--num_epochs=8", "--optimizer.lr=0.5",
            "--checkpoint.every_steps=4", "--device=cpu")  # fmt: skip
    reference = tmp_path / "reference"
    run_script("bin/train.py", "iris", reference, *args, env=ONE_THREAD)
    history = read_history(reference)
    scores = [float(row["valid_f1_macro"]) for row in history]
    best_epoch = scores.index(max(scores)) + 1  # larger is better: the first epoch reaching the maximum
    loop = read_json(reference / "loop_state.json")
    assert (loop["monitor"], loop["best_epoch"]) == ("valid_f1_macro", best_epoch)
    assert {"train_f1_macro", "train_auroc", "valid_auroc"} <= history[0].keys()
    # best_model.pt holds the weights of that epoch: those a run stopped there ends with
    shorter = tmp_path / "shorter"
    run_script("bin/train.py", "iris", shorter, *args, f"--num_epochs={best_epoch}", env=ONE_THREAD)  # the last wins
    a, b = weights(reference / "best_model.pt"), weights(shorter / "model.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)

    step = random.Random(8).randrange(5, 8 * 6)  # after the first checkpoint
    assert_same_run(killed_and_resumed(tmp_path, ("iris", tmp_path / "killed", *args), step), reference)
    run_script("bin/evaluate.py", reference, "--weights=last")
    metrics = read_json(reference / "test_metrics.json")
    assert {"test_acc", "test_f1_macro", "test_auroc"} <= metrics.keys()
    assert (metrics["weights"], metrics["epoch"]) == ("model.pt", 8)


def test_monitor_mode_min_on_a_larger_is_better_metric_is_obeyed(tmp_path):
    results = tmp_path / "run"
    run_script("bin/train.py", "iris", results, "--monitor=valid_acc", "--monitor_mode=min", "--num_epochs=5")
    accs = [float(row["valid_acc"]) for row in read_history(results)]
    assert read_json(results / "loop_state.json")["best_epoch"] == accs.index(min(accs)) + 1


def test_binary_task_trains_one_logit_on_positive_class_against_the_rest(tmp_path):
    results = tmp_path / "run"
    run_script("bin/train.py", "iris", results, "--task=binary", "--data.positive_class=2", "--num_epochs=3")
    assert read_json(results / "config.json")["task"] == "binary"
    assert weights(results / "model.pt")["output.weight"].shape[0] == 1
    assert float(read_history(results)[-1]["valid_acc"]) > 0.5


# -- data read lazily --------------------------------------------------------------------------------


def test_image_folder_trains_with_workers_resumes_exactly_after_sigkill_and_evaluates(tmp_path):
    root = write_images(tmp_path / "images")
    args = (f"--data.root={root}", "--data.image_size=8", "--model.n_filters=4", "--batch_size=8",
            "--num_epochs=3", "--data.num_workers=2", "--checkpoint.every_steps=2", "--device=cpu")  # fmt: skip
    reference = tmp_path / "reference"
    run_script("bin/train.py", "images", reference, *args, env=ONE_THREAD)
    assert len(read_history(reference)) == 3
    # 36 images: 6 held out for testing (20% of each class), 6 of the rest for validation: 24 -> 3 steps per epoch
    step = random.Random(3).randrange(3, 3 * 3)  # after the first checkpoint
    assert_same_run(killed_and_resumed(tmp_path, ("images", tmp_path / "killed", *args), step), reference)
    run_script("bin/evaluate.py", reference)
    assert "test_acc" in read_json(reference / "test_metrics.json")


def test_image_folder_with_memory_loader_is_refused(tmp_path):
    root = write_images(tmp_path / "images", per_class=3)
    result = run_script("bin/train.py", "images", tmp_path / "run", f"--data.root={root}", "--data.loader=memory",
                        check=False)  # fmt: skip
    assert result.returncode == 2 and "data.loader=memory" in result.stderr
    assert not (tmp_path / "run").exists()


def test_the_metric_entries_the_readme_shows_measure_what_they_say(monkeypatch):
    """The readme's example entries, added to METRICS as it says, give the metric a user expects."""
    from {{ cookiecutter.proj_name }} import metrics

    lines = (PROJECT_ROOT / "readme.md").read_text().splitlines()
    entries = [line for line in lines if line.startswith(('"f1_weighted":', '"max_abs_error":'))]
    assert len(entries) == 2
    added = eval("{" + "".join(entries) + "}", vars(metrics))  # noqa: S307 (the project's own readme)
    monkeypatch.setattr(metrics, "METRICS", {**metrics.METRICS, **added})

    scores = torch.tensor([[2.0, 0.0], [0.0, 2.0], [0.0, 2.0], [2.0, 0.0]])  # predicts 0, 1, 1, 0
    classified = metrics.TaskMetrics(["f1_weighted", "acc"], "classification", 2, torch.device("cpu"))
    classified.update(scores, torch.tensor([0, 1, 1, 1]))
    values = classified.compute()
    assert values["acc"] == pytest.approx(0.75)
    assert values["f1_weighted"] == pytest.approx(0.25 * 2 / 3 + 0.75 * 0.8)  # F1 of class 0: 2/3, of class 1: 4/5

    regressed = metrics.TaskMetrics(["max_abs_error"], "regression", 2, torch.device("cpu"))
    regressed.update(torch.zeros(3, 2), torch.tensor([[1.0, -3.0], [0.5, 0.0], [2.0, 2.0]]))
    assert regressed.compute()["max_abs_error"] == pytest.approx((3 + 0.5 + 2) / 3)
    assert not regressed.higher_is_better("valid_max_abs_error")
