"""Compare runs: one table, and a report with learning curves, of any set of results directories.

``python bin/compare.py PATH... [--metric NAME]... [--group-by KEY,... | --per-run]``

Every folder holding a meta.json at or below each PATH is a run: a sweep's trial folders, runs/, a single run
(``slurm/`` and ``checkpoints/`` are not searched).  Runs whose configs differ only by ``seed`` form a group,
shown as one row: each number is the mean over the runs of the group that have it, ``<column>_ci95`` the
half-width of its 95% confidence interval (Student's t with n - 1 degrees of freedom: t * sd / sqrt(n)), and
``n`` counts the runs.  Only the config keys (flattened: ``optimizer.lr``) that differ between the runs are
columns.

For each metric, a column of history.csv (by default the runs' ``monitor``): ``<metric>_best``, the best value
over the epochs (lowest or highest, as the metric says), ``<metric>_best_epoch`` and ``<metric>_final``, the
value at the last epoch; then the values of test_metrics.json (bin/evaluate.py), the epochs done, meta.json's
status and the seconds trained by the sessions that ended.  A file that cannot be read is named in an
``unreadable`` column, and the run is listed as far as its other files allow.

The table is printed and written to compare.csv; report.html, one file that opens from disk, holds it with a
figure of learning curves per metric (each group's mean with its 95% confidence band).

This is infrastructure: which way a metric is better comes from the caller (``higher_is_better``).
"""

from __future__ import annotations

import argparse
import base64
import csv
import datetime as dt
import html
import io
import json
import math
import os
import re
import shlex
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from .cli import ConfigError, flatten, suggest
from .results import SLURM_FOLDER
from .session import EXIT_FAILED, EXIT_OK, EXIT_USAGE

HigherIsBetter = Callable[[str], bool]  # is a larger value of this column (valid_acc, train_loss) better?
NOT_SEARCHED = {SLURM_FOLDER, "checkpoints"}  # submitit's logs and the checkpoints hold no run
AVERAGED_OVER = "seed"  # runs that differ only by this key are one group, unless --group-by says otherwise
CONFIDENCE = 0.95
MAX_LEGEND = 20  # a figure with more lines has no legend: it would hide the curves
CSV_NAME, REPORT_NAME = "compare.csv", "report.html"

EPILOG = """\
columns:
  KEY                  a config key whose value differs between the runs (with --group-by: those keys)
  n                    the runs of a row (not with --per-run); their numbers are averaged
  NAME_best            the best value of metric NAME over the epochs (lowest, or highest where the metric says so)
  NAME_best_epoch      the epoch of that value
  NAME_final           the value at the last epoch done
  test_*               test_metrics.json, written by bin/evaluate.py
  *_ci95               half-width of the 95% confidence interval of the mean: t(0.975, n-1) * sd / sqrt(n)
                       (in compare.csv; printed as mean +- half-width)
  status, epochs       meta.json's status (finished, pruned, running, failed, interrupted) and the epochs done
  duration_s           seconds trained, over the sessions that ended
  unreadable           the run's files that could not be read; it is listed as far as the others allow

examples:
  python bin/compare.py runs/lr_sweep                       # a row per config, its seeds averaged
  python bin/compare.py runs/a runs/b --per-run --metric valid_loss,valid_acc
  python bin/compare.py runs --group-by optimizer.lr --sort valid_acc_best --out reports/lr

exit codes: 0 done, 1 compare.csv or report.html could not be written, 2 bad command line or no runs found"""


# -- reading the runs ---------------------------------------------------------------------------------------


@dataclass
class Run:
    """What one results directory holds, as far as it can be read."""

    path: Path
    status: str | None = None
    config: dict[str, Any] | None = None  # flattened; None where config.json is missing or unreadable
    monitor: str | None = None
    history: pd.DataFrame | None = None  # the numeric columns of history.csv, indexed by epoch
    test: dict[str, float] = field(default_factory=dict)
    duration_s: float | None = None
    problems: list[str] = field(default_factory=list)  # "file: what is wrong with it"

    @property
    def epochs(self) -> int:
        return int(self.history.index.max()) if self.history is not None and len(self.history) else 0


def find_runs(paths: Iterable[str | Path]) -> list[Path]:
    """Every results directory (a folder with meta.json) at or below each of ``paths``, each once.

    Raises ``ConfigError`` for a path that is not a folder or holds no run: a typo must not go unnoticed.
    """
    found: dict[Path, Path] = {}
    for path in map(Path, paths):
        if not path.is_dir():
            raise ConfigError(f"{path} is not a folder" if path.exists() else f"{path} does not exist")
        runs = []
        for root, folders, files in os.walk(path):  # links are not followed
            folders[:] = [name for name in folders if name not in NOT_SEARCHED]
            if "meta.json" in files:
                runs.append(Path(root))
        if not runs:
            raise ConfigError(f"no runs under {path}: no folder there holds a meta.json")
        for run in runs:
            found.setdefault(run.resolve(), run)
    return sorted(found.values(), key=_natural)


def read_run(path: Path) -> Run:
    """The run in ``path``; a file that cannot be read is noted in ``problems``, never raised."""
    run = Run(path)
    meta = _read_json(run, "meta.json") or {}
    config = _read_json(run, "config.json")
    loop = _read_json(run, "loop_state.json") or {}
    test = _read_json(run, "test_metrics.json") or {}
    run.status = meta.get("status") if isinstance(meta.get("status"), str) else None
    if run.status == "finished" and meta.get("reason") == "pruned by the sweep":  # (engine/sweep.py)
        run.status = "pruned"
    run.config = flatten(config) if config is not None else None
    monitor = loop.get("monitor") or (config or {}).get("monitor")
    run.monitor = monitor if isinstance(monitor, str) else None
    run.test = {key: float(value) for key, value in test.items() if key.startswith("test_") and _is_number(value)}
    run.duration_s = _duration(meta)
    run.history = _read_history(run)
    return run


def _read_json(run: Run, name: str) -> dict | None:
    """The JSON object in the run's file ``name``; None if the file is missing or unreadable (noted)."""
    try:
        value = json.loads((run.path / name).read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        run.problems.append(f"{name}: {type(err).__name__}")
        return None
    if not isinstance(value, dict):
        run.problems.append(f"{name}: not a JSON object")
        return None
    return value


def _duration(meta: dict) -> float | None:
    """Seconds trained by the sessions that ended (a running session has no duration yet)."""
    sessions = meta.get("sessions")
    entries = sessions if isinstance(sessions, list) else [meta]
    seconds = [entry.get("duration_s") for entry in entries if isinstance(entry, dict)]
    seconds = [value for value in seconds if _is_number(value)]
    return float(sum(seconds)) if seconds else None


def _read_history(run: Run) -> pd.DataFrame | None:
    """history.csv's numeric columns, indexed by epoch, from its whole rows; a damaged row is left out and noted."""
    try:
        text = (run.path / "history.csv").read_text(encoding="utf-8")
    except FileNotFoundError:  # killed in its first epoch
        return None
    except (OSError, UnicodeDecodeError) as err:
        run.problems.append(f"history.csv: {type(err).__name__}")
        return None
    if text and not text.endswith("\n"):  # a kill or a full disk while a line was written
        text = text[: text.rfind("\n") + 1]
        run.problems.append("history.csv: its last line is cut short")
    if not text:
        return None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        rows = list(reader)
    except csv.Error as err:
        run.problems.append(f"history.csv: {err}")
        return None
    if "epoch" not in (reader.fieldnames or []):
        run.problems.append("history.csv: no header")
        return None
    whole = [row for row in rows if None not in row and None not in row.values() and _is_epoch(row["epoch"])]
    if len(whole) < len(rows):
        run.problems.append(f"history.csv: {len(rows) - len(whole)} damaged row(s)")
    numeric = [name for name in reader.fieldnames if all(_float(row[name]) is not None for row in whole)]
    frame = pd.DataFrame({name: [_float(row[name]) for row in whole] for name in numeric}, columns=numeric)
    return frame.astype({"epoch": int}).set_index("epoch")


def _float(text: str) -> float | None:
    """The number in a history cell (an empty cell: NaN); None if it holds no number (a time stamp)."""
    try:
        return float(text) if text != "" else math.nan
    except ValueError:
        return None


def _is_epoch(text: str) -> bool:
    number = _float(text)
    return number is not None and math.isfinite(number)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


# -- the table ----------------------------------------------------------------------------------------------


@dataclass
class Comparison:
    """The table, a row per run or group, and in the same order each row's label and runs."""

    table: pd.DataFrame
    rows: list[tuple[str, list[Run]]]
    metrics: list[str]
    grouped: bool

    @property
    def runs(self) -> int:
        return sum(len(runs) for _, runs in self.rows)


def choose_metrics(runs: Sequence[Run], asked: Sequence[str]) -> list[str]:
    """The history columns ``asked`` for (a ``ConfigError`` for one no run has), or by default the runs' monitored
    columns (else their first loss)."""
    columns = list(dict.fromkeys(name for run in runs if run.history is not None for name in run.history.columns))
    for name in asked:
        if name not in columns:
            raise ConfigError(
                f"--metric {name!r}: no run's history.csv has this column{suggest(name, columns)}; "
                + (f"the columns are: {', '.join(columns)}" if columns else "no run has finished an epoch yet")
            )
    if asked:
        return list(dict.fromkeys(asked))
    monitors = [name for name in dict.fromkeys(run.monitor for run in runs) if name in columns]
    return monitors or [name for name in columns if name.endswith("loss")][:1]


def compare(
    runs: Sequence[Run],
    metrics: Sequence[str],
    higher_is_better: HigherIsBetter,
    group_by: Sequence[str] | None = None,
    per_run: bool = False,
) -> Comparison:
    """The table of ``runs``: a row per run (``per_run``), or per group of runs with the same values of the keys
    ``group_by`` (default: all keys that differ, but ``seed``).  Raises ``ConfigError`` for an unknown key."""
    configs = [run.config for run in runs if run.config is not None]
    keys = list(dict.fromkeys(key for config in configs for key in config))
    differing = [key for key in keys if len({config.get(key) for config in configs}) > 1]
    for key in group_by or ():
        if key not in keys:
            raise ConfigError(
                f"--group-by {key!r}: no run's config.json has this key{suggest(key, keys)}; "
                f"the keys that differ between these runs: {', '.join(differing) or 'none'}"
            )
    values = {id(run): _values(run, metrics, higher_is_better) for run in runs}
    columns = list(dict.fromkeys(name for run in runs for name in values[id(run)]))
    problems = any(run.problems for run in runs)
    if per_run:
        shown = differing
        ordered = sorted(runs, key=lambda run: _natural(run.path))
        rows = [(str(run.path), [run]) for run in ordered]
        records = [_run_record(run, shown, columns, values[id(run)]) for run in ordered]
    else:
        shown = list(group_by) if group_by is not None else [key for key in differing if key != AVERAGED_OVER]
        rows = _groups(runs, shown)
        records = [_group_record(members, shown, columns, values) for _, members in rows]
    table = pd.DataFrame(records)
    if not problems:
        table = table.drop(columns="unreadable")
    if per_run:  # whole numbers, blank where a run has none (pandas' nullable integers)
        whole = ["epochs", *(name for name in table if name.endswith("_best_epoch"))]
        table = table.astype({name: "Int64" for name in whole})
    return Comparison(table, rows, list(metrics), grouped=not per_run)


def _values(run: Run, metrics: Sequence[str], higher_is_better: HigherIsBetter) -> dict[str, float]:
    """The run's numbers: for each metric its best value, that value's epoch and its final value; its test metrics."""
    values: dict[str, float] = {}
    for metric in metrics:
        column = run.history[metric] if run.history is not None and metric in run.history else pd.Series(dtype=float)
        known = column.dropna()
        best = (known.idxmax() if _maximize(run, metric, higher_is_better) else known.idxmin()) if len(known) else None
        values[f"{metric}_best"] = known[best] if best is not None else math.nan
        values[f"{metric}_best_epoch"] = best if best is not None else math.nan
        values[f"{metric}_final"] = column.iloc[-1] if len(column) else math.nan
    return {**values, **run.test}


def _maximize(run: Run, metric: str, higher_is_better: HigherIsBetter) -> bool:
    """Is a larger ``metric`` better for ``run``?  As the caller says, unless the run monitors that column with a
    ``monitor_mode`` of its own."""
    config = run.config or {}
    if config.get("monitor") == metric and config.get("monitor_mode") in ("min", "max"):
        return config["monitor_mode"] == "max"
    return higher_is_better(metric)


def _run_record(run: Run, keys: Sequence[str], columns: Sequence[str], values: dict[str, float]) -> dict[str, Any]:
    config = run.config or {}
    return {
        "run": str(run.path),
        **{key: config.get(key) for key in keys},
        "status": run.status,
        "epochs": run.epochs,
        "duration_s": run.duration_s,
        **{name: values.get(name, math.nan) for name in columns},
        "unreadable": "; ".join(run.problems),
    }


def _groups(runs: Sequence[Run], keys: Sequence[str]) -> list[tuple[str, list[Run]]]:
    """The runs by their values of ``keys``, ordered by those values, with a label each (``key=value, ...``).

    A run whose config.json could not be read is a group of its own, labelled by its path, at the end.
    """
    groups: dict[tuple, list[Run]] = {}
    for run in sorted(runs, key=lambda run: _natural(run.path)):
        values = tuple(run.config.get(key) for key in keys) if run.config is not None else (str(run.path),)
        groups.setdefault((run.config is None, values), []).append(run)

    def order(item: tuple[tuple, list[Run]]) -> tuple:
        (alone, values), _ = item
        return alone, [_order(value) for value in values]

    rows = []
    for (alone, values), members in sorted(groups.items(), key=order):
        label = values[0] if alone else ", ".join(f"{key}={value}" for key, value in zip(keys, values, strict=True))
        rows.append((label or "all runs", members))
    return rows


def _group_record(
    runs: list[Run], keys: Sequence[str], columns: Sequence[str], values: dict[int, dict[str, float]]
) -> dict[str, Any]:
    config = runs[0].config or {}
    statuses = Counter(run.status or "unknown" for run in runs)
    epochs = sorted(run.epochs for run in runs)
    record: dict[str, Any] = {
        **{key: config.get(key) for key in keys},
        "n": len(runs),
        "status": runs[0].status if len(runs) == 1 else ", ".join(f"{n} {status}" for status, n in statuses.items()),
        "epochs": epochs[0] if epochs[0] == epochs[-1] else f"{epochs[0]}-{epochs[-1]}",
        "duration_s": mean_ci([run.duration_s for run in runs])[0],
    }
    for name in columns:
        record[name], record[f"{name}_ci95"] = mean_ci([values[id(run)].get(name) for run in runs])
    record["runs"] = ", ".join(str(run.path) for run in runs)
    record["unreadable"] = "; ".join(f"{run.path}: {problem}" for run in runs for problem in run.problems)
    return record


def mean_ci(values: Iterable[float | None]) -> tuple[float, float]:
    """The mean of ``values`` (None and NaN left out) and the half-width of its 95% confidence interval by
    Student's t; NaN for what fewer values cannot give."""
    sample = np.array([value for value in values if value is not None and not math.isnan(value)], dtype=float)
    if len(sample) < 2:
        return (float(sample[0]) if len(sample) else math.nan), math.nan
    return float(sample.mean()), float(_t(len(sample)) * sample.std(ddof=1) / math.sqrt(len(sample)))


def _t(n: Any) -> Any:
    """Student's t quantile of the two-sided 95% interval of a mean of ``n`` values (n - 1 degrees of freedom)."""
    from scipy import stats

    return stats.t.ppf(0.5 + CONFIDENCE / 2, np.asarray(n) - 1)


def sort_rows(comparison: Comparison, column: str, higher_is_better: HigherIsBetter) -> Comparison:
    """The rows ordered by ``column``: the best first for a metric's column, else ascending; blanks last."""
    table = comparison.table
    if column not in table:
        raise ConfigError(
            f"--sort {column!r}: not a column of the table{suggest(column, table.columns)}; "
            f"its columns: {', '.join(table.columns)}"
        )
    metric = re.sub(r"_(best|final)$", "", column)
    best_first = (metric in comparison.metrics or column.startswith("test_")) and higher_is_better(metric)
    order = sorted(range(len(table)), key=lambda i: _order(table[column].iloc[i], descending=best_first))
    rows = [comparison.rows[i] for i in order]
    return Comparison(table.iloc[order].reset_index(drop=True), rows, comparison.metrics, comparison.grouped)


def _order(value: Any, descending: bool = False) -> tuple:
    """A sort key for a table cell: numbers by value, then text, then blanks (None, NaN)."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return 2, 0, ""
    if _is_number(value):
        return 0, -value if descending else value, ""
    return 1, 0, str(value)


def _natural(path: Path) -> list:
    """A sort key for paths that puts run_2 before run_10, and lr0.05 before lr0.1."""
    parts = re.split(r"(\d+(?:\.\d+)?)", str(path))  # text at even places, numbers at odd ones
    return [float(part) if i % 2 else part for i, part in enumerate(parts)]


# -- showing it ---------------------------------------------------------------------------------------------


def for_people(comparison: Comparison) -> pd.DataFrame:
    """The table to read: a mean and its confidence interval in one cell (``0.312 ± 0.021``), 4 significant
    digits, durations as h:mm:ss, blanks for what is missing."""
    table = comparison.table
    shown = pd.DataFrame(index=table.index)
    for name in table:
        if name.endswith("_ci95") and name[: -len("_ci95")] in table:
            continue
        column = table[name]
        if name == "duration_s":
            shown["duration"] = column.map(_seconds)
        elif f"{name}_ci95" in table:
            cis = table[f"{name}_ci95"]
            shown[name] = [
                _number(mean) + (f" ± {_number(ci)}" if pd.notna(ci) else "")
                for mean, ci in zip(column, cis, strict=True)
            ]
        elif pd.api.types.is_float_dtype(column):
            shown[name] = column.map(_number)
        else:
            shown[name] = column.map(lambda value: "" if pd.isna(value) else value)
    return shown


def _number(value: float) -> str:
    return "" if pd.isna(value) else f"{value:.4g}"


def _seconds(value: float) -> str:
    if pd.isna(value):
        return ""
    return f"{value:.1f} s" if value < 60 else str(dt.timedelta(seconds=round(value)))


def figure(metric: str, curves: Sequence[tuple[str, pd.DataFrame]], higher: bool) -> bytes:
    """A PNG of the learning curves of ``metric``: per row its mean by epoch and, where it averages several runs,
    the 95% confidence band.  Matplotlib's Agg canvas directly: no pyplot, no display, no global state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(9, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    colors = _colors(len(curves))
    for (label, line), color in zip(curves, colors, strict=True):
        epochs = line.index.to_numpy()
        shown = label.replace("$", r"\$")  # (matplotlib reads $...$ as math, and hides labels starting with _)
        shown = f" {shown}" if shown.startswith("_") else shown
        ax.plot(epochs, line["mean"], label=shown, color=color, marker="o" if len(line) <= 20 else None, ms=3)
        ax.fill_between(epochs, line["low"], line["high"], where=line["n"] > 1, color=color, alpha=0.2, lw=0)
    ax.set(xlabel="epoch", ylabel=metric, title=f"{metric} ({'higher' if higher else 'lower'} is better)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    if 0 < len(curves) <= MAX_LEGEND:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small", frameon=False)
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100)
    return png.getvalue()


def _colors(n: int) -> list:
    from matplotlib import colormaps

    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [colormaps["tab20"](i) for i in range(n)]
    return [colormaps["viridis"](i / (n - 1)) for i in range(n)]


def curve(runs: Sequence[Run], metric: str) -> pd.DataFrame:
    """``metric`` by epoch over ``runs``: mean, the 95% confidence interval (low, high) and the runs counted (n)."""
    series = [run.history[metric] for run in runs if run.history is not None and metric in run.history]
    values = pd.concat(series, axis=1) if series else pd.DataFrame(index=pd.Index([], name="epoch"))
    n = values.count(axis=1)
    mean = values.mean(axis=1)
    half = values.std(axis=1, ddof=1) * _t(n.clip(lower=2)) / np.sqrt(n)
    return pd.DataFrame({"mean": mean, "low": mean - half, "high": mean + half, "n": n})[n > 0]


def report(comparison: Comparison, command: str, higher_is_better: HigherIsBetter) -> str:
    """report.html: the table and a figure per metric, in one file that needs no server or network."""
    rows = len(comparison.rows)
    title = f"{comparison.runs} runs" + (f" in {rows} groups" if comparison.grouped and rows != comparison.runs else "")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<link rel="icon" href="data:,">',  # no request for favicon.ico
        f"<title>Comparison of {html.escape(title)}</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>Comparison of {html.escape(title)}</h1>",
        f"<p><code>{html.escape(command)}</code><br>{dt.datetime.now().astimezone().isoformat(timespec='seconds')}</p>",
        f"<p>{html.escape(HOW_TO_READ)}</p>",
        '<div class="table">',
        for_people(comparison).to_html(index=False, na_rep="", border=0),
        "</div>",
    ]
    for metric in comparison.metrics:
        curves = [(label, curve(runs, metric)) for label, runs in comparison.rows]
        png = figure(metric, [(label, frame) for label, frame in curves if len(frame)], higher_is_better(metric))
        parts += [
            f"<h2>{html.escape(metric)}</h2>",
            f'<img alt="learning curves of {html.escape(metric)}" src="data:image/png;base64,'
            f'{base64.b64encode(png).decode()}">',
        ]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


HOW_TO_READ = (
    "A row per group of runs whose configs differ only in the keys not shown (by default: only by seed), or per "
    "run. A number is the mean over the runs of the row; ± the half-width of its 95% confidence interval by "
    "Student's t (n - 1 degrees of freedom); n the runs of the row. NAME_best is the best value of the metric over "
    "the epochs, NAME_final its value at the last epoch done. Curves: the mean by epoch, with the 95% confidence "
    "band where a row averages several runs."
)
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
.table { overflow-x: auto; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { padding: 0.25em 0.7em; text-align: right; white-space: nowrap; border-bottom: 1px solid #ddd; }
th { background: #f3f3f3; position: sticky; top: 0; }
tr:hover td { background: #f8f8ff; }
img { max-width: 100%; display: block; margin: 0.5em 0 2em; }
"""


# -- the command line ---------------------------------------------------------------------------------------


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Compare runs: a table (mean and 95% confidence interval over seeds), printed and written\n"
        f"to {CSV_NAME}, and {REPORT_NAME} with the table and learning curves (opens from disk).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="a results directory, or a folder holding some at any depth (runs/, a sweep's folder)")  # fmt: skip
    parser.add_argument("--metric", action="append", default=[], metavar="NAME",
                        help="a history.csv column to compare (its best and final value, its learning curve); repeat "
                             "it or separate by commas for several (default: the runs' monitor, e.g. valid_loss)")  # fmt: skip
    rows = parser.add_mutually_exclusive_group()
    rows.add_argument("--group-by", metavar="KEY,...",
                      help="config keys (dotted: optimizer.lr) whose values make a row; the runs of a row are "
                           "averaged (default: every key that differs between the runs, but seed)")  # fmt: skip
    rows.add_argument("--per-run", action="store_true", help="a row per run, nothing averaged (default: groups)")
    parser.add_argument("--sort", metavar="COLUMN",
                        help="order the rows by this column, the best first for a metric's (default: by the config "
                             "values, or by path with --per-run)")  # fmt: skip
    parser.add_argument("--out", metavar="DIR", default=".",
                        help=f"folder for {CSV_NAME} and {REPORT_NAME}, made if missing (default: the current folder)")  # fmt: skip
    parser.add_argument("--table-only", action="store_true", help="print the table, write no file (default: off)")
    return parser


def _split(values: Iterable[str]) -> list[str]:
    """``["a,b", "c"]`` -> ``["a", "b", "c"]``."""
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def main(argv: Sequence[str], higher_is_better: HigherIsBetter) -> int:
    """``bin/compare.py PATH...``; the exit code."""
    args = build_parser(Path(argv[0]).name).parse_args(argv[1:])  # exits 2 with the usage on a bad command line
    try:
        runs = [read_run(path) for path in find_runs(args.paths)]
        metrics = choose_metrics(runs, _split(args.metric))
        group_by = _split([args.group_by]) if args.group_by is not None else None
        comparison = compare(runs, metrics, higher_is_better, group_by, args.per_run)
        if args.sort:
            comparison = sort_rows(comparison, args.sort, higher_is_better)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    shown = for_people(comparison)
    if "runs" in shown:  # the paths of each group's runs: their start is enough on a terminal
        shown["runs"] = shown["runs"].map(lambda paths: paths if len(paths) <= 60 else paths[:59] + "…")
    print(shown.to_string(index=False))
    if args.table_only:
        return EXIT_OK
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        comparison.table.to_csv(out / CSV_NAME, index=False)
        command = shlex.join(["python", *argv])
        (out / REPORT_NAME).write_text(report(comparison, command, higher_is_better), encoding="utf-8")
    except OSError as err:
        print(f"error: cannot write the comparison to {out}: {err}", file=sys.stderr)
        return EXIT_FAILED
    print(f"wrote {out / CSV_NAME} and {out / REPORT_NAME}", file=sys.stderr)
    return EXIT_OK
