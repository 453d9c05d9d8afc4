#!/usr/bin/env python
"""``bin/train.py`` with faults injected from outside the engine, for the tests.

    TRAINER_FAULTS="nan_at_step=7,slow_checkpoint_s=0.5" python tests/faulty_train.py CONFIG RESULTS_DIR ...

runs exactly what ``python bin/train.py CONFIG RESULTS_DIR ...`` runs (the
results directory records bin/train.py), after wrapping two engine functions:
``Trainer.step_batches`` (what each optimisation step is given) and
``checkpoint.save_checkpoint`` (a checkpoint's write).  Known faults:

* ``nan_at_step=N``        the inputs of optimisation step N are NaN (so its loss is)
* ``enospc_from_step=N``   writing a checkpoint of step N or later fails with ENOSPC halfway
* ``slow_checkpoint_s=S``  sleep S seconds halfway through every checkpoint write
* ``record_samples=1``     append ``epoch step sample ids`` of every step to RESULTS_DIR/samples_<pid>.txt
* ``pause_at_step=N``      sleep a minute before step N (after recording its samples), so that a test can
                           SIGKILL the process there instead of racing a run that ends in milliseconds
"""

import errno
import math
import os
import runpy
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from {{ cookiecutter.proj_name }}.engine import signals  # noqa: E402

signals.catch()  # as bin/train.py does, before the slow imports

import torch  # noqa: E402

from {{ cookiecutter.proj_name }}.engine import checkpoint, loop  # noqa: E402

KNOWN = {"nan_at_step": int, "enospc_from_step": int, "slow_checkpoint_s": float, "record_samples": int,
         "pause_at_step": int}  # fmt: skip


def parse(text: str) -> dict[str, float]:
    faults = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, _, value = item.partition("=")
        if key not in KNOWN:
            raise SystemExit(f"TRAINER_FAULTS: unknown fault {key!r}; known: {', '.join(KNOWN)}")
        faults[key] = KNOWN[key](value)
    return faults


FAULTS = parse(os.environ.get("TRAINER_FAULTS", ""))
step_batches, save_checkpoint, save_tensors = (
    loop.Trainer.step_batches,
    checkpoint.save_checkpoint,
    checkpoint._save_tensors,
)
writing_step = [0]  # the step of the checkpoint being written


def faulty_step_batches(self, epoch: int):
    order = self.train.order(epoch).tolist() if FAULTS.get("record_samples") else None
    for group in step_batches(self, epoch):
        step = self.global_step + 1
        if FAULTS.get("nan_at_step") == step:
            group = [(torch.full_like(x, math.nan), y) for x, y in group]
        if order is not None:
            size = self.train.batch_size
            ids = order[self.batch * size : (self.batch + len(group)) * size]
            with open(self.results.path / f"samples_{os.getpid()}.txt", "a") as f:
                f.write(f"{epoch} {step} {' '.join(map(str, ids))}\n")
        if FAULTS.get("pause_at_step") == step:
            time.sleep(60)
        yield group


def faulty_save_checkpoint(results_dir, step, *args, **kwargs):
    writing_step[0] = step
    return save_checkpoint(results_dir, step, *args, **kwargs)


def faulty_save_tensors(obj, path: Path) -> None:
    if path.name == "state.pt":  # the second file of a checkpoint: halfway through its write
        time.sleep(FAULTS.get("slow_checkpoint_s", 0))
        if writing_step[0] >= FAULTS.get("enospc_from_step", math.inf):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    save_tensors(obj, path)


loop.Trainer.step_batches = faulty_step_batches
checkpoint.save_checkpoint = faulty_save_checkpoint
checkpoint._save_tensors = faulty_save_tensors

sys.argv[0] = str(ROOT / "bin" / "train.py")
runpy.run_path(sys.argv[0], run_name="__main__")
