"""Damaged runs: what a run does when its checkpoints are corrupted or no longer fit, when the disk fills during a
checkpoint write, or when the loss becomes NaN.  It stops with exit 1 and one clear line (no traceback), never
writes a checkpoint from a broken state, never silently starts over, and once the cause is gone the same command
ends *bitwise* as the run that never failed.

Real processes, no mocks; faults come from tests/faulty_train.py (see fault_helpers.py).
"""

from __future__ import annotations

import math
import random
import shutil
from pathlib import Path

import pytest
from conftest import read_history, read_json
from fault_helpers import (
    CIFAR_EPOCHS,
    IRIS_EPOCHS,
    IRIS_STEPS_PER_EPOCH,
    assert_all_finite,
    assert_same,
    assert_same_run,
    load,
    newest_checkpoint,
    tmp_folders,
    train,
    train_command,
)

# -- corrupted checkpoints --------------------------------------------------------------------------------


def corrupt(path: Path) -> None:
    if path.suffix == ".json":
        path.write_text("{not json")
    else:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # truncated, as by a crash or a full disk


@pytest.mark.parametrize("damaged", ["model.pt", "loop_state.json"])  # state.pt: see the next test
def test_corrupted_newest_checkpoint_is_set_aside_and_the_run_recomputed(damaged, iris_reference, tmp_path):
    """An unreadable newest checkpoint: a warning, the folder kept aside, resume from the one before, same result."""
    results = Path(shutil.copytree(iris_reference, tmp_path / "results"))  # a copy: files are not hard-linked
    newest, previous = sorted((results / "checkpoints").glob("step_*"))[-2:][::-1]
    corrupt(newest / damaged)
    rerun = train(*train_command("iris", results))
    assert newest.name in rerun.stderr and "unreadable" in rerun.stderr, rerun.stderr
    assert (results / "checkpoints" / f"unreadable_{newest.name}" / damaged).is_file()
    assert f"Resuming from checkpoints/{previous.name}" in rerun.stdout, rerun.stdout
    assert_same_run(results, iris_reference, f"({damaged} of {newest.name} damaged)")


def test_no_readable_checkpoint_is_a_clear_error_and_stays_one(iris_reference, tmp_path):
    """Every checkpoint unreadable: exit 1 with a clear error, and a second try must not silently start over."""
    results = Path(shutil.copytree(iris_reference, tmp_path / "results"))
    for folder in (results / "checkpoints").glob("step_*"):
        corrupt(folder / "state.pt")
    history = (results / "history.csv").read_bytes()
    for attempt in (1, 2):
        result = train(*train_command("iris", results), check=False)
        context = f"attempt {attempt} exited {result.returncode}\n{result.stdout[-300:]}\n{result.stderr}"
        assert result.returncode == 1, f"{context}\nit must refuse again, not start the run over"
        assert "checkpoint" in result.stderr, context
        if attempt == 1:
            assert "no checkpoint" in result.stderr and "could be read" in result.stderr, context
        assert "Traceback" not in result.stderr, context
        assert read_json(results / "meta.json")["status"] == "failed"
        assert (results / "history.csv").read_bytes() == history, f"attempt {attempt}: the history was discarded"


# -- disk full ------------------------------------------------------------------------------------------------


def test_disk_full_during_a_checkpoint_fails_cleanly_and_the_rerun_catches_up(iris_reference, tmp_path):
    """ENOSPC in a checkpoint write: exit 1, a clear message, the previous checkpoint intact; rerun = reference."""
    step = random.Random(1234).randrange(7, 115)  # after the first epoch's checkpoint (6 steps per epoch)
    results = tmp_path / "results"
    command = train_command("iris", results)
    failed = train(*command, check=False, faults=f"enospc_from_step={step}")
    context = f"(ENOSPC writing checkpoints from step {step})\n{failed.stdout}\n{failed.stderr}"
    assert failed.returncode == 1, context
    assert "No space left on device" in failed.stderr and "checkpoint" in failed.stderr, context
    assert "Traceback" not in failed.stderr, context
    meta = read_json(results / "meta.json")
    assert meta["status"] == "failed" and "No space left on device" in meta["reason"], meta["reason"]
    assert tmp_folders(results) == [], context
    newest = newest_checkpoint(results)
    loop = read_json(newest / "loop_state.json")
    assert loop["global_step"] == int(newest.name.split("_")[1]), context
    assert load(newest / "model.pt") and load(newest / "state.pt")  # intact: both load
    assert read_json(results / "loop_state.json")["checkpoint"] == f"checkpoints/{newest.name}", context
    rerun = train(*command)
    assert f"Resuming from checkpoints/{newest.name}" in rerun.stdout, rerun.stdout
    assert_same_run(results, iris_reference, context)
    assert [s["status"] for s in read_json(results / "meta.json")["sessions"]] == ["failed", "finished"]


# -- non-finite loss --------------------------------------------------------------------------------------------


NAN_STEP = random.Random(1234).randrange(8, 60)


def test_nan_loss_stops_the_run_without_checkpointing_nan(tmp_path):
    """nonfinite_loss=stop: exit 1, the reason names the non-finite loss, every checkpoint left is finite."""
    results = tmp_path / "results"
    command = (*train_command("iris", results), "--nonfinite_loss=stop")
    result = train(*command, check=False, faults=f"nan_at_step={NAN_STEP}")
    context = f"(NaN inputs at step {NAN_STEP})\n{result.stdout}\n{result.stderr}"
    assert result.returncode == 1, context
    meta = read_json(results / "meta.json")
    assert meta["status"] == "failed" and "NonFiniteLoss" in meta["reason"] and "nan" in meta["reason"], meta["reason"]
    assert "Traceback" not in result.stderr, context
    checkpoints = sorted((results / "checkpoints").glob("step_*"))
    assert checkpoints, context
    for folder in checkpoints:
        assert int(folder.name.split("_")[1]) < NAN_STEP, f"{folder.name} written after the NaN; {context}"
        assert_all_finite(folder / "model.pt")
        assert_all_finite(folder / "state.pt")  # the momentum buffers too
    for name in ("model.pt", "best_model.pt"):
        if (results / name).exists():
            assert_all_finite(results / name)


def test_nan_loss_step_is_skipped_and_counted(tmp_path):
    """nonfinite_loss=skip: the run finishes with finite weights; history counts the one skipped step."""
    results = tmp_path / "results"
    command = (*train_command("iris", results), "--nonfinite_loss=skip")
    train(*command, faults=f"nan_at_step={NAN_STEP}")
    nan_epoch = (NAN_STEP - 1) // IRIS_STEPS_PER_EPOCH + 1
    rows = read_history(results)
    skipped = [int(row["skipped_steps"]) for row in rows]
    assert skipped == [0] * (nan_epoch - 1) + [1] * (IRIS_EPOCHS - nan_epoch + 1), f"NaN at step {NAN_STEP}"
    assert all(math.isfinite(float(row["train_loss"])) for row in rows)
    assert_all_finite(results / "model.pt")
    assert_all_finite(newest_checkpoint(results) / "state.pt")


def test_skipped_nan_step_leaves_no_nan_in_batchnorm_statistics(tiny_cifar, tmp_path):
    """nonfinite_loss=skip on the cifar10 CNN (BatchNorm): the NaN batch's forward pass must not poison the
    running statistics, or every later checkpoint would be refused."""
    results = tmp_path / "results"
    train(*train_command("cifar10", results, tiny_cifar), "--nonfinite_loss=skip", faults="nan_at_step=3")
    assert [int(row["skipped_steps"]) for row in read_history(results)] == [1] * CIFAR_EPOCHS
    assert_all_finite(results / "model.pt")


# -- checkpoints that do not fit ------------------------------------------------------------------------------


def test_checkpoint_that_does_not_fit_the_model_is_an_error_and_nothing_is_set_aside(iris_reference, tmp_path):
    """A code or config change that makes the saved state unloadable is one clear error, not 'corruption':
    no checkpoint is renamed, and the original command still resumes."""
    results = Path(shutil.copytree(iris_reference, tmp_path / "results"))
    before = sorted(p.name for p in (results / "checkpoints").iterdir())
    command = train_command("iris", results)
    changed = train(*command, "--model.hidden_size=7", "--allow-config-change", "--num_epochs=30", check=False)
    assert changed.returncode == 1, changed.stderr
    assert "does not fit" in changed.stderr and "Traceback" not in changed.stderr, changed.stderr
    assert sorted(p.name for p in (results / "checkpoints").iterdir()) == before
    train(*command)  # the same command as before: nothing to do, and no error
    assert_same(load(results / "model.pt"), load(iris_reference / "model.pt"), "model.pt")


def test_lowering_num_epochs_inside_an_unfinished_epoch_is_refused(tmp_path):
    """Ending a run in the middle of an epoch would leave model.pt out of step with history.csv."""
    results = tmp_path / "results"
    command = ("iris", results, "--device=cpu", "--num_epochs=3", "--checkpoint.every_steps=4")
    train(*command)
    shutil.rmtree(newest_checkpoint(results))  # now the newest is step 16: 4 batches into epoch 3
    result = train(*command[:3], "--num_epochs=2", *command[4:], check=False)
    assert result.returncode == 1 and "num_epochs >= 3" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
