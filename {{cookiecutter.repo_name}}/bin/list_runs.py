#!/usr/bin/env python
"""One table of every run under a folder: ``python bin/list_runs.py [RUNS_DIR] [--csv FILE]``.

Finds every results directory (a folder with meta.json) below RUNS_DIR
(default: runs) and shows its status, epochs, task, the monitored column's best value
and epoch, best validation accuracy, test metrics (after bin/evaluate.py), model, data,
start time and git commit.  A
file that cannot be read (damaged, edited by hand) is named in an
``unreadable`` column; the other runs are listed as usual.
"""

import argparse
import json
import sys
from pathlib import Path


def summarize(run: Path) -> dict:
    """One row for the run in ``run``; a file that cannot be read is named in the row instead of stopping the table."""
    import pandas as pd

    row: dict = {"run": str(run)}
    problems = []

    def read_json(name: str) -> dict:
        try:
            value = json.loads((run / name).read_bytes())
            return value if isinstance(value, dict) else {}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as err:
            problems.append(f"{name}: {type(err).__name__}")
            return {}

    meta, config, test = read_json("meta.json"), read_json("config.json"), read_json("test_metrics.json")
    loop = read_json("loop_state.json")
    row.update(
        status=meta.get("status"),
        start=meta.get("first_start_time"),
        model=(config.get("model") or {}).get("name"),
        data=(config.get("data") or {}).get("name"),
        task=config.get("task", "classification"),
        monitor=loop.get("monitor"),
        best=loop.get("best_value"),  # of the monitored column, at best_epoch
        best_epoch=loop.get("best_epoch"),
        git=(meta.get("git_commit") or "")[:8] + ("+dirty" if meta.get("git_dirty") else ""),
        epochs=0,
    )
    history = run / "history.csv"
    if history.is_file() and history.stat().st_size:
        try:
            frame = pd.read_csv(history)
            epochs = pd.to_numeric(frame["epoch"], errors="raise")
            row["epochs"] = int(epochs.max()) if len(frame) else 0
            if "valid_acc" in frame:
                row["best_valid_acc"] = pd.to_numeric(frame["valid_acc"], errors="coerce").max()
        except (ValueError, KeyError, pd.errors.ParserError) as err:  # headerless, cut short, edited by hand
            problems.append(f"history.csv: {type(err).__name__}")
    row.update({key: value for key, value in test.items() if key.startswith("test_")})
    if problems:
        row["unreadable"] = "; ".join(problems)
    return row


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs_dir", nargs="?", default="runs", help="folder to search (default: runs)")
    parser.add_argument("--csv", help="also write the table to this CSV file (default: no file)")
    args = parser.parse_args(argv[1:])
    import pandas as pd

    runs = sorted(path.parent for path in Path(args.runs_dir).rglob("meta.json"))
    if not runs:
        print(f"no runs under {args.runs_dir}", file=sys.stderr)
        return 1
    table = pd.DataFrame([summarize(run) for run in runs])
    with pd.option_context("display.width", 200, "display.max_columns", None):
        print(table.to_string(index=False))
    if args.csv:
        table.to_csv(args.csv, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
