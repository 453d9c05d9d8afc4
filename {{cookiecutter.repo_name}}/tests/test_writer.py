"""The background writer: history rows and checkpoints land in order, a failure is never lost, memory stays bounded."""

from __future__ import annotations

import threading

import pytest

from {{ cookiecutter.proj_name }}.engine.writer import BackgroundWriter

TIMEOUT_S = 10


def start_slow_checkpoint(writer: BackgroundWriter, done: list, name: str) -> threading.Event:
    """Hand over a checkpoint that is being written until the returned event is set; it then appends ``name``."""
    release, writing = threading.Event(), threading.Event()

    def slow_checkpoint():
        writing.set()
        assert release.wait(TIMEOUT_S)
        done.append(name)

    writer.submit(slow_checkpoint, checkpoint=True)
    assert writing.wait(TIMEOUT_S)
    return release


def test_jobs_run_in_the_order_they_were_handed_over_and_wait_returns_after_the_last():
    writer, done = BackgroundWriter(), []
    for i in range(20):
        writer.submit(lambda i=i: done.append(i), checkpoint=i % 3 == 0)
    writer.wait()
    assert done == list(range(20))
    writer.close()


def test_a_failed_write_is_raised_in_the_training_thread_and_nothing_after_it_is_written(capsys):
    writer, done = BackgroundWriter(), []

    queued = threading.Event()

    def disk_full():
        assert queued.wait(TIMEOUT_S)  # fail only once the next row is queued behind this write
        raise OSError(28, "No space left on device")

    writer.submit(lambda: done.append("history row"))
    writer.submit(disk_full, checkpoint=True)
    writer.submit(lambda: done.append("next history row"))
    queued.set()
    with pytest.raises(OSError, match="No space left"):
        writer.wait()
    with pytest.raises(OSError, match="No space left"):  # never silently dropped: every later call says so
        writer.submit(lambda: done.append("after the failure"))
    writer.close()
    assert done == ["history row"]
    assert capsys.readouterr().err == "", "an error already raised is not printed again"


def test_abandoning_finishes_the_write_in_progress_and_drops_the_rest():
    """A second Ctrl-C: the checkpoint being written completes, queued ones are dropped."""
    writer, done = BackgroundWriter(), []
    release = start_slow_checkpoint(writer, done, "in progress")
    writer.submit(lambda: done.append("queued row"))
    writer.submit(lambda: done.append("queued checkpoint"), checkpoint=True)
    threading.Timer(0.2, release.set).start()
    writer.close(abandon=True)
    assert done == ["in progress"]


def test_close_finishes_what_was_handed_over_and_prints_an_unreported_failure(capsys):
    writer, done = BackgroundWriter(), []
    writer.submit(lambda: done.append(1))
    writer.submit(lambda: 1 / 0)
    writer.close()
    assert done == [1]
    assert "a background write failed: division by zero" in capsys.readouterr().err


def test_a_third_checkpoint_waits_until_the_writer_has_caught_up():
    """At most one checkpoint waits while one is written: a slow disk throttles training instead of filling memory."""
    writer, done = BackgroundWriter(), []
    release = start_slow_checkpoint(writer, done, "first")
    writer.submit(lambda: done.append("second"), checkpoint=True)  # waits in the queue; returns at once
    writer.submit(lambda: done.append("history row"))  # rows are never held back
    third_submitted = threading.Event()

    def third():
        writer.submit(lambda: done.append("third"), checkpoint=True)
        third_submitted.set()

    thread = threading.Thread(target=third)
    thread.start()
    assert not third_submitted.wait(0.3), "a third checkpoint was queued while two were pending"
    release.set()
    assert third_submitted.wait(TIMEOUT_S)
    thread.join(TIMEOUT_S)
    writer.wait()
    assert done == ["first", "second", "history row", "third"]
    writer.close()
