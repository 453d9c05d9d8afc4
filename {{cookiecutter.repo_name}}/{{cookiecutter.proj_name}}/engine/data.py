"""Batches for the training loop: from tensors in memory, or through a DataLoader.

Small and medium datasets (Iris, CIFAR-10, MNIST) fit in memory: they are held
as tensors on the training device and batches are cut by index slicing, far
cheaper than a per-sample ``DataLoader`` (see the template's benchmarks).
``DataLoaderBatches`` is the path for data that does not fit.

Both serve epoch ``e`` in the order of a permutation drawn from a generator
seeded with ``(seed, e)``, so any epoch's order can be rebuilt after a restart
without saving it, and both can start an epoch at any batch (mid-epoch resume).
Augmentation (``transform``) runs on whole batches on the training device.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from .signals import SIGNALS, held_back

BatchTransform = Callable[[torch.Tensor], torch.Tensor]


def epoch_seed(seed: int, epoch: int) -> int:
    """A well-mixed 63-bit seed for ``(seed, epoch)``."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def epoch_order(n: int, shuffle: bool, seed: int, epoch: int) -> torch.Tensor:
    """The order of the ``n`` samples in ``epoch``: a permutation seeded with ``(seed, epoch)``.

    Drawn on the CPU (a few milliseconds, once per epoch) and copied to the
    device: a CUDA generator would give another order, so a run resumed on
    another device, or on the other data path, would repeat or skip samples.
    """
    if not shuffle:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(epoch_seed(seed, epoch)))


def num_batches(num_samples: int, batch_size: int, world_size: int, shuffle: bool) -> int:
    """Batches per epoch.  Training (``shuffle``) drops a last batch smaller than the number of processes: one of
    them would have no sample for a step that needs them all.  Evaluation keeps it."""
    full, rest = divmod(num_samples, batch_size)
    return full + (rest >= (world_size if shuffle else 1))


def batch_indices(order: torch.Tensor, batch_size: int, start: int, stop: int, rank: int = 0, world_size: int = 1):
    """The indices of batches ``start..stop-1`` of an epoch in ``order``: this process's share of each (the
    processes split every batch into contiguous parts, as equal as can be)."""
    for batch in range(start, stop):
        index = order[batch * batch_size : (batch + 1) * batch_size]
        yield index.tensor_split(world_size)[rank] if world_size > 1 else index


class InMemoryBatches:
    """Iterate over ``(x, y)`` batches of two tensors with a seeded, reproducible order.

    Args:
        x, y: inputs and targets, first dimension = samples.
        batch_size: samples per batch (the last batch may be smaller).
        shuffle: draw a new order every epoch (training) or keep the stored order.
        seed: base seed of the per-epoch permutations.
        transform: applied to each input batch (augmentation, normalisation).
        rank, world_size: this process takes its share of every batch (``batch_indices``).
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        transform: BatchTransform | None = None,
        rank: int = 0,
        world_size: int = 1,
    ):
        if len(x) != len(y):
            raise ValueError(f"x has {len(x)} samples but y has {len(y)}")
        self.x, self.y = x, y
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.transform = transform
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        """Number of batches per epoch."""
        return num_batches(len(self.x), self.batch_size, self.world_size, self.shuffle)

    @property
    def num_samples(self) -> int:
        return len(self.x)

    def order(self, epoch: int) -> torch.Tensor:
        """Sample indices of ``epoch`` in the order they are served, on the data's device."""
        return epoch_order(len(self.x), self.shuffle, self.seed, epoch).to(self.x.device, non_blocking=True)

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches of ``epoch``, starting at batch ``start_batch`` (to resume mid-epoch)."""
        order = self.order(epoch)
        for index in batch_indices(order, self.batch_size, start_batch, len(self), self.rank, self.world_size):
            # index_select, not x[index]: on the CPU it copies whole rows (10-20x faster for uint8 images).
            x = self.x.index_select(0, index)
            yield (self.transform(x) if self.transform else x), self.y.index_select(0, index)


def _leave_stop_signals_to_the_trainer(worker_id: int) -> None:
    """In loader workers: SIGINT and SIGUSR1 are ignored, SIGTERM ends a worker only when its parent sends it.

    Ctrl-C, SLURM and torchrun signal the whole process group (or every process
    of a job); a worker killed by them would make the trainer fail instead of
    checkpointing and exiting.  The workers start with these signals blocked
    (``DataLoaderBatches.epoch`` forks them inside ``signals.held_back``), so one
    that arrives before this function runs waits instead of killing the worker.
    The parent's own SIGTERM (``Process.terminate``: the DataLoader's and
    multiprocessing's clean-up at exit) must still end the worker, or the
    interpreter would wait for it forever; only ``sigwaitinfo`` tells who sent it.
    Without it (macOS) torch's own SIGTERM handler stays: it exits on the
    parent's SIGTERM, and a group's SIGTERM ends the worker (the run fails, to
    be resumed, but nothing hangs).  Windows ends workers without a signal.
    """
    posix = hasattr(signal, "pthread_sigmask")
    linux = posix and hasattr(signal, "sigwaitinfo")
    for signum in SIGNALS:
        if not (signum == signal.SIGTERM and posix):
            signal.signal(signum, signal.SIG_IGN)  # also drops one that arrived while blocked
    if linux:  # SIGTERM stays blocked in every thread of the worker; this thread takes it
        threading.Thread(target=_exit_when_the_parent_asks, args=(os.getppid(),), daemon=True).start()
    if posix:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, set(SIGNALS) - ({signal.SIGTERM} if linux else set()))


def _exit_when_the_parent_asks(parent: int) -> None:
    while True:
        if signal.sigwaitinfo({signal.SIGTERM}).si_pid == parent:
            os._exit(0)


class _OrderSampler(torch.utils.data.Sampler):
    """Yields the batches of indices it is given; changed in place each epoch, so persistent workers stay alive."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class DataLoaderBatches:
    """Batches of a map-style dataset through a ``DataLoader``: for data that does not fit in memory.

    Samples are read by ``num_workers`` worker processes (kept alive across
    epochs), collated into pinned memory when training on CUDA, moved to
    ``device`` and transformed there, so augmentation and its random numbers
    are exactly those of the in-memory path.

    Args:
        dataset: ``dataset[i]`` is an ``(x, y)`` pair; ``len(dataset)`` samples.
        batch_size, shuffle, seed, transform, rank, world_size: as for ``InMemoryBatches``.
        device: where batches go.
        num_workers: loader processes (0: load in the training process).

    ``dataset[i]`` must be deterministic (no random transform in ``__getitem__``):
    random numbers drawn in worker processes are not part of a checkpoint.
    Put augmentation in ``transform``, which runs in the training process.
    """

    def __init__(
        self,
        dataset: Sequence,
        batch_size: int,
        device: torch.device,
        shuffle: bool = False,
        seed: int = 0,
        transform: BatchTransform | None = None,
        num_workers: int = 2,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.dataset, self.batch_size, self.device = dataset, batch_size, torch.device(device)
        self.shuffle, self.seed, self.transform = shuffle, seed, transform
        self.rank, self.world_size = rank, world_size
        self._sampler = _OrderSampler()
        self.loader = torch.utils.data.DataLoader(
            dataset,
            batch_sampler=self._sampler,
            num_workers=num_workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=num_workers > 0,  # no new worker processes every epoch
            prefetch_factor=4 if num_workers > 0 else None,
            worker_init_fn=_leave_stop_signals_to_the_trainer,
            # Its own generator: otherwise every new iterator draws a seed from the global torch RNG,
            # which would shift the augmentation's random numbers (and break exact resume).
            generator=torch.Generator().manual_seed(seed),
        )

    def __len__(self) -> int:
        return num_batches(len(self.dataset), self.batch_size, self.world_size, self.shuffle)

    @property
    def num_samples(self) -> int:
        return len(self.dataset)

    def order(self, epoch: int) -> torch.Tensor:
        return epoch_order(len(self.dataset), self.shuffle, self.seed, epoch)

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        batches = batch_indices(self.order(epoch), self.batch_size, start_batch, len(self), self.rank, self.world_size)
        self._sampler.batches = [index.tolist() for index in batches]
        with held_back():  # the first epoch forks the workers: a group signal must not kill one as it starts
            batches = iter(self.loader)
        for x, y in batches:
            x = x.to(self.device, non_blocking=True)
            yield (self.transform(x) if self.transform else x), y.to(self.device, non_blocking=True)
