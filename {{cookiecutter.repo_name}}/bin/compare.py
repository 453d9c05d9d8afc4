#!/usr/bin/env python
"""Compare runs: ``python bin/compare.py PATH... [--metric NAME]... [--group-by KEY,... | --per-run] [--out DIR]``.

One table of every run under each PATH, a row per group of runs that differ only by seed (mean, 95%
confidence interval, n), printed and written to compare.csv, and report.html with the learning curves.
Run with --help for the columns and options.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # works from a checkout, installed or not

from {{ cookiecutter.proj_name }}.experiment import main_compare  # noqa: E402

if __name__ == "__main__":
    sys.exit(main_compare(sys.argv))
