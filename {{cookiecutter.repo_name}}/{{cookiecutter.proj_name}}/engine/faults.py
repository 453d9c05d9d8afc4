"""Fault injection for the tests: make a real run fail in a chosen way, at a chosen moment.

The tests start ``bin/train.py`` as a real process with, for example,
``TRAINER_FAULTS="nan_at_step=7,slow_checkpoint_s=0.5"``; an unset variable
(every normal run) turns every fault off.  Known faults:

* ``nan_at_step=N``        the inputs of optimisation step N are NaN (so its loss is)
* ``enospc_from_step=N``   writing a checkpoint of step N or later fails with ENOSPC
* ``slow_checkpoint_s=S``  sleep S seconds in the middle of every checkpoint write
* ``record_samples=1``     append the sample ids of every batch to samples_<pid>.txt
* ``pause_at_step=N``      sleep a minute before step N (after recording its samples), so that a test can
                           SIGKILL the process there instead of racing a run that ends in milliseconds
"""

from __future__ import annotations

import os

ENV = "TRAINER_FAULTS"
KNOWN = {
    "nan_at_step": int,
    "enospc_from_step": int,
    "slow_checkpoint_s": float,
    "record_samples": int,
    "pause_at_step": int,
}


def _parse(text: str) -> dict[str, float]:
    faults = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, _, value = item.partition("=")
        if key not in KNOWN:
            raise ValueError(f"{ENV}: unknown fault {key!r}; known: {', '.join(KNOWN)}")
        faults[key] = KNOWN[key](value)
    return faults


FAULTS = _parse(os.environ.get(ENV, ""))


def get(name: str, default=None):
    """The value of fault ``name``, or ``default`` when it is not injected."""
    return FAULTS.get(name, default)
