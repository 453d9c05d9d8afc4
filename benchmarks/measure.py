"""Timing discipline and the shape of a result row.

Every comparison runs its sides in one process, interleaved: repetition ``i``
runs the sides in an order rotated by ``i`` (A B, B A, ...), so drift of the
machine (other processes, CPU clocks, a warming file cache) spreads over all
sides instead of landing on one.  Medians, not means, so one disturbed
repetition does not move the result.
"""

from __future__ import annotations

import datetime as dt
import gc
import math
import os
import platform
import random
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

import torch

T = TypeVar("T")
BOOTSTRAP_RESAMPLES = 2000  # for Row.ratio_ci


def alternate(sides: dict[str, Callable[[], T]], repeats: int, warmup: int = 0) -> dict[str, list[T]]:
    """Call every side ``warmup + repeats`` times, interleaved and rotated; keep the last ``repeats`` results.

    Warm-up rounds pay one-off costs (lazy imports, first-call kernel
    selection, a cold file cache) that no side should be charged for.
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
    """How much CPU other processes took while a block ran (Linux; elsewhere None).

    The machine's busy CPU time (``/proc/stat``, all cores) minus this
    process's and its waited-for children's, as a share of the cores' wall
    time; plus the hypervisor's *steal* time, CPU a virtual machine was
    denied.  More than a few percent means the timings of that block are
    disturbed.
    """

    def __init__(self) -> None:
        self.others_share: float | None = None
        self.steal_share: float | None = None

    @staticmethod
    def _machine() -> tuple[float, float] | None:
        try:
            with open("/proc/stat") as f:
                values = [int(v) for v in f.readline().split()[1:9]]
        except (OSError, ValueError):
            return None
        user, nice, system, idle, iowait, irq, softirq, steal = values
        tick = os.sysconf("SC_CLK_TCK")
        return (user + nice + system + irq + softirq) / tick, steal / tick

    @staticmethod
    def _own() -> float:
        usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
        return sum(u.ru_utime + u.ru_stime for u in usage)

    def __enter__(self) -> Disturbance:
        self._start = time.perf_counter(), self._machine(), self._own()
        return self

    def __exit__(self, *exc) -> None:
        wall0, machine0, own0 = self._start
        machine1 = self._machine()
        if machine0 is None or machine1 is None:
            return
        capacity = (time.perf_counter() - wall0) * (os.cpu_count() or 1)
        others = (machine1[0] - machine0[0]) - (self._own() - own0)
        self.others_share = round(max(others, 0.0) / capacity, 3)
        self.steal_share = round((machine1[1] - machine0[1]) / capacity, 3)


@dataclass
class Side:
    """One side of a comparison: what was timed, in which unit, every repetition."""

    label: str
    unit: str
    values: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def as_json(self) -> dict[str, Any]:
        return {"label": self.label, "unit": self.unit, "median": self.median, "values": self.values}


@dataclass
class Row:
    """A comparison of side A (the project) with side B (the reference), and whether both computed the same."""

    id: str
    title: str
    a: Side | None = None
    b: Side | None = None
    target_op: str = "<="  # the target is: ratio A/B <op> target
    target: float = math.inf
    check_passed: bool | None = None  # both sides computed the same thing
    check_detail: str = ""
    skipped: str | None = None  # why the row did not run (e.g. Lightning missing)
    notes: dict[str, Any] = field(default_factory=dict)
    paired: bool = True  # A and B values come in pairs from the same repetitions

    def _pair_ratios(self) -> list[float] | None:
        """A/B of every repetition when the values come in pairs, else None."""
        if not self.paired or len(self.a.values) != len(self.b.values):
            return None
        return [a / b for a, b in zip(self.a.values, self.b.values, strict=True)]

    @property
    def ratio(self) -> float | None:
        """A/B: the median of the per-repetition ratios when paired (robust to the machine drifting), else
        the ratio of the medians."""
        if self.a is None or self.b is None or not all(self.b.values):
            return None
        pairs = self._pair_ratios()
        return self.a.median / self.b.median if pairs is None else statistics.median(pairs)

    @property
    def ratio_range(self) -> tuple[float, float] | None:
        """Smallest and largest per-repetition A/B (paired rows only): how much the ratio moved."""
        pairs = None if self.ratio is None else self._pair_ratios()
        return None if pairs is None else (min(pairs), max(pairs))

    @property
    def ratio_ci(self) -> tuple[float, float] | None:
        """A 90% bootstrap interval of ``ratio``: how well this run pins the ratio down.

        The repetitions are resampled with replacement ``BOOTSTRAP_RESAMPLES``
        times (pairs together when paired, each side on its own otherwise) and
        the ratio is computed on each resample; the interval holds the middle
        90% of them.  Seeded, so a report is reproducible from its values.
        """
        if self.ratio is None:
            return None
        rng = random.Random(0)
        a, b, pairs = self.a.values, self.b.values, self._pair_ratios()
        estimates = []
        for _ in range(BOOTSTRAP_RESAMPLES):
            if pairs is not None:
                estimates.append(statistics.median(pairs[rng.randrange(len(pairs))] for _ in pairs))
            else:
                estimates.append(
                    statistics.median(rng.choices(a, k=len(a))) / statistics.median(rng.choices(b, k=len(b)))
                )
        estimates.sort()
        return estimates[int(0.05 * len(estimates))], estimates[int(0.95 * len(estimates)) - 1]

    @property
    def target_text(self) -> str:
        return f"A/B {self.target_op} {self.target:g}"

    @property
    def target_met(self) -> bool | None:
        if self.ratio is None:
            return None
        return self.ratio <= self.target if self.target_op == "<=" else self.ratio < self.target

    def as_json(self) -> dict[str, Any]:
        out = {key: value for key, value in asdict(self).items() if key not in ("a", "b")}
        out.update(
            a=self.a.as_json() if self.a else None,
            b=self.b.as_json() if self.b else None,
            ratio=self.ratio,
            ratio_range=self.ratio_range,
            ratio_ci90=self.ratio_ci,
            target=self.target_text,
            target_value=self.target,
            target_met=self.target_met,
        )
        return out


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: torch.device) -> dict[str, Any]:
    """What the numbers were measured on."""
    try:
        import lightning

        lightning_version = lightning.__version__
    except ImportError:
        lightning_version = None
    info = {
        "cpu_model": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "lightning": lightning_version,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
        "date": dt.date.today().isoformat(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    if hasattr(os, "getloadavg"):
        info["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]
    return info
