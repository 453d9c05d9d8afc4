"""bin/compare.py on real runs, and what TensorBoard makes of the same runs.

The runs: Iris trained with 2 learning rates x 3 seeds (``seed_runs``, built once per test session), copies of
them damaged or cut short, and runs that really are running or failed.  Expected numbers are computed here from
the runs' history.csv files, independently of the code under test.  report.html is opened in a real headless
Chromium through selenium (etc/browser/chromium.sh installs it); without one these tests skip, except where
CI=true: there they fail.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import os
import re
import shutil
import statistics
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest
from conftest import TIMEOUT_S, kill_process, read_history, read_json, run_script, start_script
from fault_helpers import env_with_faults, shared, start_train, train
from scipy import stats

from {{ cookiecutter.proj_name }} import experiment

LRS, SEEDS, EPOCHS = (0.05, 0.1), (0, 1, 2), 3
TRAIN_ARGS = ("--device=cpu", f"--num_epochs={EPOCHS}", "--log_every_steps=2")  # step/ scalars too (6 steps/epoch)
METRICS = ("valid_loss", "valid_acc")  # lower and higher is better


def run_dir(seed_runs: Path, lr: float, seed: int) -> Path:
    return seed_runs / f"lr{lr}" / f"seed_{seed}"


@pytest.fixture(scope="session")
def seed_runs(tmp_path_factory) -> Path:
    """The folder of Iris runs ``lr<lr>/seed_<seed>`` for each of LRS and SEEDS, trained at once, once per session
    (shared by the pytest-xdist workers): tests copy a run before changing it."""

    def build(folder: Path) -> dict:
        processes = {}
        for lr in LRS:
            for seed in SEEDS:
                args = ("iris", run_dir(folder, lr, seed), *TRAIN_ARGS, f"--optimizer.lr={lr}", f"--seed={seed}")
                quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}  # stderr.txt has the errors
                processes[args[1]] = start_script("bin/train.py", *args, env=env_with_faults(), **quiet)
        for run, process in processes.items():
            try:
                process.wait(timeout=TIMEOUT_S)
            finally:
                kill_process(process)
            assert process.returncode == 0, (run / "stderr.txt").read_text()
        return {"folder": str(folder)}

    return Path(shared(tmp_path_factory, "compare_seed_runs", build)["folder"])


def compare(*args: object) -> tuple[int, str, str]:
    """``bin/compare.py ARGS...`` in this process (torch and pandas are imported once per worker): exit code,
    stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = experiment.main_compare(["bin/compare.py", *map(str, args)])
        except SystemExit as stop:  # argparse's usage error
            code = stop.code
    return code, out.getvalue(), err.getvalue()


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def header(path: Path) -> list[str]:
    with open(path, newline="") as f:
        return next(csv.reader(f))


def column(run: Path, name: str) -> list[float]:
    return [float(row[name]) for row in read_history(run)]


def mean_and_half_width(values: list[float]) -> tuple[float, float]:
    """The mean and the half-width of its 95% confidence interval by Student's t, the textbook way."""
    n = len(values)
    return statistics.fmean(values), stats.t.ppf(0.975, n - 1) * statistics.stdev(values) / math.sqrt(n)


@pytest.fixture(scope="module")
def report(seed_runs, tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """``bin/compare.py`` as a user runs it, on both learning rates' folders: its output and its --out folder."""
    out = tmp_path_factory.mktemp("report")
    paths = [seed_runs / f"lr{lr}" for lr in LRS]
    return run_script("bin/compare.py", *paths, "--metric", ",".join(METRICS), "--out", out), out


# -- the table ------------------------------------------------------------------------------------------------


def test_runs_that_differ_only_by_seed_are_averaged(seed_runs, report):
    result, out = report
    rows = read_csv(out / "compare.csv")
    assert header(out / "compare.csv")[:2] == ["optimizer.lr", "n"], "the one key that differs but seed, then n"
    assert [float(row["optimizer.lr"]) for row in rows] == list(LRS)
    for row, lr in zip(rows, LRS, strict=True):
        runs = [run_dir(seed_runs, lr, seed) for seed in SEEDS]
        assert (row["n"], row["status"], row["epochs"]) == ("3", "3 finished", str(EPOCHS))
        assert row["runs"] == ", ".join(str(run) for run in runs)
        for metric, best in zip(METRICS, (min, max), strict=True):
            expected = {"best": [best(column(run, metric)) for run in runs],
                        "final": [column(run, metric)[-1] for run in runs]}  # fmt: skip
            for kind, values in expected.items():
                mean, half_width = mean_and_half_width(values)
                assert float(row[f"{metric}_{kind}"]) == pytest.approx(mean, rel=1e-12), (lr, metric, kind)
                assert float(row[f"{metric}_{kind}_ci95"]) == pytest.approx(half_width, rel=1e-9, abs=1e-12)
    lines = result.stdout.splitlines()
    assert len(lines) == 1 + len(LRS) and all(" ± " in line for line in lines[1:]), result.stdout
    assert "compare.csv" in result.stderr and "report.html" in result.stderr


def test_per_run_rows_show_only_the_keys_that_differ(seed_runs, tmp_path):
    code, stdout, _ = compare(seed_runs, "--per-run", "--out", tmp_path)
    assert code == 0
    assert header(tmp_path / "compare.csv")[:4] == ["run", "optimizer.lr", "seed", "status"]
    rows = {row["run"]: row for row in read_csv(tmp_path / "compare.csv")}
    assert set(rows) == {str(run_dir(seed_runs, lr, seed)) for lr in LRS for seed in SEEDS}
    for path, row in rows.items():
        losses = column(Path(path), "valid_loss")
        assert float(row["valid_loss_best"]) == min(losses) and float(row["valid_loss_final"]) == losses[-1]
        assert int(row["valid_loss_best_epoch"]) == 1 + losses.index(min(losses))
        assert (row["status"], row["epochs"]) == ("finished", str(EPOCHS))
        assert float(row["duration_s"]) == sum(s["duration_s"] for s in read_json(Path(path) / "meta.json")["sessions"])
    assert len(stdout.splitlines()) == 1 + len(rows)


def test_group_by_averages_the_other_keys_and_sort_puts_the_best_first(seed_runs, tmp_path):
    code, _, _ = compare(seed_runs, "--group-by", "seed", "--sort", "valid_loss_final", "--out", tmp_path)
    assert code == 0
    rows = read_csv(tmp_path / "compare.csv")
    assert header(tmp_path / "compare.csv")[:2] == ["seed", "n"]
    finals = {seed: statistics.fmean(column(run_dir(seed_runs, lr, seed), "valid_loss")[-1] for lr in LRS)
              for seed in SEEDS}  # fmt: skip
    assert [int(row["seed"]) for row in rows] == sorted(SEEDS, key=finals.get), "the lowest loss first"
    assert all(row["n"] == str(len(LRS)) for row in rows)


def test_runs_with_the_same_config_are_one_group(seed_runs, tmp_path, monkeypatch):
    for name in ("first", "second"):
        shutil.copytree(run_dir(seed_runs, LRS[0], 0), tmp_path / "runs" / name)
    monkeypatch.chdir(tmp_path)  # where the files would go without --table-only
    code, stdout, _ = compare(tmp_path / "runs", "--table-only")
    lines = stdout.splitlines()
    assert code == 0 and len(lines) == 2 and lines[0].split()[:2] == ["n", "status"] and "2 finished" in lines[1]
    assert not (tmp_path / "compare.csv").exists() and not (tmp_path / "report.html").exists()
    code, stdout, _ = compare(tmp_path / "runs", "--per-run", "--table-only")
    lines = stdout.splitlines()
    assert code == 0 and len(lines) == 3
    for name in ("first", "second"):
        assert sum(str(tmp_path / "runs" / name) in line for line in lines) == 1


def test_running_and_failed_runs_are_shown_as_such(seed_runs, tmp_path):
    """A run that is training right now (paused at its second epoch) and one that failed there (a NaN loss),
    beside a finished copy: with the same config they are one group, and each run says how it stands."""
    runs = tmp_path / "runs"
    shutil.copytree(run_dir(seed_runs, LRS[0], 0), runs / "finished")
    args = ("iris", *TRAIN_ARGS, f"--optimizer.lr={LRS[0]}", "--seed=0")
    with open(tmp_path / "running.log", "w") as log:
        running = start_train((args[0], runs / "running", *args[1:]), log, faults="pause_at_step=8")
    try:
        failed = train(args[0], runs / "failed", *args[1:], faults="nan_at_step=8", check=False)
        assert failed.returncode == 1, failed.stderr
        deadline = time.monotonic() + TIMEOUT_S
        while not ((runs / "running" / "history.csv").exists() and read_history(runs / "running")):
            assert running.poll() is None and time.monotonic() < deadline, (tmp_path / "running.log").read_text()
            time.sleep(0.1)
        code, _, _ = compare(runs, "--out", tmp_path / "groups")
        assert code == 0
        (group,) = read_csv(tmp_path / "groups" / "compare.csv")
        assert group["n"] == "3" and group["epochs"] == f"1-{EPOCHS}"
        assert sorted(group["status"].split(", ")) == ["1 failed", "1 finished", "1 running"]
        code, _, _ = compare(runs, "--per-run", "--out", tmp_path / "runs_table")
        rows = {Path(row["run"]).name: row for row in read_csv(tmp_path / "runs_table" / "compare.csv")}
        assert {name: (row["status"], row["epochs"]) for name, row in rows.items()} == {
            "finished": ("finished", str(EPOCHS)), "running": ("running", "1"), "failed": ("failed", "1")
        }  # fmt: skip
        assert rows["running"]["duration_s"] == "", "its first session has not ended"
    finally:
        kill_process(running)


def test_lists_a_run_killed_in_its_first_epoch(seed_runs, tmp_path):
    killed = tmp_path / "runs" / "killed"
    killed.mkdir(parents=True)
    for name in ("meta.json", "config.json"):  # all a run has before its first epoch ends
        shutil.copy(run_dir(seed_runs, LRS[0], 0) / name, killed / name)
    code, stdout, _ = compare(tmp_path / "runs", "--per-run", "--out", tmp_path)
    (row,) = read_csv(tmp_path / "compare.csv")
    assert code == 0 and row["run"] == str(killed) and row["epochs"] == "0" and row["status"] == "finished"
    assert "valid_loss_best" not in row, "no epoch ended: no metric to show"
    assert str(killed) in stdout.splitlines()[1]


def test_names_unreadable_files_and_lists_the_other_runs(seed_runs, tmp_path):
    finished = run_dir(seed_runs, LRS[0], 0)
    damage = {
        "garbage_meta": ("meta.json", "{not json"),
        "garbage_config": ("config.json", "[1, 2"),
        "headerless_history": ("history.csv", "1,0.5,0.5\n2,0.4,0.6\n"),
        "lone_line_break": ("history.csv", "\r\n"),
        "cut_row": ("history.csv", (finished / "history.csv").read_text() + "4,0.3"),
        "short_row": ("history.csv", (finished / "history.csv").read_text() + "4,0.3\n"),
    }
    for name, (file, text) in damage.items():
        shutil.copytree(finished, tmp_path / "runs" / name)
        (tmp_path / "runs" / name / file).write_text(text)
    shutil.copytree(finished, tmp_path / "runs" / "intact")
    (tmp_path / "runs" / "intact" / "slurm" / "1234").mkdir(parents=True)  # submitit's logs: never a run
    (tmp_path / "runs" / "intact" / "slurm" / "1234" / "meta.json").write_text("{}")
    code, _, stderr = compare(tmp_path / "runs", "--per-run", "--out", tmp_path)
    assert code == 0 and "Traceback" not in stderr
    rows = {Path(row["run"]).name: row for row in read_csv(tmp_path / "compare.csv")}
    assert set(rows) == {*damage, "intact"}
    for name, (file, _) in damage.items():
        assert file in rows[name]["unreadable"], name
    assert rows["intact"]["unreadable"] == "" and rows["intact"]["epochs"] == str(EPOCHS)
    assert rows["cut_row"]["epochs"] == rows["short_row"]["epochs"] == str(EPOCHS), "the damaged row is left out"
    assert rows["garbage_meta"]["status"] == "" and rows["garbage_meta"]["valid_loss_best"] != ""


@pytest.mark.parametrize(
    "args, expected",
    [
        (["missing"], "missing does not exist"),
        (["empty"], "no runs under"),
        (["runs", "--metric", "valid_los"], "did you mean 'valid_loss'?); the columns are: train_loss"),
        (["runs", "--group-by", "lr"], "did you mean 'optimizer.lr'?); the keys that differ between these runs: none"),
        (["runs", "--sort", "valid_loss"], "did you mean 'valid_loss_best'?)"),
    ],
    ids=["missing-path", "no-runs", "unknown-metric", "unknown-key", "unknown-sort-column"],
)
def test_bad_input_exits_2_with_one_line(seed_runs, tmp_path, args, expected):
    shutil.copytree(run_dir(seed_runs, LRS[0], 0), tmp_path / "runs" / "a")
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    code, stdout, stderr = compare(*[tmp_path / arg if arg in ("missing", "empty", "runs") else arg for arg in args])
    assert code == 2 and stdout == "", stderr
    assert stderr.startswith("error: ") and len(stderr.splitlines()) == 1 and expected in stderr, stderr


# -- report.html in a browser ---------------------------------------------------------------------------------


def unavailable(reason: str) -> None:
    """Skip for ``reason``; under CI=true, fail instead: CI must run the browser test."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true, so report.html must be tested in a browser, but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def chromium() -> Iterator:
    """A headless Chromium driven by selenium through the chromedriver on PATH (Debian's: /usr/bin/chromedriver);
    quit afterwards, with the processes it started."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        unavailable("selenium is not installed (pip install -e '.[dev]')")
    browser = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    driver_path = shutil.which("chromedriver")
    if browser is None or driver_path is None:
        unavailable("needs chromium and chromedriver on PATH (sudo etc/browser/chromium.sh install)")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(argument)  # --no-sandbox: CI runs as root
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)  # no Selenium Manager download
    try:
        driver.set_page_load_timeout(60)
        yield driver
    finally:
        driver.quit()


def test_report_opens_from_disk_with_a_figure_per_metric(chromium, report):
    _, out = report
    page = (out / "report.html").read_text()
    assert re.findall(r'(?:src|href)="(?!data:)[^"]*"', page) == [], "no file or URL outside the page"
    chromium.get((out / "report.html").as_uri())
    errors = [entry for entry in chromium.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == []
    images = chromium.execute_script(
        "return Array.from(document.images, i => [i.alt, i.complete && i.naturalWidth > 0 && i.naturalHeight > 0])"
    )
    assert images == [[f"learning curves of {metric}", True] for metric in METRICS]
    headers = chromium.execute_script("return Array.from(document.querySelectorAll('th'), th => th.textContent)")
    assert headers[:2] == ["optimizer.lr", "n"] and "valid_acc_best" in headers
    assert chromium.execute_script("return document.querySelectorAll('tbody tr').length") == len(LRS)


# -- TensorBoard ----------------------------------------------------------------------------------------------


def test_tensorboard_sees_each_results_directory_as_one_run_with_its_hparams(seed_runs):
    from tensorboard.backend.event_processing.plugin_event_multiplexer import EventMultiplexer
    from tensorboard.plugins.hparams import metadata

    events = EventMultiplexer()
    events.AddRunsFromDirectory(str(seed_runs))
    events.Reload()
    expected = {str(run_dir(seed_runs, lr, seed).relative_to(seed_runs)): (lr, seed) for lr in LRS for seed in SEEDS}
    assert set(events.Runs()) == set(expected), "add_hparams would have added a subfolder: a second run"
    hparams = events.PluginRunToTagToContent(metadata.PLUGIN_NAME)
    for run, (lr, seed) in expected.items():
        start = metadata.parse_session_start_info_plugin_data(hparams[run][metadata.SESSION_START_INFO_TAG])
        assert start.hparams["optimizer.lr"].number_value == lr and start.hparams["seed"].number_value == seed
        assert start.hparams["model.name"].string_value == "mlp"
        assert start.hparams["lr_schedule"].string_value == "[]", "a list, as its JSON text"
        tags = events.Runs()[run]["tensors"]  # the scalars, as this multiplexer keeps them
        assert {"step/train_loss", "epoch/train_loss", "epoch/valid_loss", "epoch/valid_acc"} <= set(tags)
