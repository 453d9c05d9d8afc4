"""Timing discipline, the shape of a result row, and the machine the numbers come from.

The sides of a comparison run interleaved: repetition ``i`` runs them in an
order rotated by ``i`` (A B, B A, ...), so drift of the machine (other
processes, clocks, a warming file cache) lands on every side, not on one.
A/B is the median of the per-repetition ratios, each from sides run back to back.
"""

from __future__ import annotations

import datetime as dt
import gc
import os
import platform
import random
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch

T = TypeVar("T")


def alternate(sides: dict[str, Callable[[], T]], repeats: int, warmup: int = 0) -> dict[str, list[T]]:
    """Call every side ``warmup + repeats`` times, interleaved and rotated; keep the last ``repeats`` results.

    The warm-up rounds pay one-off costs (lazy imports, first-call kernel
    choices, a cold file cache) that no side should be charged for.
    """
    names = list(sides)
    kept: dict[str, list[T]] = {name: [] for name in names}
    for rep in range(warmup + repeats):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            gc.collect()  # every side starts without the garbage of the one before
            result = sides[name]()
            if rep >= warmup:
                kept[name].append(result)
    return kept


class Disturbance:
    """The share of the CPUs other processes used while a block ran (Linux ``/proc/stat``; elsewhere None).

    The machine's busy time minus this process's and its children's, over the
    cores' wall time.  A few percent or more: the block shared the CPU.
    """

    others_share: float | None = None

    @staticmethod
    def _busy() -> float | None:
        try:
            with open("/proc/stat") as f:
                user, nice, system, _, _, irq, softirq = (int(v) for v in f.readline().split()[1:8])
        except (OSError, ValueError):
            return None
        return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _own() -> float:
        usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
        return sum(u.ru_utime + u.ru_stime for u in usage)

    def __enter__(self) -> Disturbance:
        self._start = time.perf_counter(), self._busy(), self._own()
        return self

    def __exit__(self, *exc) -> None:
        wall, busy, own = self._start
        now = self._busy()
        if busy is not None and now is not None:
            others = (now - busy) - (self._own() - own)
            self.others_share = round(max(others, 0.0) / ((time.perf_counter() - wall) * (os.cpu_count() or 1)), 3)


@dataclass
class Side:
    """One side of a comparison: what was timed, in which unit, every repetition."""

    label: str
    unit: str
    values: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.values)


@dataclass
class Row:
    """Side A (the project) against side B (the reference), and whether both computed the same thing."""

    id: str
    a: Side | None
    b: Side | None
    target_op: str  # the target is: A/B <op> target
    target: float
    check_passed: bool | None = None
    check_detail: str = ""
    skipped: str | None = None  # why the row did not run (Lightning missing)
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def ratios(self) -> list[float]:
        """A/B of every repetition (the sides' values come in pairs)."""
        return [] if self.skipped else [a / b for a, b in zip(self.a.values, self.b.values, strict=True)]

    @property
    def ratio(self) -> float | None:
        return statistics.median(self.ratios) if self.ratios else None

    @property
    def ratio_ci(self) -> tuple[float, float] | None:
        """A 90% bootstrap interval of ``ratio``: the repetitions resampled 2,000 times (seeded, so it can be
        recomputed from the JSON's values); the interval holds the middle 90% of the resampled medians."""
        pairs = self.ratios
        if not pairs:
            return None
        rng = random.Random(0)
        estimates = sorted(statistics.median(rng.choices(pairs, k=len(pairs))) for _ in range(2000))
        return estimates[100], estimates[1899]

    @property
    def target_met(self) -> bool | None:
        if self.ratio is None:
            return None
        return self.ratio <= self.target if self.target_op == "<=" else self.ratio < self.target

    def as_json(self) -> dict[str, Any]:
        sides = {
            name: vars(side) | {"median": side.median} if side else None
            for name, side in (("a", self.a), ("b", self.b))
        }
        return {
            "id": self.id,
            **sides,
            "ratio": self.ratio,
            "ratio_ci90": self.ratio_ci,
            "ratio_range": [min(self.ratios), max(self.ratios)] if self.ratios else None,
            "target": f"A/B {self.target_op} {self.target:g}",
            "target_met": self.target_met,
            "check_passed": self.check_passed,
            "check_detail": self.check_detail,
            "skipped": self.skipped,
            "notes": self.notes,
        }


def machine(device: torch.device) -> dict[str, Any]:
    """What the numbers were measured on."""
    try:
        import lightning

        lightning_version = lightning.__version__
    except ImportError:
        lightning_version = None
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    info = {
        "cpu_model": cpu,
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "lightning": lightning_version,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "date": dt.date.today().isoformat(),
    }
    return info
