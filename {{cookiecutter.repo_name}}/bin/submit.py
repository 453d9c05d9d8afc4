#!/usr/bin/env python
"""Submit a training to SLURM: ``python bin/submit.py [--time MINUTES ...] -- CONFIG RESULTS_DIR [--key=value ...]``.

The command after ``--`` is checked as ``bin/train.py`` checks it, then runs as
a job (through submitit) that checkpoints and requeues itself before its time
limit and resumes in RESULTS_DIR.  Run with --help for the options.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # works from a checkout, installed or not

from {{ cookiecutter.proj_name }}.experiment import main_submit  # noqa: E402

if __name__ == "__main__":
    sys.exit(main_submit(sys.argv))
