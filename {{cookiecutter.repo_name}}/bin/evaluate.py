#!/usr/bin/env python
"""Test-set metrics of a run: ``python bin/evaluate.py RESULTS_DIR``.

Training never sees the test set; this explicit step loads the run's config and
model.pt, reports loss and accuracy on the test split and writes them to
RESULTS_DIR/test_metrics.json.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # works from a checkout, installed or not

from {{ cookiecutter.proj_name }}.experiment import main_evaluate  # noqa: E402

if __name__ == "__main__":
    sys.exit(main_evaluate(sys.argv))
