#!/usr/bin/env python
"""Sweep a config: ``python bin/sweep.py CONFIG SWEEP_DIR [--grid KEY=[v1,...]]... [--search KEY=DIST]... [-- --key=value ...]``.

Every trial is an ordinary run in SWEEP_DIR/trial_NNNN; Optuna chooses the
parameters and keeps the study in SWEEP_DIR.  Running the same command again
resumes the sweep; ``--status SWEEP_DIR`` prints its table.  Run with --help
for the options.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # works from a checkout, installed or not

from {{ cookiecutter.proj_name }}.engine import signals  # noqa: E402

signals.catch()  # before the slow imports: Ctrl-C or SIGTERM at any moment stops the trials after a checkpoint

from {{ cookiecutter.proj_name }}.experiment import main_sweep  # noqa: E402

if __name__ == "__main__":
    sys.exit(signals.exit_status(main_sweep(sys.argv)))
