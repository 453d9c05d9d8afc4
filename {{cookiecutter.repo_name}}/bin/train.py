#!/usr/bin/env python
"""Train a model: ``python bin/train.py CONFIG RESULTS_DIR [--key=value ...]``.

Run with --help for the configs, every key with its type and default, and
examples.  Running the same command again on RESULTS_DIR resumes the run.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # works from a checkout, installed or not

from {{ cookiecutter.proj_name }}.engine import signals  # noqa: E402

signals.catch()  # before the slow imports: a scheduler's stop signal during start-up is recorded, not fatal

from {{ cookiecutter.proj_name }}.experiment import main_train  # noqa: E402

if __name__ == "__main__":
    sys.exit(signals.exit_status(main_train(sys.argv)))  # 128+N if a stop signal came; ignored from here on
