"""The results directory belongs to the run: nothing outside it is written through it, and no file in it is trusted.

Real runs on real folders: symbolic and hard links planted in a results directory, files edited by hand
or crafted, a RESULTS_DIR that is a file or has bytes that are not UTF-8, a read-only mount.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import PROJECT_ROOT, TIMEOUT_S, kill_process, read_history, read_json, run_script, start_script

from {{ cookiecutter.proj_name }}.engine.results import git_diff
from {{ cookiecutter.proj_name }}.experiment import main_train

IRIS = ("iris", "--device=cpu", "--num_epochs=3", "--log_every_steps=2")


def train(results: Path, *args, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    return run_script("bin/train.py", IRIS[0], results, *IRIS[1:], *args, check=check, **kwargs)


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every entry below ``folder`` (links not followed) with the bytes of each regular file."""
    found = {}
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        found[key] = b"<link>" if path.is_symlink() else b"<dir>" if path.is_dir() else path.read_bytes()
    return found


def one_error_line(result: subprocess.CompletedProcess) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """One short Iris run, shared: tests copy it before changing anything."""
    results = tmp_path_factory.mktemp("finished") / "run"
    train(results)
    return results


@pytest.fixture
def copy_of(finished, tmp_path):
    return lambda name="run": Path(shutil.copytree(finished, tmp_path / name, symlinks=True))


def written_entries(finished: Path) -> list[str]:
    """Every file and folder a run writes (taken from a finished run, so a new one is covered at once), plus those
    that exist only while it runs."""
    entries = {str(p.relative_to(finished)) for p in finished.rglob("*")}
    return sorted(entries | {".lock", ".reserve", ".meta.json.tmp", "checkpoints/.tmp-x"})


# -- links --------------------------------------------------------------------------------------------------


def test_every_written_entry_is_covered(finished):
    names = written_entries(finished)
    for expected in ("meta.json", "stdout.txt", "train.py", "checkpoints", "history.csv", "model.pt", "best_model.pt"):
        assert expected in names
    assert any(name.startswith("checkpoints/step_") and name.endswith("/state.pt") for name in names)


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_a_symbolic_link_in_the_results_directory_is_refused_and_nothing_outside_is_touched(
    finished, tmp_path, capsys, kind
):
    """A link planted at any path the trainer writes: the rerun (with more epochs) exits 2 with one line naming the
    link, and neither the folder nor the link's target changes.  (In this process, for speed: one run per path.)"""
    outside = tmp_path / "outside"
    for name in written_entries(finished):
        results = Path(shutil.copytree(finished, tmp_path / "run"))
        target = outside / name.replace("/", "_")
        if kind == "folder":
            target.mkdir(parents=True)
            (target / "precious.txt").write_text("keep me\n")
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text("keep me\n")
        planted = results / name
        if planted.is_dir():
            shutil.rmtree(planted)
        else:
            planted.unlink(missing_ok=True)
        planted.parent.mkdir(parents=True, exist_ok=True)
        planted.symlink_to(target)
        before, outside_before = snapshot(results), snapshot(outside)
        code = main_train([str(PROJECT_ROOT / "bin" / "train.py"), IRIS[0], str(results), *IRIS[1:], "--num_epochs=5"])
        err = capsys.readouterr().err
        assert code == 2, f"link at {name}: {err}"
        line = one_error_line(subprocess.CompletedProcess([], code, "", err))
        assert str(planted) in line and "symbolic link" in line, line
        assert snapshot(results) == before, f"link at {name}: the refused run changed the folder"
        assert snapshot(outside) == outside_before, f"link at {name}: something outside was written"
        shutil.rmtree(results)


def test_a_results_directory_that_is_itself_a_link_is_fine(tmp_path):
    """RESULTS_DIR may be a link to a folder elsewhere (runs on a scratch disk): only links inside are refused."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (tmp_path / "runs").symlink_to(scratch)
    train(tmp_path / "runs" / "x")
    assert read_json(scratch / "x" / "meta.json")["status"] == "finished"


def test_evaluate_replaces_a_linked_test_metrics_file_and_leaves_its_target_alone(copy_of, tmp_path):
    results = copy_of()
    target = tmp_path / "elsewhere.json"
    target.write_text("keep me\n")
    (results / "test_metrics.json").symlink_to(target)
    run_script("bin/evaluate.py", results)
    assert target.read_text() == "keep me\n"
    assert not (results / "test_metrics.json").is_symlink()
    assert "test_acc" in read_json(results / "test_metrics.json")


# -- hard links -------------------------------------------------------------------------------------------------


def test_published_weights_are_copies_so_saving_over_them_does_not_change_the_run(finished, tmp_path):
    """model.pt and best_model.pt share no inode with a checkpoint: a user who saves other weights over them (in
    place, as torch.save does) leaves the checkpoint intact, and the resumed run ends as one never touched."""
    results = Path(shutil.copytree(finished, tmp_path / "run"))
    newest = sorted((results / "checkpoints").glob("step_*"))[-1]
    for name in ("model.pt", "best_model.pt"):
        assert os.stat(results / name).st_nlink == 1, name
        assert not os.path.samefile(results / name, newest / "model.pt"), name
        zeros = {key: torch.zeros_like(value) for key, value in torch.load(results / name, weights_only=True).items()}
        with open(results / name, "r+b") as f:  # overwrite in place, on the same inode
            torch.save(zeros, f)
    train(results, "--num_epochs=5")
    reference = tmp_path / "reference"
    train(reference, "--num_epochs=5")
    for name in ("model.pt", "best_model.pt"):
        resumed = torch.load(results / name, weights_only=True)
        expected = torch.load(reference / name, weights_only=True)
        assert all(torch.equal(resumed[key], expected[key]) for key in expected), name
    losses = [[row["train_loss"] for row in read_history(folder)] for folder in (results, reference)]
    assert losses[0] == losses[1]


def test_logs_and_lock_hard_linked_to_outside_files_leave_them_unchanged(copy_of, tmp_path):
    results = copy_of()
    outside = {}
    for name in ("stdout.txt", "stderr.txt", ".lock"):
        outside[name] = tmp_path / f"outside_{name.strip('.')}"
        outside[name].write_text("keep me\n")
        (results / name).unlink(missing_ok=True)
        os.link(outside[name], results / name)
    train(results, "--num_epochs=4")
    for name, path in outside.items():
        assert path.read_text() == "keep me\n", name
    assert "epoch 4/4" in (results / "stdout.txt").read_text()
    assert (results / "stdout.txt").read_text().startswith("keep me\n"), "the log's earlier content is kept"


# -- files edited by hand or crafted -----------------------------------------------------------------------------


def craft_huge_declared_tensor(path: Path, like: Path, numel: int) -> None:
    """Rewrite ``like`` (a one-tensor file written by torch.save) so its tensor declares ``numel`` float32 values,
    stored as a deflated zip record of zeros: a small file that would inflate to ``4 * numel`` bytes."""
    with zipfile.ZipFile(like) as source, zipfile.ZipFile(path, "w") as out:
        (pickle_name,) = [n for n in source.namelist() if n.endswith("data.pkl")]
        (record,) = [n for n in source.namelist() if n.endswith("/data/0")]
        for info in source.infolist():
            data = source.read(info.filename)
            if info.filename == pickle_name:
                size = b"J" + struct.pack("<i", numel)
                data = data.replace(b"K\x03tq", size + b"tq").replace(b"K\x00K\x03\x85", b"K\x00" + size + b"\x85")
                assert size in data, "the pickle changed its layout: update this test"
            if info.filename == record:
                info = zipfile.ZipInfo(record)
                info.compress_type = zipfile.ZIP_DEFLATED
                with out.open(info, "w", force_zip64=True) as f:
                    for _ in range(numel * 4 // 2**24):
                        f.write(bytes(2**24))
                continue
            out.writestr(info, data)


# Runs a project script in a child process and prints "EXIT_CODE PEAK_RESIDENT_MB" as its last line.
PEAK_SCRIPT = """
import resource, runpy, sys
sys.argv = sys.argv[1:]
sys.path.insert(0, ".")
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
    code = 0
except SystemExit as exit:
    code = exit.code
print(code, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def run_measured(*args) -> tuple[int, float, subprocess.CompletedProcess]:
    """``python SCRIPT ARGS...`` (from the project root): exit code, peak resident memory in MB, the process."""
    result = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT, *map(str, args)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    code, peak = result.stdout.strip().splitlines()[-1].split()
    return int(code), float(peak), result


DECLARED = 2**26  # float32 values: 256 MB, in a file of about 256 kB


@pytest.fixture(scope="module")
def crafted_weights(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("crafted")
    torch.save({"output.bias": torch.zeros(3)}, folder / "one.pt")
    craft_huge_declared_tensor(folder / "crafted.pt", folder / "one.pt", numel=DECLARED)
    plain = f"import torch; print(torch.load({str(folder / 'crafted.pt')!r}, weights_only=True)['output.bias'].numel())"
    check = subprocess.run([sys.executable, "-c", plain], capture_output=True, text=True, timeout=TIMEOUT_S)
    assert check.stdout.strip() == str(DECLARED), "the crafted file is a valid file that a plain torch.load inflates"
    return folder / "crafted.pt"


@pytest.mark.parametrize("where", ["model.pt", "newest checkpoint"])
def test_a_crafted_weights_file_is_refused_in_memory_bounded_by_its_size(copy_of, crafted_weights, where):
    """A small weights file declaring a 256 MB tensor (a deflated record, which a plain load inflates): bin/evaluate.py
    refuses model.pt with one line, and a resumed run sets the checkpoint aside, without the memory for it."""

    def command(folder: Path) -> tuple:
        if where == "model.pt":
            return ("bin/evaluate.py", folder, "--weights=last")
        return ("bin/train.py", IRIS[0], folder, *IRIS[1:], "--num_epochs=4")  # resumes from the newest checkpoint

    _, baseline, _ = run_measured(*command(copy_of("uncrafted")))
    results = copy_of()
    newest = sorted((results / "checkpoints").glob("step_*"))[-1]
    crafted = results / "model.pt" if where == "model.pt" else newest / "model.pt"
    shutil.copyfile(crafted_weights, crafted)
    assert crafted.stat().st_size < DECLARED // 100
    code, peak, result = run_measured(*command(results))
    if where == "model.pt":
        assert code == 2, result.stdout + result.stderr
        assert "model.pt" in one_error_line(result)
    else:
        assert code == 0, result.stdout + result.stderr
        assert f"{newest.name} is unreadable" in result.stderr and "Traceback" not in result.stderr
        assert (newest.parent / f"unreadable_{newest.name}").is_dir()
    assert peak < baseline + 128, f"peak {peak:.0f} MB against {baseline:.0f} MB for the real file: it was inflated"


@pytest.mark.parametrize("name", ["meta.json", "config.json"])
def test_a_garbage_json_file_is_one_line_naming_it_and_nothing_is_written(copy_of, name):
    results = copy_of()
    (results / name).write_text("{garbage")
    before = snapshot(results)
    result = train(results, "--num_epochs=4", check=False)
    assert result.returncode == 2, result.stderr
    line = one_error_line(result)
    assert str(results / name) in line
    assert snapshot(results) == before
    if name == "config.json":  # the way out the line names
        assert "--allow-config-change" in line
        train(results, "--num_epochs=4", "--allow-config-change")
        assert read_json(results / "config.json")["num_epochs"] == 4
    else:
        assert "delete it" in line
        (results / name).unlink()
        train(results, "--num_epochs=4")
        assert [s["status"] for s in read_json(results / "meta.json")["sessions"]] == ["finished"]


@pytest.mark.parametrize(
    "damage", ["empty", "header only", "garbage", "a row missing"], ids=lambda d: d.replace(" ", "-")
)
def test_a_damaged_history_is_one_line_naming_it(copy_of, damage):
    """Rows the newest checkpoint covers cannot be written again: their loss is one line saying what to do."""
    results = copy_of()
    path = results / "history.csv"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text({"empty": "", "header only": lines[0], "garbage": "\x00\x01,,\n1,2\n", "a row missing": "".join(
        lines[:2] + lines[3:])}[damage])  # fmt: skip
    before = path.read_bytes()
    result = train(results, "--num_epochs=4", check=False)
    assert result.returncode == 1, result.stderr
    line = one_error_line(result)
    assert str(path) in line and "restore it" in line, line
    assert path.read_bytes() == before
    assert read_json(results / "meta.json")["status"] == "failed"


# -- odd RESULTS_DIR values -----------------------------------------------------------------------------------


def test_results_dir_that_is_a_file_is_one_line(tmp_path):
    path = tmp_path / "a_file"
    path.write_text("mine\n")
    for results in (path, path / "below"):
        result = train(results, check=False)
        assert result.returncode == 2
        assert str(path) in one_error_line(result)
    assert path.read_text() == "mine\n"


def test_results_dir_with_bytes_that_are_not_utf8(tmp_path):
    results = Path(os.fsdecode(bytes(tmp_path) + b"/run-\xff\xfe"))
    result = train(results, env={**os.environ, "PYTHONIOENCODING": "utf-8"})
    assert "Traceback" not in result.stderr, result.stderr
    assert read_json(results / "meta.json")["status"] == "finished"
    assert "run-\\udcff\\udcfe" in result.stdout, "the path is printed with the bytes escaped"


@contextlib.contextmanager
def read_only_copy(folder: Path, mount_point: Path):
    """``folder`` copied into a tmpfs that is then made read-only (root can write through chmod, not a ro mount)."""
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", mount_point], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.decode().strip()}): needs root")
    try:
        copy = Path(shutil.copytree(folder, mount_point / folder.name))
        subprocess.run(["mount", "-o", "remount,ro", mount_point], check=True, capture_output=True)
        yield copy
    finally:
        subprocess.run(["umount", "-l", mount_point], capture_output=True)


def test_evaluate_on_a_read_only_results_directory_prints_the_metrics_then_one_line(finished, tmp_path):
    with read_only_copy(finished, tmp_path / "ro") as results:
        result = run_script("bin/evaluate.py", results, check=False)
    assert result.returncode == 1
    assert "test_loss" in result.stdout and "test_acc" in result.stdout
    line = one_error_line(result)
    assert "test_metrics.json" in line and "Read-only file system" in line, line


# -- meta.json: what each session ran -----------------------------------------------------------------------


def test_a_resume_with_a_changed_config_records_its_command_the_changes_and_the_epochs(copy_of):
    """Each entry of meta.json's sessions says what that process ran: with --allow-config-change, which values
    changed and from which epoch on; a plain resume changes nothing."""
    results = copy_of()
    changed = ("--num_epochs=5", "--optimizer.lr=0.01")
    result = train(results, *changed, "--allow-config-change")
    assert "Resuming with a changed config: optimizer.lr: 0.05 -> 0.01" in result.stdout
    train(results, *changed)  # the same command again: nothing to do, nothing changed
    meta = read_json(results / "meta.json")
    first, second, third = meta["sessions"]
    assert [first["status"], second["status"], third["status"]] == ["finished"] * 3
    expected = ["bin/train.py", IRIS[0], str(results), *IRIS[1:], *changed, "--allow-config-change"]
    assert second["command"][1:] == expected
    assert third["command"] == meta["command"] and third["command"][1:] == second["command"][1:-1]
    for session in (first, second, third):
        assert session["hostname"] == socket.gethostname()
        assert (session["git_commit"], session["git_dirty"]) == (meta["git_commit"], meta["git_dirty"])
    assert first["config_changes"] == [] and third["config_changes"] == []
    changes = {change["key"]: (change["old"], change["new"]) for change in second["config_changes"]}
    assert changes == {"num_epochs": (3, 5), "optimizer.lr": (0.05, 0.01)}
    assert first["epochs"] == [1, 3] and second["epochs"] == [4, 5] and third["epochs"] is None
    steps_per_epoch = first["steps"][1] // 3
    assert first["steps"] == [1, 3 * steps_per_epoch]
    assert second["steps"] == [3 * steps_per_epoch + 1, 5 * steps_per_epoch]
    assert third["steps"] is None


def test_a_session_is_listed_from_its_start_and_a_killed_one_keeps_that_entry(tmp_path):
    results = tmp_path / "results"
    args = ("bin/train.py", IRIS[0], results, "--device=cpu", "--num_epochs=400")
    process = start_script(*args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while not (results / "meta.json").exists():
            assert process.poll() is None and time.monotonic() < deadline, "the run never wrote meta.json"
            time.sleep(0.02)
        running = read_json(results / "meta.json")
    finally:
        kill_process(process)
    assert running["status"] == "running" and len(running["sessions"]) == 1
    entry = running["sessions"][0]
    assert entry["status"] == "running" and entry["end_time"] is None and entry["start_time"] == running["start_time"]
    assert entry["command"] == running["command"] and entry["config_changes"] == []
    run_script(*args[:-1], "--num_epochs=1")  # resumes (nothing to do) or starts again: either way, quickly
    died, last = read_json(results / "meta.json")["sessions"]
    assert died["status"] == "died" and "killed" in died["reason"], died
    assert {**died, "status": "running", "reason": None} == entry, "the entry is kept as written at its start"
    assert last["status"] == "finished"


def git(folder: Path, *args: str) -> str:
    config = ("-c", "user.name=test", "-c", "user.email=test@example.com", "-c", "commit.gpgsign=false")
    done = subprocess.run(["git", *config, "-C", folder, *args], capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_dirty_git_tree_saves_its_diff_beside_meta_json_and_a_clean_one_none(tmp_path):
    """The code's uncommitted changes are saved as git_diff_<session>.patch, a patch that git applies; a clean tree
    (after a commit) saves nothing.  The code runs from a git repository of its own, made here."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    code = tmp_path / "code"
    ignore = shutil.ignore_patterns("__pycache__")
    for folder in ("bin", "{{ cookiecutter.proj_name }}"):
        shutil.copytree(PROJECT_ROOT / folder, code / folder, ignore=ignore)
    git(code, "init", "-q")
    git(code, "add", "-A")
    git(code, "commit", "-q", "-m", "the code")
    changed = code / "{{ cookiecutter.proj_name }}" / "__init__.py"
    with open(changed, "a") as f:
        f.write("# an uncommitted change\n")
    results = tmp_path / "results"
    command = (code / "bin" / "train.py", IRIS[0], results, *IRIS[1:])
    run_script(*command, cwd=tmp_path)
    session = read_json(results / "meta.json")["sessions"][0]
    assert session["git_dirty"] is True and session["git_diff"] == "git_diff_1.patch", session
    assert session["git_diff_note"] is None
    patch = (results / "git_diff_1.patch").read_text()
    assert "a/{{ cookiecutter.proj_name }}/__init__.py" in patch and "+# an uncommitted change" in patch
    git(code, "apply", "--check", "--reverse", results / "git_diff_1.patch")
    assert git_diff(code, limit=10) == (None, "not saved: larger than 10 bytes")
    assert git_diff(tmp_path)[1].startswith("not saved: git diff exited")  # not a git tree

    git(code, "commit", "-q", "-am", "the change")
    run_script(*command, "--num_epochs=4", cwd=tmp_path)
    meta = read_json(results / "meta.json")
    first, second = meta["sessions"]
    assert (second["git_dirty"], second["git_diff"], second["git_diff_note"]) == (False, None, None)
    assert second["git_commit"] == meta["git_commit"] != first["git_commit"]
    assert sorted(p.name for p in results.glob("git_diff_*")) == ["git_diff_1.patch"]
