"""The benchmarks run end to end (``benchmarks/run.py --quick``) and write a complete, checked JSON report.

Only the shape of the report and the same-result checks are asserted: timings
depend on the machine, and a missed speed target is a finding, not a failure.
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys

import pytest
from conftest import TEMPLATE_ROOT

RUN = TEMPLATE_ROOT / "benchmarks" / "run.py"
ROWS = (
    "trainer_vs_bare/cnn",
    "process/cnn",
    "startup/help",
    "trainer_vs_lightning/mlp",
    "trainer_vs_lightning/mlp_images",
    "trainer_vs_lightning/cnn",
)
MACHINE_FIELDS = ("cpu_model", "cpu_cores", "torch", "device")
LIGHTNING = importlib.util.find_spec("lightning") is not None


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def test_quick_benchmark_writes_every_row_with_both_sides(isolated_tmp, tmp_path):
    out = tmp_path / "results.json"
    result = subprocess.run(
        [sys.executable, str(RUN), "--quick", "--out", str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
    report = json.loads(out.read_text())

    assert report["mode"] == "quick"
    assert report["all_checks_passed"] is True
    assert all(report["machine"].get(key) for key in MACHINE_FIELDS), report["machine"]
    rows = {row["id"]: row for row in report["rows"]}
    assert list(rows) == list(ROWS)  # in the README's order
    for row_id, row in rows.items():
        if row["skipped"]:  # only the Lightning rows, and only without Lightning
            assert row_id.startswith("trainer_vs_lightning/") and not LIGHTNING, row
            continue
        for side in ("a", "b"):
            assert row[side]["label"] and row[side]["unit"], row
            assert row[side]["values"] and all(map(is_number, row[side]["values"])), row
            assert is_number(row[side]["median"]), row
        assert is_number(row["ratio"]) and row["target"], row
        low, high = row["ratio_ci90"]
        assert low <= row["ratio"] <= high, row
        assert isinstance(row["target_met"], bool), row
        assert row["check_passed"] is True, row
    assert all(row_id in result.stdout for row_id in ROWS)  # the table is printed too


def load_measure():
    spec = importlib.util.spec_from_file_location("bench_measure", TEMPLATE_ROOT / "benchmarks" / "measure.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_ratio_interval_narrows_with_agreeing_repetitions_and_contains_the_ratio():
    measure = load_measure()

    def row(a, b):
        return measure.Row("x", measure.Side("a", "s", a), measure.Side("b", "s", b), "<=", 1.0)

    steady = row([1.1, 2.2, 3.3, 4.4], [1.0, 2.0, 3.0, 4.0])  # every pair says 1.1, however the machine drifted
    assert steady.ratio_ci == pytest.approx((1.1, 1.1))
    noisy = row([1.0, 1.3, 0.9, 1.2, 1.1, 0.8, 1.4], [1.0] * 7)
    low, high = noisy.ratio_ci
    assert 0.8 <= low < noisy.ratio < high <= 1.4
    assert noisy.ratio_ci == noisy.ratio_ci  # seeded: a report can be recomputed from its values
    assert noisy.target_met is (noisy.ratio <= 1.0)
