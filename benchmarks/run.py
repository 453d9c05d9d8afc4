#!/usr/bin/env python
"""Benchmark the project this template generates: ``python benchmarks/run.py [--quick] [--repeats N] [--out PATH]``.

Bakes the template into a temporary folder, imports the baked project and
compares its trainer with a bare PyTorch loop and with Lightning, its
in-memory batches with a DataLoader, its checkpoints with its epochs and its
start-up with ``import torch``.  Prints a table and writes it as JSON.  The
exit status is 1 if two sides of a comparison did not compute the same thing;
a missed speed target is reported, never an error.  See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling modules, from any working directory

from comparisons import FULL, GROUPS, QUICK, Bench  # noqa: E402
from measure import Disturbance, Row, machine  # noqa: E402
from project import Project, bake, register_table_dataset, template_version, write_cifar10  # noqa: E402

DISTURBED = 0.05  # share of the CPUs taken by others (or stolen) above which a group's timings are unreliable


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--quick", action="store_true", help="tiny data, 1 repetition: checks that everything runs")
    parser.add_argument("--repeats", type=int, help="timed repetitions of every side (default: 7, --quick: 1)")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).with_name("results.json"), help="JSON output (%(default)s)"
    )
    parser.add_argument("--device", default="cpu", help="the configs' device key: cpu, cuda, auto (default: cpu)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument(
        "--only", default=",".join(GROUPS), help=f"comma-separated groups to run (default: {','.join(GROUPS)})"
    )
    args = parser.parse_args(argv)
    unknown = set(args.only.split(",")) - set(GROUPS)
    if unknown:
        parser.error(f"--only: unknown group(s) {', '.join(sorted(unknown))}; choose from {', '.join(GROUPS)}")
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


def describe(disturbance: Disturbance) -> str:
    if disturbance.others_share is None:
        return "disturbance unknown"
    text = f"other processes used {disturbance.others_share:.0%} of the CPUs, steal {disturbance.steal_share:.0%}"
    if disturbance.others_share + disturbance.steal_share > DISTURBED:
        text += ": DISTURBED, timings unreliable"
    return text


def fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def table(rows: list[Row]) -> str:
    """The rows as a fixed-width text table."""
    header = ("row", "A", "median A", "B", "median B", "A/B", "A/B 90% CI", "target", "met", "same result")
    lines = []
    for row in rows:
        if row.skipped:
            lines.append((row.id, "skipped", "", "", "", "", "", row.target_text, "", row.skipped))
            continue
        assert row.a is not None and row.b is not None
        lines.append(
            (
                row.id,
                row.a.label,
                f"{fmt(row.a.median)} {row.a.unit}",
                row.b.label,
                f"{fmt(row.b.median)} {row.b.unit}",
                fmt(row.ratio, 3),
                "-" if row.ratio_ci is None else f"{fmt(row.ratio_ci[0], 3)}-{fmt(row.ratio_ci[1], 3)}",
                row.target_text,
                "yes" if row.target_met else "NO",
                "ok" if row.check_passed else "FAILED",
            )
        )
    widths = [max(len(str(line[i])) for line in [header, *lines]) for i in range(len(header))]
    out = [
        "  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in [header, *lines]
    ]
    out.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(out)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    settings = QUICK if args.quick else FULL
    if args.repeats:
        settings = settings.with_repeats(args.repeats)
    if args.threads:
        torch.set_num_threads(args.threads)
    groups = args.only.split(",")
    with Disturbance() as idle:  # one idle second: is anything else running?
        time.sleep(1)
    if idle.others_share is not None and idle.others_share + idle.steal_share > DISTURBED:
        print(f"warning: the machine is busy: in one idle second, {describe(idle)}")
    started = time.perf_counter()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="template-benchmarks-") as tmp:
        work_dir = Path(tmp)
        root, package = bake(work_dir / "baked")
        print(f"baked {root.name} (package {package}) into {work_dir}")
        project = Project(root, package)
        register_table_dataset(project, settings.mlp_samples, settings.mlp_features)
        cifar_root = write_cifar10(work_dir / "cifar10", settings.cifar_samples, test_samples=100)
        cifar_full_root = write_cifar10(work_dir / "cifar10_full", settings.mlp_images_samples, test_samples=100)
        bench = Bench(project, work_dir, settings, args.device, cifar_root, cifar_full_root)
        info = machine(project.device(bench.mlp_config()))
        info["others_cpu_share_before_start"] = idle.others_share
        print(f"machine: {info['cpu_model']}, {info['cpu_cores']} cores, torch {info['torch']}, {info['device']}")
        for group in groups:
            print(f"[{group}]")
            group_start = time.perf_counter()
            with Disturbance() as disturbance:
                group_rows = GROUPS[group](bench)
            for row in group_rows:
                row.notes.update(others_cpu_share=disturbance.others_share, steal_share=disturbance.steal_share)
            rows += group_rows
            print(f"  ({time.perf_counter() - group_start:.0f} s; {describe(disturbance)})")

    elapsed = time.perf_counter() - started
    if hasattr(os, "getloadavg"):
        info["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    failed = [row.id for row in rows if not row.skipped and not row.check_passed]
    report = {
        "command": " ".join(["benchmarks/run.py", *argv]),
        "mode": "quick" if args.quick else "full",
        "template": template_version(),
        "settings": dataclasses.asdict(settings),
        "machine": info,
        "elapsed_s": round(elapsed, 1),
        "all_checks_passed": not failed,
        "rows": [row.as_json() for row in rows],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")

    print()
    print(table(rows))
    print()
    for row in rows:
        if not row.skipped:
            extra = "; ".join(f"{k}: {v}" for k, v in row.notes.items())
            print(f"{row.id}: {row.check_detail}" + (f" [{extra}]" if extra else ""))
    print(f"\n{len(rows)} rows in {elapsed:.0f} s; written to {args.out}")
    if args.quick:
        print("(--quick: tiny data and one repetition; the timings mean nothing)")
    if failed:
        print(f"\nSAME-RESULT CHECK FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
