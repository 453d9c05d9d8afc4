"""Training as a user runs it: bin/train.py in a subprocess, the results directory, resume, the other scripts."""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import (
    PROJECT_ROOT,
    TIMEOUT_S,
    history_epochs,
    kill_process,
    read_history,
    read_json,
    run_process,
    run_script,
    start_script,
)
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from {{ cookiecutter.proj_name }} import experiment
from {{ cookiecutter.proj_name }}.networks import build_network

EPOCHS = 3
IRIS_STEPS_PER_EPOCH = 6  # 96 training rows in batches of 16
RESULT_FILES = ("config.json", "meta.json", "history.csv", "model.pt", "loop_state.json", "stdout.txt", "stderr.txt")
META_FIELDS = (
    "command", "start_time", "end_time", "duration_s", "hostname", "python", "torch", "torchvision",
    "device", "git_commit", "git_dirty", "status", "sessions",
)  # fmt: skip
SCALARS = ("train_loss", "train_acc", "valid_loss", "valid_acc", "lr")
DATASET_CLASS = "{{ cookiecutter.dataset_loading_class }}"
# The seed-004 command of the readme, with this project's loader class as the dataset.
SEED_SPEC = {
    "model": "BaseModel",
    "dataset": DATASET_CLASS,
    "network": "linear",
    "network_args": {"input_shape": 4, "output_shape": 1},
    "num_epochs": 3,
    "device": "cpu",
    "dataset_args": {"validation_split": 0.2},
    "optimizer": "SGD",
    "loss": "BCEWithLogitsLoss",
    "optimizer_args": {"lr": 1e-3},
}


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file below ``folder`` with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def epoch_steps(results: Path, tag: str = "train_loss") -> list[int]:
    """The x values (global steps) of TensorBoard's ``epoch/<tag>`` points."""
    events = EventAccumulator(str(results))
    events.Reload()
    return [event.step for event in events.Scalars(f"epoch/{tag}")]


def assert_epochs(results: Path, last: int) -> None:
    assert history_epochs(results) == list(range(1, last + 1))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, run_train) -> Path:
    """One short Iris run, shared: tests that change a run work on a copy (see ``copy_of``)."""
    results = tmp_path_factory.mktemp("finished") / "iris_run"
    run_train("iris", results, f"--num_epochs={EPOCHS}")
    return results


@pytest.fixture
def copy_of(finished_run, tmp_path):
    def copy(name: str = "run") -> Path:
        return Path(shutil.copytree(finished_run, tmp_path / name))

    return copy


# -- the results directory ---------------------------------------------------------------------------


def test_results_directory_holds_every_file(finished_run):
    for name in RESULT_FILES:
        assert (finished_run / name).is_file(), name
    assert (finished_run / "train.py").read_bytes() == (PROJECT_ROOT / "bin" / "train.py").read_bytes()
    assert list(finished_run.glob("events.out.tfevents.*"))
    checkpoints = sorted((finished_run / "checkpoints").glob("step_*"))
    assert 1 <= len(checkpoints) <= read_json(finished_run / "config.json")["checkpoint"]["keep"]
    for folder in checkpoints:
        assert {p.name for p in folder.iterdir()} == {"model.pt", "state.pt", "loop_state.json"}
    assert not [p.name for p in finished_run.rglob("*") if ".tmp" in p.name], "no temporary file is left behind"


def test_meta_records_a_finished_session(finished_run):
    meta = read_json(finished_run / "meta.json")
    for field in META_FIELDS:
        assert field in meta, field
    assert meta["status"] == "finished"
    assert meta["command"][1:] == ["bin/train.py", "iris", str(finished_run), f"--num_epochs={EPOCHS}"]
    start, end = dt.datetime.fromisoformat(meta["start_time"]), dt.datetime.fromisoformat(meta["end_time"])
    assert start.tzinfo is not None and start <= end
    assert isinstance(meta["duration_s"], (int, float)) and meta["duration_s"] >= 0
    assert meta["python"] == platform.python_version()
    assert meta["torch"] == torch.__version__
    assert meta["hostname"]
    assert re.fullmatch(r"cpu|cuda(:\d+)?|mps", meta["device"])
    assert meta["git_commit"] is None or re.fullmatch(r"[0-9a-f]{40}", meta["git_commit"])
    assert meta["git_dirty"] in (None, True, False)
    assert len(meta["sessions"]) == 1 and meta["sessions"][0]["status"] == "finished"


def test_config_json_is_the_resolved_config(finished_run):
    config = read_json(finished_run / "config.json")
    assert config["num_epochs"] == EPOCHS
    assert config["model"]["name"] == "mlp"
    assert config["data"]["name"] == "iris"


def test_history_has_one_row_per_epoch(finished_run):
    rows = read_history(finished_run)
    assert [int(row["epoch"]) for row in rows] == list(range(1, EPOCHS + 1))
    for row in rows:
        for key in ("train_loss", "train_acc", "valid_loss", "valid_acc", "lr"):
            assert float(row[key]) >= 0
        assert 0 <= float(row["train_acc"]) <= 1 and 0 <= float(row["valid_acc"]) <= 1


@pytest.mark.parametrize(
    "options",
    [
        ["--log_every_steps=1"],
        ["--log_every_steps=4", "--batch_size=8", "--grad_accum_steps=2"],
        ["--log_every_steps=100", "--data.loader=dataloader", "--data.num_workers=0"],
    ],
    ids=["count-every-step", "accumulate", "dataloader"],
)
def test_train_acc_counts_every_training_sample_once(run_train, tmp_path, options):
    """train_acc is the share of the epoch's training samples predicted right, however the count is batched.

    With a learning rate of 0 the weights never change, so the saved network gives the predictions
    every step made; the trainer's deferred count must match them exactly.
    """
    results = tmp_path / "run"
    run_train("iris", results, "--num_epochs=1", "--optimizer.lr=0", *options)
    cfg = OmegaConf.create(read_json(results / "config.json"))
    built = experiment.build(cfg, torch.device("cpu"))
    network = built["model"].network
    network.load_state_dict(torch.load(results / "model.pt", weights_only=True))
    batches = list(built["batches"]["train"].epoch(1))
    x, y = torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])
    with torch.no_grad():
        correct = (network(x).argmax(1) == y).sum().item()
    assert 0 < correct < len(y), "an untrained network: some right, some wrong"
    assert float(read_history(results)[0]["train_acc"]) == pytest.approx(correct / len(y), abs=1e-6)  # float32


def test_model_pt_is_a_plain_state_dict(finished_run):
    state = torch.load(finished_run / "model.pt", weights_only=True)
    assert state and all(isinstance(value, torch.Tensor) for value in state.values())
    config = read_json(finished_run / "config.json")
    network = build_network(OmegaConf.create(config["model"]), [4], 3)
    network.load_state_dict(state)  # strict: exactly this network's weights
    newest = sorted((finished_run / "checkpoints").glob("step_*"))[-1]
    for key, value in torch.load(newest / "model.pt", weights_only=True).items():
        assert torch.equal(value, state[key]), "model.pt is the newest checkpoint's weights"
    torch.load(newest / "state.pt", weights_only=True)
    assert read_json(newest / "loop_state.json")["epoch"] == EPOCHS
    assert read_json(finished_run / "loop_state.json")["epoch"] == EPOCHS


def test_logs_hold_the_output_without_carriage_returns(finished_run):
    stdout = (finished_run / "stdout.txt").read_text()
    assert "\r" not in stdout
    assert "\r" not in (finished_run / "stderr.txt").read_text()
    assert f"epoch {EPOCHS}/{EPOCHS}" in stdout
    assert str(finished_run) in stdout


def test_tensorboard_has_one_event_per_epoch(finished_run):
    events = EventAccumulator(str(finished_run))
    events.Reload()
    assert {f"epoch/{tag}" for tag in SCALARS} <= set(events.Tags()["scalars"])
    history = read_history(finished_run)
    last_steps = [e * IRIS_STEPS_PER_EPOCH for e in range(1, EPOCHS + 1)]  # each epoch's point at its last step
    for tag in SCALARS:
        scalars = events.Scalars(f"epoch/{tag}")
        assert [event.step for event in scalars] == last_steps, tag
        assert [event.value for event in scalars] == pytest.approx([float(row[tag]) for row in history], rel=1e-5)


# -- resume ---------------------------------------------------------------------------------------------


def train_2_then_4_epochs(folder: Path) -> tuple[Path, subprocess.CompletedProcess]:
    results = folder / "results"
    run_script("bin/train.py", "iris", results, "--num_epochs=2")
    assert history_epochs(results) == [1, 2]
    return results, run_script("bin/train.py", "iris", results, "--num_epochs=4")


def test_resume_continues_without_repeating_an_epoch(tmp_path):
    results, second = train_2_then_4_epochs(tmp_path)
    assert "Resuming" in second.stdout
    assert_epochs(results, 4)
    meta = read_json(results / "meta.json")
    assert meta["status"] == "finished"
    assert [session["status"] for session in meta["sessions"]] == ["finished", "finished"]
    assert read_json(results / "loop_state.json")["epoch"] == 4
    assert epoch_steps(results) == [e * IRIS_STEPS_PER_EPOCH for e in range(1, 5)]
    stdout = (results / "stdout.txt").read_text()
    assert "epoch 2/2" in stdout and "epoch 4/4" in stdout, "stdout.txt is appended, not replaced"


def test_rerunning_a_finished_run_does_nothing(run_train, copy_of):
    results = copy_of()
    weights = (results / "model.pt").read_bytes()
    history = (results / "history.csv").read_bytes()
    result = run_train("iris", results, f"--num_epochs={EPOCHS}")
    assert "Nothing to do" in result.stdout
    assert (results / "model.pt").read_bytes() == weights
    assert (results / "history.csv").read_bytes() == history
    assert len(read_json(results / "meta.json")["sessions"]) == 2


def test_changed_config_is_refused_and_nothing_changes(run_train, copy_of):
    results = copy_of()
    before = snapshot(results)
    result = run_train("iris", results, f"--num_epochs={EPOCHS}", "--optimizer.lr=0.3", check=False)
    assert result.returncode == 2
    assert "optimizer.lr" in result.stderr
    assert "0.05" in result.stderr and "0.3" in result.stderr
    assert "--allow-config-change" in result.stderr
    assert "Traceback" not in result.stderr
    assert snapshot(results) == before
    assert (results / "config.json").read_bytes() == before["config.json"]


def test_allow_config_change_accepts_the_change(run_train, copy_of):
    results = copy_of()
    result = run_train("iris", results, "--num_epochs=4", "--optimizer.lr=0.3", "--allow-config-change")
    assert "optimizer.lr" in result.stdout
    assert read_json(results / "config.json")["optimizer"]["lr"] == 0.3
    assert_epochs(results, 4)


def test_history_rows_after_the_last_checkpoint_are_dropped(run_train, copy_of):
    results = copy_of()
    rows = read_history(results)
    with open(results / "history.csv", "a", newline="") as f:  # as if killed after logging epoch 99
        csv.DictWriter(f, fieldnames=list(rows[0])).writerow({**rows[-1], "epoch": 99})
    assert history_epochs(results)[-1] == 99
    run_train("iris", results, f"--num_epochs={EPOCHS + 1}")
    assert_epochs(results, EPOCHS + 1)
    assert read_history(results)[:EPOCHS] == rows, "the rows of the checkpointed epochs are kept as they were"


def kill_then_resume(folder: Path) -> dict:
    """Start a long run, SIGKILL it once two epochs are logged and a checkpoint is written, then rerun it."""
    results = folder / "results"
    args = ("iris", results, "--num_epochs=400")
    with open(folder / "killed_output.txt", "w") as out:
        process = start_script("bin/train.py", *args, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + TIMEOUT_S
            while not (
                (results / "history.csv").is_file()
                and len(read_history(results)) >= 2
                and list((results / "checkpoints").glob("step_*"))
            ):
                assert process.poll() is None, (folder / "killed_output.txt").read_text()
                assert time.monotonic() < deadline, "no epoch finished in time"
                time.sleep(0.02)
        finally:
            kill_process(process)  # SIGKILL: no chance to clean up or record anything
    return {
        "results": results,
        "killed_code": process.returncode,
        "killed_status": read_json(results / "meta.json")["status"],
        "resumed": run_script("bin/train.py", *args),
    }


def test_resume_after_sigkill(tmp_path):
    outcome = kill_then_resume(tmp_path)
    results = outcome["results"]
    assert outcome["killed_code"] == -signal.SIGKILL, "the run ended before it could be killed"
    assert outcome["killed_status"] == "running"  # a killed run cannot say more
    assert "Resuming" in outcome["resumed"].stdout
    assert_epochs(results, 400)
    meta = read_json(results / "meta.json")
    assert meta["status"] == "finished"
    assert [session["status"] for session in meta["sessions"]] == ["died", "finished"]
    assert epoch_steps(results) == [e * IRIS_STEPS_PER_EPOCH for e in range(1, 401)]


class Payload:
    """A pickle that creates ``marker`` when unpickled (what a malicious file would do)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_checkpoints_are_never_unpickled(run_train, copy_of, tmp_path):
    check_marker = tmp_path / "payload_works"
    torch.save({"x": Payload(check_marker)}, tmp_path / "check.pt")
    torch.load(tmp_path / "check.pt", weights_only=False)  # the payload is live when unpickled...
    assert check_marker.exists()

    results = copy_of()
    marker = tmp_path / "pwned"
    checkpoints = sorted((results / "checkpoints").glob("step_*"))
    assert checkpoints
    for folder in checkpoints:
        torch.save({"training_model": Payload(marker)}, folder / "state.pt")
    result = run_train("iris", results, f"--num_epochs={EPOCHS + 2}", check=False)
    assert not marker.exists(), "a results directory was unpickled"  # ...but never by the project
    assert result.returncode != 0
    errors = result.stderr + (results / "stderr.txt").read_text()
    assert "could run code" in errors, errors
    assert read_json(results / "meta.json")["status"] == "failed"


def test_evaluate_never_unpickles_model_pt(run, copy_of, tmp_path):
    results = copy_of()
    marker = tmp_path / "pwned"
    torch.save({"weight": Payload(marker)}, results / "model.pt")
    result = run("bin/evaluate.py", results, "--weights=last", check=False)
    assert result.returncode != 0
    assert not marker.exists()


# -- the JSON interface -----------------------------------------------------------------------------------


def test_readme_json_command_runs_from_the_project_root(run):
    readme = (PROJECT_ROOT / "readme.md").read_text()
    found = re.search(r"^python \./training_scripts/run_experiment\.py '(.+)'$", readme, re.MULTILINE)
    assert found, "the readme shows the JSON command"
    assert json.loads(found.group(1)) == SEED_SPEC
    runs = PROJECT_ROOT / "runs"
    runs_existed = runs.exists()
    result = run("./training_scripts/run_experiment.py", found.group(1), check=False)
    written = re.search(r"Results will be written to (\S+)", result.stdout)
    results = PROJECT_ROOT / written.group(1) if written else None
    try:
        assert result.returncode == 0, result.stderr
        assert written, result.stdout
        config = read_json(results / "config.json")
        assert config["model"]["output_shape"] == 1
        assert config["model"]["input_shape"] == [4]
        assert config["model"]["name"] == "linear"
        assert config["loss"] == "BCEWithLogitsLoss"
        assert config["training_model"] == "BaseModel"
        assert config["data"]["name"] == DATASET_CLASS
        assert config["data"]["validation_split"] == 0.2
        assert config["optimizer"]["name"] == "SGD"
        assert config["optimizer"]["lr"] == 0.001
        assert config["device"] == "cpu"
        assert_epochs(results, 3)
        assert read_json(results / "meta.json")["status"] == "finished"
    finally:
        if results is not None and results.is_relative_to(runs) and results != runs:
            shutil.rmtree(results, ignore_errors=True)
        if not runs_existed and runs.is_dir() and not any(runs.iterdir()):
            runs.rmdir()


def test_json_run_with_three_outputs(run, results_dir):
    spec = {
        "model": "XavierInitModel",
        "dataset": DATASET_CLASS,
        "network": "mlp",
        "network_args": {"output_shape": 3, "hidden_size": 8},
        "loss": "CrossEntropyLoss",
        "num_epochs": 2,
        "optimizer": "Adam",
        "optimizer_args": {"lr": 0.01, "betas": [0.9, 0.99]},
    }
    result = run("training_scripts/run_experiment.py", json.dumps(spec), results_dir)
    assert str(results_dir) in result.stdout
    config = read_json(results_dir / "config.json")
    assert config["model"]["output_shape"] == 3 and config["model"]["hidden_size"] == 8
    assert config["training_model"] == "XavierInitModel"
    assert config["optimizer"]["name"] == "Adam"
    assert config["optimizer"]["extra"] == {"betas": [0.9, 0.99]}
    assert_epochs(results_dir, 2)


def test_json_run_takes_overrides_after_the_results_directory(run, results_dir):
    spec = json.dumps({"network": "linear", "num_epochs": 3})
    run("training_scripts/run_experiment.py", spec, results_dir, "--num_epochs=1", "--optimizer.lr=0.2")
    config = read_json(results_dir / "config.json")
    assert config["num_epochs"] == 1 and config["optimizer"]["lr"] == 0.2 and config["model"]["name"] == "linear"
    assert_epochs(results_dir, 1)
    refused = run("training_scripts/run_experiment.py", spec, results_dir, "--num_epoch=2", check=False)
    assert refused.returncode == 2 and "num_epochs" in refused.stderr


def test_json_that_is_not_valid_exits_2(run, tmp_path):
    result = run("training_scripts/run_experiment.py", "{not json", tmp_path / "results", check=False)
    assert result.returncode == 2
    assert "not valid JSON" in result.stderr
    assert not (tmp_path / "results").exists()


# -- the other scripts --------------------------------------------------------------------------------------


def test_evaluate_writes_test_metrics(run, copy_of):
    results = copy_of()
    result = run("bin/evaluate.py", results)
    assert "test_acc" in result.stdout
    metrics = read_json(results / "test_metrics.json")
    assert 0 <= metrics["test_acc"] <= 1
    assert metrics["test_loss"] >= 0
    assert metrics["epoch"] == EPOCHS


def test_evaluate_refuses_a_folder_without_a_run(run, tmp_path):
    result = run("bin/evaluate.py", tmp_path, check=False)
    assert result.returncode == 2
    assert "config.json" in result.stderr


def run_baselines(folder: Path) -> tuple[Path, subprocess.CompletedProcess]:
    env = {**os.environ, "EXTRA_ARGS": "--num_epochs=1", "RUNS_DIR": str(folder), "PYTHON": sys.executable}
    env.pop("CIFAR10_ROOT", None)
    return folder / "baselines", run_process(["bash", "experiments/baseline_experiments.sh"], check=False, env=env)


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_baseline_experiments_script(tmp_path):
    runs, result = run_baselines(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ("iris_linear", "iris_mlp", "iris_mlp_fixed", "iris_mlp_xavier"):
        assert read_json(runs / name / "meta.json")["status"] == "finished", name
        assert history_epochs(runs / name) == [1]
        assert 0 <= read_json(runs / name / "test_metrics.json")["test_acc"] <= 1
    assert read_json(runs / "iris_mlp_fixed" / "config.json")["model"]["name"] == "mlp_fixed"
    assert read_json(runs / "iris_mlp_xavier" / "config.json")["training_model"] == "XavierInitModel"
    assert read_json(runs / "iris_linear_binary_json" / "meta.json")["status"] == "finished"
    assert history_epochs(runs / "iris_linear_binary_json") == [1], "EXTRA_ARGS apply to the JSON run too"
    assert "CIFAR10_ROOT is not set" in result.stdout
