"""Speed options change how a run computes, not what: the DataLoader path trains bit for bit as the in-memory
path (also stopped and resumed), gradient accumulation as the large batch, and bf16 with channels_last trains
finite weights and resumes exactly.

Real processes, no mocks (see fault_helpers.py).
"""

from __future__ import annotations

import random
import signal

import pytest
import torch
from conftest import read_history
from fault_helpers import (
    CIFAR_EPOCHS,
    CIFAR_STEPS_PER_EPOCH,
    assert_all_finite,
    assert_same,
    assert_same_run,
    history_without_times,
    load,
    newest_checkpoint,
    signal_at_step,
    train,
    train_command,
)


@pytest.mark.parametrize("num_workers, stopped", [(0, False), (2, True)], ids=["0-workers", "2-workers-stopped"])
def test_dataloader_path_trains_exactly_as_the_in_memory_path(
    num_workers, stopped, cifar10_reference, tiny_cifar, tmp_path
):
    """data.loader=dataloader serves the batches and augmentation of the in-memory path: the same weights, bit
    for bit, on CPU; with workers, also when the run is stopped (SIGTERM) mid-epoch and resumed."""
    results = tmp_path / "results"
    command = (
        *train_command("cifar10", results, tiny_cifar),
        "--data.loader=dataloader",
        f"--data.num_workers={num_workers}",
    )
    context = f"(num_workers={num_workers})"
    if stopped:
        step = random.Random(1234).randrange(3, CIFAR_EPOCHS * CIFAR_STEPS_PER_EPOCH - 15)
        process = signal_at_step(results, command, signal.SIGTERM, step, tmp_path / "stopped.txt")
        assert process.returncode == 128 + signal.SIGTERM, (tmp_path / "stopped.txt").read_text()
        context = f"(num_workers={num_workers}, SIGTERM once step {step} was recorded, then resumed)"
    train(*command)
    assert_same(load(results / "model.pt"), load(cifar10_reference / "model.pt"), "model.pt", context)
    assert history_without_times(results) == history_without_times(cifar10_reference), context


def test_gradient_accumulation_matches_the_large_batch(iris_reference, tmp_path):
    """grad_accum_steps=2 with batch_size=8 trains as batch_size=16 does.

    The Iris MLP has no batch-dependent layer (no batch norm, dropout 0); an epoch's permutation depends
    only on (seed, epoch), so each pair of batches of 8 holds the 16 samples of one batch of 16; and each
    half's loss is weighted by its share of samples, so the accumulated gradient is that batch's mean
    gradient.  Only the order of the float additions differs: close, not bitwise equal.
    """
    results = tmp_path / "results"
    train(*train_command("iris", results), "--batch_size=8", "--grad_accum_steps=2")
    weights, expected = load(results / "model.pt"), load(iris_reference / "model.pt")
    assert weights.keys() == expected.keys()
    for key in expected:
        difference = (weights[key] - expected[key]).abs().max().item()
        assert torch.allclose(weights[key], expected[key], rtol=1e-5, atol=1e-5), f"{key}: max difference {difference}"
    assert newest_checkpoint(results).name == newest_checkpoint(iris_reference).name, "as many optimisation steps"
    losses = [float(row["train_loss"]) for row in read_history(results)]
    assert losses == pytest.approx([float(row["train_loss"]) for row in read_history(iris_reference)], rel=1e-4)


def test_bf16_and_channels_last_train_finite_weights_and_resume_exactly(tiny_cifar, tmp_path):
    """precision=bf16 with channels_last=true: finite weights, and a run stopped by SIGUSR1 and resumed = uninterrupted."""
    speed = ("--precision=bf16", "--channels_last=true")
    reference = tmp_path / "reference"
    train(*train_command("cifar10", reference, tiny_cifar), *speed)
    assert_all_finite(reference / "model.pt")
    step = random.Random(1234).randrange(3, CIFAR_EPOCHS * CIFAR_STEPS_PER_EPOCH - 15)
    results = tmp_path / "results"
    command = (*train_command("cifar10", results, tiny_cifar), *speed)
    output = tmp_path / "stopped.txt"
    process = signal_at_step(results, command, signal.SIGUSR1, step, output)
    assert process.returncode == 128 + signal.SIGUSR1, output.read_text()
    rerun = train(*command)
    assert "Resuming from" in rerun.stdout
    assert_same_run(results, reference, f"(bf16, channels_last, SIGUSR1 once step {step} was recorded)")
