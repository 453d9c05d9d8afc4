"""Checkpoints that survive a crash at any moment and never unpickle anything.

A checkpoint is a folder ``checkpoints/step_<global step>/`` holding

* ``model.pt``        the network's state dict,
* ``state.pt``        every other tensor: optimizer state, torch/NumPy RNG states,
* ``loop_state.json`` counters and plain values (epoch, step, Python RNG, ...).

It is written into a temporary folder, fsynced and renamed into place, so a
folder with a final name is always complete.  Tensors are read back with
``torch.load(weights_only=True)``, which refuses anything but tensors and plain
containers; JSON holds the rest.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINTS = "checkpoints"
PREFIX = "step_"


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never half of one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def _save_tensors(obj: Any, path: Path) -> None:
    with open(path, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())


def load_tensors(path: Path, device: torch.device | str = "cpu") -> Any:
    """Load a ``.pt`` file without unpickling arbitrary objects."""
    return torch.load(path, map_location=device, weights_only=True)


def capture_rng() -> tuple[dict[str, Any], dict[str, Any]]:
    """Every random state that changes a run, split into (tensors, JSON-able values)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors: dict[str, Any] = {"torch": torch.get_rng_state(), "numpy_keys": torch.from_numpy(keys.astype(np.int64))}
    if torch.cuda.is_available():
        tensors["cuda"] = torch.cuda.get_rng_state_all()
    version, state, gauss = random.getstate()
    plain = {
        "python": [version, list(state), gauss],
        "numpy": {"kind": kind, "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
    }
    return tensors, plain


def restore_rng(tensors: dict[str, Any], plain: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch"].cpu())
    if "cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([state.cpu() for state in tensors["cuda"]])
    np_state = plain["numpy"]
    np.random.set_state(
        (
            np_state["kind"],
            tensors["numpy_keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    version, state, gauss = plain["python"]
    random.setstate((version, tuple(state), gauss))


def save_checkpoint(
    results_dir: Path, step: int, model_state: dict, tensors: dict, loop_state: dict, keep: int = 2
) -> Path:
    """Write checkpoint ``step`` atomically; keep the ``keep`` newest; point ``model.pt`` at it."""
    root = Path(results_dir) / CHECKPOINTS
    root.mkdir(exist_ok=True)
    final = root / f"{PREFIX}{step:09d}"
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".tmp-"))
    os.chmod(tmp, 0o777 & ~_UMASK)
    try:
        _save_tensors(model_state, tmp / "model.pt")
        _save_tensors(tensors, tmp / "state.pt")
        atomic_write_json(tmp / "loop_state.json", loop_state)
        fsync_dir(tmp)
        if final.exists():  # same step saved twice (e.g. resumed then stopped at once): newest wins
            shutil.rmtree(final)
        os.rename(tmp, final)
        fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _publish_model(Path(results_dir), final / "model.pt")
    atomic_write_json(
        Path(results_dir) / "loop_state.json", {**loop_state, "checkpoint": str(final.relative_to(results_dir))}
    )
    for old in list_checkpoints(results_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _publish_model(results_dir: Path, source: Path) -> None:
    """Make ``RESULTS_DIR/model.pt`` the newest weights: a hard link, so no second copy is written."""
    tmp = results_dir / ".model.pt.tmp"
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:  # file systems without hard links
        shutil.copyfile(source, tmp)
    os.replace(tmp, results_dir / "model.pt")


def list_checkpoints(results_dir: Path) -> list[Path]:
    """Complete checkpoint folders, oldest first (temporary folders are never listed)."""
    root = Path(results_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX))


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> tuple[dict, dict, dict]:
    """Return ``(model_state, tensors, loop_state)`` of one checkpoint folder."""
    path = Path(path)
    loop_state = json.loads((path / "loop_state.json").read_text())
    return load_tensors(path / "model.pt", device), load_tensors(path / "state.pt", device), loop_state
