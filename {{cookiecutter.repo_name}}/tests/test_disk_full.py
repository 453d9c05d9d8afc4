"""A full disk, for real: a small tmpfs that another process fills, before a run starts or while it trains.

The promise under test: a full disk at any moment ends the run with exit 1 and one line on stderr (no
traceback) naming the write that failed; meta.json, once the session got as far as creating it, says
``failed`` and why; no session is left ``running``; nothing is left behind that would stop a rerun.  Once
space is freed, the same command resumes to the bitwise result of a run on a normal disk.

Each test mounts a tmpfs of its own (``mount(2)``: the tests run as root in CI) and skips, saying why, only
where mounting is not permitted.  A filler process takes the free space:

* before the run starts, leaving a seeded room that spans everything a run writes: nothing, a page or two,
  less than the reserve that ``ResultsDir.start`` sets aside, room up to one of the first files, into the
  training, up to the first epoch end's first lines (history.csv, TensorBoard events, stdout.txt), all a run
  needs at its peak; and a resumed run with room for little more than its reserve;
* while the run trains, once its newest checkpoint reaches a seeded step; ``greedy``, it then goes on taking
  every page the run frees (the room it gives back for its last words too).

tmpfs hands out whole pages, so rooms are counted in pages; the landmarks come from the engine's constants
and the sizes of the reference run's files.  The test names the write that hit the full disk in each case
(its message and meta.json's reason name the file; ``pytest -rP`` prints them).  A direct test covers the
history.csv a full disk cuts short, and one bin/compare.py on such files.

The reference run is conftest.py's ``iris_reference``, shared with the other fault-tolerance tests (and across
pytest-xdist workers) by ``fault_helpers.shared``.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import io
import math
import os
import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TIMEOUT_S, kill_process, read_history, read_json, start_process, start_script
from fault_helpers import (
    IRIS_STEPS_PER_EPOCH,
    assert_same_run,
    env_with_faults,
    shared,
    train,
    train_command,
)

from {{ cookiecutter.proj_name }} import experiment
from {{ cookiecutter.proj_name }}.engine.results import LOG_ROOM, RESERVE_BYTES, ResultsDir

SEED = 20261130
DISK_BYTES = 2 * 2**20  # 4x what a run needs at its peak: 0.43 MiB (256 KiB of it the reserve), when measured
TOTAL_STEPS = 20 * IRIS_STEPS_PER_EPOCH
# The iris run of fault_helpers.py, but with no checkpoint inside an epoch: its first epoch end writes
# nothing but first lines (history.csv, the TensorBoard event file, stdout.txt) before the first checkpoint.
NO_STEP_CHECKPOINTS = ("--checkpoint.every_steps=0",)
SMALL_WRITERS = {"history.csv", "events", "stdout.txt"}
MNT_DETACH = 2
# python -c FILLER PATH LEAVE MODE: take all the free space of PATH's file system but LEAVE bytes, at once (MODE
# "now") or once a line comes on stdin ("wait"); "greedy" then goes on taking every page freed, until killed.
FILLER = """
import os, sys
path, leave, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if mode != "now":
    sys.stdin.readline()
st = os.statvfs(os.path.dirname(path))
todo = max(st.f_bavail * st.f_frsize - leave, 0)
block = bytes(1 << 16)
with open(path, "xb", buffering=0) as f:
    while todo > 0:
        try:
            todo -= f.write(block[: min(todo, len(block))])
        except OSError:  # the run took the rest meanwhile
            break
    while mode == "greedy":
        try:
            f.write(block)
        except OSError:
            pass
"""

_rng = random.Random(SEED)
# Free room before the run starts, as (case, seeded number): see room_before_start for what each means.
BEFORE_START = [
    ("nothing", 0),
    ("a-few-KB", _rng.randrange(1, 3)),
    ("less-than-the-reserve", _rng.random()),
    ("up-to-a-first-file", _rng.choice([0, 2, 3])),
    ("into-training", _rng.random()),  # between the first files and all a run needs (the top of which suffices)
    ("all-a-run-needs", 0),
    ("up-to-the-first-epoch-end", 0),  # the case: often the first history row
    ("up-to-the-first-epoch-end", 2),  # then TensorBoard events or stdout.txt
    # A resumed run (from RESUME_STEP) with room for .lock, its reserve and a page: meta.json is replaced, then
    # the copy of the checkpoint's weights to model.pt (two pages) does not fit.
    ("resuming", 1),
]
# Filler started while the run trains: (the newest checkpoint's step that starts it, pages it leaves free, mode).
WHILE_TRAINING = [
    (2 * _rng.randrange(2, TOTAL_STEPS // 2 - 4), _rng.randrange(3), "wait"),
    (2 * _rng.randrange(2, TOTAL_STEPS // 2 - 4), 0, "greedy"),
]
RESUME_STEP = 2 * _rng.randrange(4, TOTAL_STEPS // 2 - 4)


# -- the disk ----------------------------------------------------------------------------------------------


@pytest.fixture
def disk(tmp_path) -> Path:
    """A tmpfs of DISK_BYTES mounted at ``tmp_path/disk``, unmounted at the end (lazily if a file is still open)."""
    if not sys.platform.startswith("linux"):
        pytest.skip("a real full disk needs a tmpfs mount (Linux)")
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p)
    libc.umount2.argtypes = (ctypes.c_char_p, ctypes.c_int)
    target = os.fsencode(mount_point)
    if libc.mount(b"tmpfs", target, b"tmpfs", 0, f"size={DISK_BYTES}".encode()) != 0:
        code = ctypes.get_errno()
        if code in (errno.EPERM, errno.EACCES):
            pytest.skip(f"mounting a tmpfs is not permitted here ({os.strerror(code)}): needs root or CAP_SYS_ADMIN")
        raise OSError(code, f"mount -t tmpfs: {os.strerror(code)}", str(mount_point))
    try:
        yield mount_point
    finally:
        if libc.umount2(target, 0) != 0:
            libc.umount2(target, MNT_DETACH)


def page_size(disk: Path) -> int:
    return os.statvfs(disk).f_frsize  # tmpfs counts whole pages


def pages(size: int, page: int) -> int:
    return math.ceil(size / page)


def fill(disk: Path, leave: int) -> Path:
    """Another process takes all of ``disk`` but ``leave`` bytes; returns its file (delete it to free the space)."""
    path = disk / "filler"
    process = start_process([sys.executable, "-c", FILLER, path, leave, "now"])
    try:
        assert process.wait(TIMEOUT_S) == 0
    finally:
        kill_process(process)
    return path


# -- what a run left -----------------------------------------------------------------------------------------


def writer_of(line: str) -> str:
    """The write that hit the full disk, as the error line (or meta.json's reason) names it."""
    if "could not write checkpoint" in line:
        return "checkpoint"
    named = re.search(r"No space left on device: '([^']+)'", line) or re.search(r"could not write (\S+):", line)
    if not named:
        return "unnamed"
    name = Path(named.group(1)).name
    return "events" if name.startswith("events.out.tfevents") else name


def leftovers(results: Path) -> list[str]:
    """Temporary files and folders of writes, the reserve and the lock: nothing of these may outlive a session."""
    return sorted(str(p.relative_to(results)) for p in results.rglob(".*"))


def check_stopped_by_the_full_disk(result: subprocess.CompletedProcess, results: Path, context: str) -> str:
    """What a run stopped by the full disk must leave: exit 1, one line, meta.json failed and why.  Returns the
    writer that hit the full disk."""
    context = f"{context}\n--- stderr ---\n{result.stderr}"
    assert result.returncode == 1, context
    assert "Traceback" not in result.stderr, context
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), f"not one error line; {context}"
    line = lines[0]
    assert "No space left on device" in line, context
    writer = writer_of(line)
    assert writer != "unnamed", f"the line names no file; {context}"
    if line.startswith(f"error: cannot use {results}:"):
        # Taking the folder failed: the session never started, so nothing is left (the folder made for it goes).
        assert not results.exists(), f"left: {sorted(p.name for p in results.iterdir())}; {context}"
        return writer
    assert leftovers(results) == [], f"left behind: {leftovers(results)}; {context}"
    meta_path = results / "meta.json"
    if "could not record the end of the run" in line:  # not even meta.json fitted: it was never written
        assert not meta_path.exists(), context
        return writer
    # The session created meta.json (start() writes it once the reserve is set aside; finish() writes it if
    # start() failed): it says failed, and why, and stderr.txt holds the line.
    meta = read_json(meta_path)
    assert meta["status"] == "failed", f"meta.json: {meta['status']}; {context}"
    assert "No space left on device" in meta["reason"] and writer_of(meta["reason"]) == writer, context
    statuses = [session["status"] for session in meta["sessions"]]
    assert statuses[-1] == "failed" and "running" not in statuses and "died" not in statuses, context
    assert line in (results / "stderr.txt").read_text().splitlines(), f"stderr.txt lacks the line; {context}"
    return writer


def compare_table(folder: Path) -> str:
    """The table of ``bin/compare.py FOLDER --per-run --table-only`` (called in this process: pandas is imported
    once per worker; nothing written, the disk may be full)."""
    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert experiment.main_compare(["bin/compare.py", str(folder), "--per-run", "--table-only"]) == 0
    return out.getvalue()


def free_and_rerun(filler: Path, command: tuple, results: Path, reference: Path, context: str) -> None:
    """List the run as the full disk left it, free the space: the same command resumes (or starts again) and ends
    exactly as the uninterrupted run."""
    print(context)  # shown with -rP: which write each case stopped
    if (results / "meta.json").exists():
        assert "failed" in compare_table(results), context
    filler.unlink()
    train(*command)
    assert_same_run(results, reference, context)
    statuses = [session["status"] for session in read_json(results / "meta.json")["sessions"]]
    assert statuses[-2:] in (["finished"], ["failed", "finished"]), f"{statuses}; {context}"
    assert "running" not in statuses and "died" not in statuses, f"{statuses}; {context}"
    assert "finished" in compare_table(results), context


def room_before_start(case: str, seeded: float, reference: Path, page: int) -> tuple[int, str | None]:
    """Free bytes to leave before the run starts, and the writer that must then hit the full disk (None: any).

    A new run first writes .lock (a page), the reserve, meta.json, the room kept past the end of stderr.txt
    (skipped where it does not fit), config.json and train.py, each a new file, then trains: checkpoints,
    history.csv, TensorBoard events, stdout.txt.  ``all-a-run-needs`` adds up a finished run's files, one more
    checkpoint and a second copy of every file replaced atomically: more than the run's peak.
    """
    held = {p.name: pages(p.stat().st_size, page) for p in reference.iterdir() if p.is_file()}
    held["stderr.txt"] += pages(LOG_ROOM, page)  # kept past its end (on the reference's disk too, if it can)
    reserve = pages(max(RESERVE_BYTES, 2 * (reference / "meta.json").stat().st_size), page)
    first_files = [(name, held[name]) for name in ("meta.json", "stderr.txt", "config.json", "train.py")]
    started = 1 + reserve + sum(n for _, n in first_files)  # pages held once train.py is written
    if case == "nothing":
        return 0, ".lock"
    if case == "a-few-KB":  # the lock's page, and at most one more: neither the reserve nor meta.json fits
        return int(seeded) * page, ".reserve"
    if case == "less-than-the-reserve":
        return page * (1 + int(seeded * reserve)), ".reserve"
    if case == "up-to-a-first-file":  # room for the first files before the seeded one
        name = first_files[int(seeded)][0]
        return page * (1 + reserve + sum(n for _, n in first_files[: int(seeded)])), name
    if case == "up-to-the-first-epoch-end":  # NO_STEP_CHECKPOINTS: room for a few of that epoch end's first lines
        return page * (started + int(seeded)), "small"
    if case == "resuming":  # meta.json is replaced, the checkpoint's weights copied, history.csv rewritten, ...
        return page * (1 + reserve + int(seeded)), None
    files = [p for p in reference.rglob("*") if p.is_file() and not p.name.startswith("samples_")]
    checkpoint = sum(pages(p.stat().st_size, page) for p in max((reference / "checkpoints").glob("step_*")).iterdir())
    replaced = ("model.pt", "best_model.pt", "loop_state.json", "meta.json", "config.json", "history.csv")
    needed = 1 + reserve + pages(LOG_ROOM, page) + sum(pages(p.stat().st_size, page) for p in files) + checkpoint
    needed += sum(held[name] for name in replaced)
    if case == "all-a-run-needs":
        return page * needed, None
    return page * (started + int(seeded * (needed - started))), None  # into-training


# -- the tests ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case, seeded", BEFORE_START, ids=[f"{c}-{s:.3g}" for c, s in BEFORE_START])
def test_a_disk_filled_before_the_run_stops_it_cleanly_and_the_rerun_ends_bitwise_equal(
    case, seeded, disk, iris_reference, request
):
    """The disk is full but for a seeded room before the run starts: the run fails cleanly at the write that no
    longer fits (one of the first files, the reserve, a checkpoint, the first epoch's lines, a resumed run's
    first writes) or, given all a run needs, finishes; after the space is freed the same command ends exactly as
    the uninterrupted run."""
    page = page_size(disk)
    room, expected = room_before_start(case, seeded, iris_reference, page)
    results = disk / "results"
    command = train_command("iris", results)
    if case == "up-to-the-first-epoch-end":
        command = (*command, *NO_STEP_CHECKPOINTS)
    context = f"({case}: {room} bytes = {room // page} pages free before the start; seed {SEED})"
    if case == "resuming":
        resumable_copy(request.getfixturevalue("every_checkpoint"), results, RESUME_STEP)
        context = f"{context[:-1]}, resuming from step {RESUME_STEP})"
    filler = fill(disk, room)
    result = train(*command, check=False)
    if case == "all-a-run-needs" or (expected is None and result.returncode == 0):  # the room sufficed
        assert result.returncode == 0, f"{context}\n{result.stderr}"
        assert_same_run(results, iris_reference, context)
        assert "finished" in compare_table(results), context
        return
    writer = check_stopped_by_the_full_disk(result, results, context)
    context = f"{context}; the full disk stopped the write of {writer}"
    if expected == "small":  # the first epoch end: its history row, TensorBoard events or summary line
        assert writer in SMALL_WRITERS, context
    elif expected is not None:
        assert writer == expected, context
    if writer == "history.csv":  # the case: the first row cut short (or not begun), no checkpoint yet
        assert not list(results.glob("checkpoints/step_*")), context
    free_and_rerun(filler, command, results, iris_reference, context)


@pytest.mark.parametrize(
    "step, leave, mode", WHILE_TRAINING, ids=[f"step-{s}-{m}-leave-{n}" for s, n, m in WHILE_TRAINING]
)
def test_a_disk_filled_while_the_run_trains_stops_it_cleanly_and_the_rerun_ends_bitwise_equal(
    step, leave, mode, disk, iris_reference, tmp_path
):
    """Another process fills the disk (but ``leave`` pages) once the run's newest checkpoint reaches a seeded
    step, and, ``greedy``, goes on taking every page freed (the room the run gives back for its last words
    too): the run fails cleanly, or had already finished; after the space is freed the same command ends
    exactly as the uninterrupted run."""
    results = disk / "results"
    command = train_command("iris", results)
    context = f"(filled, {mode}, but {leave} pages once checkpoint step {step} was written; seed {SEED})"
    filler_path = disk / "filler"
    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    leave_bytes = leave * page_size(disk)
    with open(out, "w") as stdout, open(err, "w") as stderr:
        filler = start_process([sys.executable, "-c", FILLER, filler_path, leave_bytes, mode], stdin=subprocess.PIPE)
        trainer = start_script("bin/train.py", *command, stdout=stdout, stderr=stderr, env=env_with_faults())
        try:
            deadline = time.monotonic() + TIMEOUT_S
            while trainer.poll() is None and newest_step(results) < step and time.monotonic() < deadline:
                time.sleep(0.002)
            filler.stdin.write(b"go\n")
            filler.stdin.close()
            trainer.wait(TIMEOUT_S)
            if mode != "greedy":
                assert filler.wait(TIMEOUT_S) == 0
        finally:
            kill_process(trainer)
            kill_process(filler)  # greedy: only now
    result = subprocess.CompletedProcess(trainer.args, trainer.returncode, out.read_text(), err.read_text())
    if result.returncode == 0:  # the run ended before the filler came
        assert_same_run(results, iris_reference, context)
        return
    writer = check_stopped_by_the_full_disk(result, results, context)
    free_and_rerun(
        filler_path, command, results, iris_reference, f"{context}; the full disk stopped the write of {writer}"
    )


def newest_step(results: Path) -> int:
    try:
        names = os.listdir(results / "checkpoints")
    except OSError:
        return 0
    return max((int(name[5:]) for name in names if name.startswith("step_")), default=0)


# -- history.csv left by a full disk -------------------------------------------------------------------------


def test_a_history_row_that_only_partly_fits_is_an_error_at_once(disk):
    """A row of which the full disk takes only the start (a short write) fails that very append, naming
    history.csv: the run stops there, and no checkpoint can come to cover half a row."""
    folder = disk / "results"
    folder.mkdir()
    results, page = ResultsDir(folder), page_size(disk)
    row = {"epoch": 0, "train_loss": 0.123456789, "time": "2026-11-30T00:00:00+00:00"}
    results.append_history(row)
    fill(disk, 0)  # the rest of history.csv's page is all the room left
    failed = None
    for epoch in range(1, page):
        before = results.history_path.stat().st_size
        try:
            results.append_history({**row, "epoch": epoch})
        except OSError as err:
            failed = err
            break
    assert failed is not None and failed.errno == errno.ENOSPC, failed
    assert before < page == results.history_path.stat().st_size, "the row that failed was the one cut short"
    assert failed.filename == str(results.history_path), failed


@pytest.fixture(scope="module")
def every_checkpoint(tmp_path_factory) -> Path:
    """The reference run, keeping every checkpoint (a resumable change): any step can be resumed from."""

    def build(folder: Path) -> dict:
        train(*train_command("iris", folder / "results"), "--checkpoint.keep=1000")
        return {"results": str(folder / "results")}

    return Path(shared(tmp_path_factory, "iris_every_checkpoint", build)["results"])


def resumable_copy(source: Path, results: Path, step: int) -> Path:
    """A copy of the run in ``source`` holding its checkpoints of ``step`` and the one before (as ``keep=2`` does),
    so that it resumes from ``step``."""

    def newer_or_older(folder: str, names: list[str]) -> list[str]:
        return [name for name in names if name.startswith("step_") and not step - 2 <= int(name[5:]) <= step]

    return Path(shutil.copytree(source, results, ignore=newer_or_older))


def cut(line: str) -> str:
    return line[: len(line) // 2]


# (step resumed from, what history.csv holds): a write cut short by a full disk, or the lone line break.
DAMAGED_HISTORIES = {
    "empty": (4, lambda lines: ""),
    "a-lone-line-break": (4, lambda lines: "\n"),
    "a-cut-header": (4, lambda lines: cut(lines[0])),
    "the-header-and-a-cut-row": (4, lambda lines: lines[0] + cut(lines[1])),
    "a-cut-second-row": (10, lambda lines: "".join(lines[:2]) + cut(lines[2])),
}


@pytest.mark.parametrize("damage", DAMAGED_HISTORIES)
def test_a_history_cut_by_a_full_disk_is_completed_with_its_header(damage, every_checkpoint, iris_reference, tmp_path):
    """A full disk while a history row is written leaves history.csv empty, or with a cut header or row, and no
    checkpoint covers that row: the run resumed from the newest checkpoint drops what it does not cover and
    writes the rest again, so the history has its header and equals the uninterrupted run's."""
    step, damaged = DAMAGED_HISTORIES[damage]
    results = resumable_copy(every_checkpoint, tmp_path / "results", step)
    lines = (iris_reference / "history.csv").read_text().splitlines(keepends=True)
    (results / "history.csv").write_text(damaged(lines))
    context = f"(history.csv holding {damage}, resumed from step {step})"
    rerun = train(*train_command("iris", results))
    assert f"Resuming from checkpoints/step_{step:09d}" in rerun.stdout, context
    assert list(read_history(results)[0]) == list(read_history(iris_reference)[0]), f"the header; {context}"
    assert_same_run(results, iris_reference, context)
    assert "finished" in compare_table(results), context


@pytest.mark.parametrize(
    "history",
    ["", "epoch,train_lo", "\n", "1,0.5,0.7\n2,0.4,0.8\n"],
    ids=["empty", "a-cut-header", "a-lone-line-break", "no-header"],
)
def test_compare_survives_a_damaged_history(history, tmp_path):
    """One run's damaged history.csv (what a full disk or the old rerun left) does not stop bin/compare.py."""
    run = tmp_path / "runs" / "damaged"
    run.mkdir(parents=True)
    (run / "meta.json").write_text('{"status": "failed"}\n')
    (run / "history.csv").write_text(history)
    assert "damaged" in compare_table(tmp_path / "runs")
