#!/usr/bin/env python
"""Benchmark the project this template generates: ``python benchmarks/run.py [--quick] [--repeats N] [--out PATH]``.

Bakes the template into a temporary folder and compares the baked project's
trainer with a bare PyTorch loop and with Lightning, its whole training
process with a bare script's, and its start-up with ``import torch``.  Prints
a table and writes it as JSON.  Exit status 1 if two sides of a comparison did
not compute the same thing; a missed speed target is reported (``NO``), never
an error.  See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the sibling modules, from any working directory

import sides  # noqa: E402
from measure import Disturbance, Row, Side, alternate, machine  # noqa: E402

LOSS_RTOL = 1e-4  # final losses of two sides may differ by this much (relative): summation order only
WEIGHT_ATOL = 1e-4  # ... and their final weights by this much
SHARED = 0.05  # share of the CPUs used by other processes above which the timings are flagged
ORDER = ["trainer_vs_bare/cnn", "process/cnn", "startup/help", "trainer_vs_lightning/mlp",
         "trainer_vs_lightning/mlp_images", "trainer_vs_lightning/cnn"]  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Settings:
    repeats: int  # timed repetitions of every side
    warmup: int  # untimed rounds first
    startup_repeats: int
    cifar_images: int  # synthetic CIFAR-10 training records for the cnn (10% validate)
    cnn_epochs: int
    table_rows: int  # the synthetic table of the mlp (10% test, then 20% of the rest validate)
    table_features: int
    mlp_epochs: int
    image_mlp_images: int  # synthetic CIFAR-10 records for the mlp on images
    image_mlp_epochs: int


FULL = Settings(5, 1, 15, 5_000, 2, 50_000, 64, 6, 50_000, 2)
QUICK = Settings(1, 0, 1, 300, 1, 2_000, 16, 1, 300, 1)


@dataclasses.dataclass
class Bench:
    project: sides.Project
    work: Path
    s: Settings
    device: str
    cifar: Path
    cifar_big: Path

    def cnn(self):  # the shipped cifar10 config: CNN n_filters=32, batch 128, augmentation, SGD, schedule
        return self.project.config("cifar10", {"data.root": self.cifar, "num_epochs": self.s.cnn_epochs,
                                               "device": self.device})  # fmt: skip

    def mlp(self):  # the iris config's mlp (64 hidden units, SGD momentum) on the table, batch 128
        return self.project.config("iris", {"data.name": sides.TABLE, "batch_size": 128, "num_epochs": self.s.mlp_epochs,
                                            "device": self.device})  # fmt: skip

    def mlp_images(self):  # the cifar10 config with --model=mlp, no augmentation
        return self.project.config("cifar10", {"model": "mlp", "data.root": self.cifar_big, "data.augment": False,
                                               "num_epochs": self.s.image_mlp_epochs, "device": self.device})  # fmt: skip


def same_training(reference: list, runs: list) -> tuple[bool, str]:
    """Did every run start from the reference's weights and end with its losses and weights (and features)?"""
    ref = reference[0]
    same_start = all(torch.equal(run.initial[k], v) for run in [*reference, *runs] for k, v in ref.initial.items())
    loss_diff = max(abs(mine - theirs) / abs(theirs) for run in [*reference, *runs]
                    for mine, theirs in ((run.train_loss, ref.train_loss), (run.valid_loss, ref.valid_loss)))  # fmt: skip
    weight_diff = max(
        (run.final[k] - v).abs().max().item() if v.is_floating_point() else (0 if torch.equal(run.final[k], v) else math.inf)
        for run in [*reference, *runs] for k, v in ref.final.items()
    )  # fmt: skip
    missing = sorted({gap for run in [*reference, *runs] for gap in run.missing})
    passed = same_start and loss_diff <= LOSS_RTOL and weight_diff <= WEIGHT_ATOL and not missing
    detail = (f"{'same' if same_start else 'DIFFERENT'} initial weights; last train/valid loss {ref.train_loss:.6g}/"
              f"{ref.valid_loss:.6g}, max rel. difference {loss_diff:.2g} (tol {LOSS_RTOL:g}); max weight difference "
              f"{weight_diff:.2g} (tol {WEIGHT_ATOL:g})" + (f"; NO TRACE OF: {', '.join(missing)}" if missing else ""))  # fmt: skip
    return passed, detail


def training_rows(bench: Bench, name: str, cfg, with_bare: bool) -> list[Row]:
    """The project's trainer against the bare loop (cnn only) and Lightning, interleaved, on workload ``name``."""
    project, s = bench.project, bench.s
    loops = {"trainer": lambda: sides.run_trainer(project, cfg, bench.work)}
    if with_bare:
        loops["bare"] = lambda: sides.run_bare(project, cfg)
    no_lightning = sides.lightning_missing()
    if not no_lightning:
        loops["lightning"] = lambda: sides.run_lightning(project, cfg, bench.work)
    print(f"  {name}: {', '.join(loops)} x {s.repeats} (+{s.warmup} warm-up), {cfg.num_epochs} epochs each", flush=True)
    runs = alternate(loops, s.repeats, s.warmup)
    per_epoch = {side: [r.seconds / cfg.num_epochs for r in values] for side, values in runs.items()}
    trainer = Side("project Trainer.fit(), all features", "s/epoch", per_epoch["trainer"])
    notes = {"trainer fit() outside its epochs, s": round(statistics.median(r.outside for r in runs["trainer"]), 3)}
    rows = [Row(f"trainer_vs_lightning/{name}", None, None, "<", 1.0, skipped=no_lightning, notes=notes)]
    if not no_lightning:
        rows[0].a, rows[0].b = trainer, Side("Lightning Trainer.fit()", "s/epoch", per_epoch["lightning"])
        rows[0].check_passed, rows[0].check_detail = same_training(runs["trainer"], runs["lightning"])
    if with_bare:
        bare = Side("bare loop", "s/epoch", per_epoch["bare"])
        passed, detail = same_training(runs["trainer"], runs["bare"])
        rows.append(Row(f"trainer_vs_bare/{name}", trainer, bare, "<=", 1.03, passed, detail, notes=dict(notes)))
    return rows


def run_process(command: list[str], cwd: Path) -> tuple[float, subprocess.CompletedProcess]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}  # bytecode cached, as in a checkout
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=3600)
    return time.perf_counter() - start, done


def process_rows(bench: Bench) -> list[Row]:
    """``bin/train.py cifar10`` against ``bare.py`` as a script, each a new process into a new folder."""
    project, s, cfg = bench.project, bench.s, bench.cnn()
    parts, runs = project.write_parts(bench.work), []

    def train_py():
        out = Path(tempfile.mkdtemp(dir=bench.work, prefix="process-"))
        seconds, done = run_process([sys.executable, "bin/train.py", "cifar10", str(out), f"--data.root={bench.cifar}",
                                     f"--num_epochs={cfg.num_epochs}", f"--device={bench.device}"], project.root)  # fmt: skip
        with open(out / "history.csv", newline="") if done.returncode == 0 else contextlib.nullcontext([]) as f:
            history = list(csv.DictReader(f))
        ok = len(history) == cfg.num_epochs and len(list(out.glob("checkpoints/step_*"))) == min(
            cfg.num_epochs, cfg.checkpoint.keep
        )
        last = history[-1] if ok else {}
        epochs = sum(float(row["epoch_time_s"]) for row in history)
        runs.append(("train.py", done, ok, float(last.get("train_loss", "nan")), float(last.get("valid_loss", "nan"))))
        outside["train.py"].append(seconds - epochs)
        return seconds

    def bare_py():
        out = tempfile.mkdtemp(dir=bench.work, prefix="bare-")
        settings = json.dumps(project.bare_settings(cfg))
        seconds, done = run_process(
            [sys.executable, str(HERE / "bare.py"), bench.cifar, out, settings, parts], project.root
        )
        last = json.loads(done.stdout.splitlines()[-1]) if done.returncode == 0 else {}
        ok = len(list(Path(out).glob("epoch_*.pt"))) == cfg.num_epochs
        runs.append(("bare.py", done, ok, last.get("train_loss", math.nan), last.get("valid_loss", math.nan)))
        outside["bare.py"].append(seconds - last.get("seconds", math.nan))
        return seconds

    outside = {"train.py": [], "bare.py": []}  # each run's time outside its epochs: start-up, reading, the end
    print(f"  train.py, bare.py x {s.repeats} (+{s.warmup} warm-up), {cfg.num_epochs} epochs each", flush=True)
    times = alternate({"train.py": train_py, "bare.py": bare_py}, s.repeats, s.warmup)
    failed = [f"{name} exit {done.returncode}: {done.stderr.strip()[-300:]}" for name, done, ok, *_ in runs if not ok]
    ref = runs[0]
    loss_diff = max(max(abs(r[3] - ref[3]) / abs(ref[3]), abs(r[4] - ref[4]) / abs(ref[4])) for r in runs)
    passed = not failed and loss_diff <= LOSS_RTOL
    detail = failed[0] if failed else (f"every run: exit 0, a checkpoint per epoch; last train/valid loss {ref[3]:.6g}/"
                                       f"{ref[4]:.6g}, max rel. difference {loss_diff:.2g} (tol {LOSS_RTOL:g})")  # fmt: skip
    a = Side(f"bin/train.py cifar10 --num_epochs={cfg.num_epochs}", "s", times["train.py"])
    row = Row("process/cnn", a, Side("bare.py, a bare script", "s", times["bare.py"]), "<=", 1.08, passed, detail)
    row.notes = {
        f"{name} outside its epochs, s": round(statistics.median(v[-s.repeats :]), 3) for name, v in outside.items()
    }
    return [row]


def startup_rows(bench: Bench) -> list[Row]:
    """``bin/train.py --help`` against ``python -c "import torch"``, each a new process."""
    s, outputs = bench.s, {}
    commands = {"help": [sys.executable, "bin/train.py", "--help"], "torch": [sys.executable, "-c", "import torch"]}

    def run(name: str) -> float:
        seconds, outputs[name] = run_process(commands[name], bench.project.root)
        return seconds

    print(f"  --help, import torch x {s.startup_repeats} (+{s.warmup} warm-up)", flush=True)
    times = alternate({name: lambda name=name: run(name) for name in commands}, s.startup_repeats, s.warmup)
    passed = (
        outputs["help"].returncode == 0 and "configs" in outputs["help"].stdout and outputs["torch"].returncode == 0
    )
    detail = f"--help exit {outputs['help'].returncode}, lists the configs: {'configs' in outputs['help'].stdout}"
    a, b = Side("bin/train.py --help", "s", times["help"]), Side('python -c "import torch"', "s", times["torch"])
    return [Row("startup/help", a, b, "<=", 1.3, passed, detail)]


GROUPS = {
    "cnn": lambda bench: training_rows(bench, "cnn", bench.cnn(), with_bare=True),
    "process": process_rows,
    "startup": startup_rows,
    "mlp": lambda bench: training_rows(bench, "mlp", bench.mlp(), with_bare=False),
    "mlp_images": lambda bench: training_rows(bench, "mlp_images", bench.mlp_images(), with_bare=False),
}


def table(rows: list[Row]) -> str:
    header = ("row", "A, median", "B, median", "A/B", "90% CI", "range", "target", "met", "same result", "others' CPU")
    lines = [header]
    for row in rows:
        if row.skipped:
            lines.append((row.id, "skipped", row.skipped, *[""] * 7))
            continue
        lines.append((
            row.id, f"{row.a.median:.3g} {row.a.unit}", f"{row.b.median:.3g} {row.b.unit}", f"{row.ratio:.3f}",
            "-".join(f"{r:.3f}" for r in row.ratio_ci), f"{min(row.ratios):.3f}-{max(row.ratios):.3f}",
            f"{row.target_op} {row.target:g}", "yes" if row.target_met else "NO", "ok" if row.check_passed else "FAILED",
            "?" if row.notes["others_cpu_share"] is None else f"{row.notes['others_cpu_share']:.0%}",
        ))  # fmt: skip
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip() for line in lines]
    return "\n".join([out[0], "  ".join("-" * w for w in widths), *out[1:]])


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--quick", action="store_true", help="tiny data, 1 repetition: does everything still run?")
    parser.add_argument("--repeats", type=int, help=f"timed repetitions of every side (default {FULL.repeats})")
    parser.add_argument("--out", type=Path, default=HERE / "results.json", help="the JSON report (%(default)s)")
    parser.add_argument("--device", default="cpu", help="the configs' device key (default: cpu)")
    parser.add_argument("--only", default=",".join(GROUPS), help=f"some of {','.join(GROUPS)}")
    args = parser.parse_args(argv)
    if set(args.only.split(",")) - set(GROUPS) or (args.repeats is not None and args.repeats < 1):
        parser.error(f"--only takes some of {','.join(GROUPS)}; --repeats at least 1")
    s = QUICK if args.quick else FULL
    if args.repeats:
        s = dataclasses.replace(s, repeats=args.repeats, startup_repeats=3 * args.repeats)
    load_before, started, rows, version = os.getloadavg(), time.perf_counter(), [], sides.template_version()
    with tempfile.TemporaryDirectory(prefix="template-benchmarks-") as tmp, Disturbance() as whole:
        work = Path(tmp)
        root, package = sides.bake(work / "baked")
        project = sides.Project(root, package)
        project.register_table(s.table_rows, s.table_features)
        cifar, cifar_big = (
            sides.write_cifar10(work / "cifar10", s.cifar_images),
            sides.write_cifar10(work / "big", s.image_mlp_images),
        )
        bench = Bench(project, work, s, args.device, cifar, cifar_big)
        info = machine(project.device(bench.cnn()))
        print(f"baked {root.name} ({package}); {info['cpu_model']}, {info['cpu_cores']} cores, torch {info['torch']}")
        for group in args.only.split(","):
            print(f"[{group}]", flush=True)
            with Disturbance() as disturbance:
                group_rows = GROUPS[group](bench)
            for row in group_rows:
                row.notes["others_cpu_share"] = disturbance.others_share
            rows += group_rows
    rows.sort(key=lambda row: ORDER.index(row.id))
    shared = whole.others_share is not None and whole.others_share > SHARED
    info.update(load_average_before=[round(x, 2) for x in load_before], load_average_after=[round(x, 2) for x in os.getloadavg()],
                others_cpu_share=whole.others_share)  # fmt: skip
    if shared:
        info["note"] = (f"measured while other work shared the CPU: other processes used {whole.others_share:.0%} "
                        "of the cores during the run; the sides alternate, so the noise hits both")  # fmt: skip
    failed = [row.id for row in rows if not row.skipped and not row.check_passed]
    report = {
        "command": " ".join(["benchmarks/run.py", *argv]), "mode": "quick" if args.quick else "full",
        "template": version, "settings": dataclasses.asdict(s), "machine": info,
        "elapsed_s": round(time.perf_counter() - started, 1), "all_checks_passed": not failed,
        "rows": [row.as_json() for row in rows],
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n{table(rows)}\n")
    for row in rows:
        print(f"{row.id}: {row.skipped or row.check_detail}; " + ", ".join(f"{k} {v}" for k, v in row.notes.items()))
    print(f"\n{report['elapsed_s']:.0f} s; written to {args.out}" + (f"\n{info['note']}" if shared else ""))
    if args.quick:
        print("(--quick: tiny data, one repetition: the timings mean nothing)")
    if failed:
        print(f"\nSAME-RESULT CHECK FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
