#!/usr/bin/env python
"""One table of every run under a folder: ``python bin/list_runs.py [RUNS_DIR] [--csv FILE]``.

Finds every results directory (a folder with meta.json) below RUNS_DIR
(default: runs) and shows its status, epochs, best validation accuracy, test
accuracy (after bin/evaluate.py), model, data, start time and git commit.
"""

import argparse
import json
import sys
from pathlib import Path


def summarize(run: Path) -> dict:
    import pandas as pd

    meta = json.loads((run / "meta.json").read_text())
    config = json.loads((run / "config.json").read_text()) if (run / "config.json").is_file() else {}
    row = {
        "run": str(run),
        "status": meta.get("status"),
        "start": meta.get("first_start_time"),
        "model": config.get("model", {}).get("name"),
        "data": config.get("data", {}).get("name"),
        "git": (meta.get("git_commit") or "")[:8] + ("+dirty" if meta.get("git_dirty") else ""),
    }
    history = run / "history.csv"
    frame = pd.read_csv(history) if history.is_file() and history.stat().st_size else pd.DataFrame()
    row["epochs"] = int(frame["epoch"].max()) if len(frame) else 0
    if len(frame) and "valid_acc" in frame:
        row["best_valid_acc"] = frame["valid_acc"].max()
    test = run / "test_metrics.json"
    if test.is_file():
        row["test_acc"] = json.loads(test.read_text()).get("test_acc")
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
