"""Checkpoints that survive a crash at any moment and never unpickle anything.

A checkpoint is a folder ``checkpoints/step_<global step>/`` holding

* ``model.pt``        the network's state dict,
* ``state.pt``        every other tensor: optimizer state, torch/NumPy/Python RNG states,
* ``loop_state.json`` counters and plain values (epoch, step, best metric, ...).

Its files are written into a temporary folder and fsynced, and the folder is
renamed into place (the rename synced), so a folder with a final name is
always complete.  Tensors are read back with
``torch.load(weights_only=True)``, which refuses anything but tensors and plain
containers; JSON holds the rest.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
import torch

from .cli import setting
from .distributed import World

CHECKPOINTS = "checkpoints"
PREFIX = "step_"
UNREADABLE = "unreadable_"  # prefix of a checkpoint folder set aside because it could not be read


@dataclass
class CheckpointSettings:
    every_steps: int = setting(0, low=0)  # also checkpoint every N optimisation steps inside an epoch (0: off)
    every_minutes: float = setting(10.0, low=0)  # ... and once this long has passed since the last one (0: off)
    keep: int = setting(2, low=1)  # newest checkpoints kept in RESULTS_DIR/checkpoints


class CheckpointWriteError(Exception):
    """Writing a checkpoint failed (disk full, quota, I/O error); the previous checkpoint is intact."""


class UntrustedFileError(Exception):
    """A ``.pt`` file holds Python objects other than tensors: it could run code, so it is refused."""


class DamagedFileError(ValueError):
    """A ``.pt`` file cannot be read as tensors, or declares more tensor data than it holds."""


# A file's tensors may declare at most this many times its size in bytes: views of one storage (tied weights)
# count once per view, but a crafted file cannot make a loader allocate gigabytes from a few megabytes.
MAX_DECLARED_PER_BYTE = 4


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


def fsync_file(path: Path) -> None:
    """Make what was written to an existing file durable (a no-op if there is no file)."""
    if Path(path).exists():
        with open(path, "rb+") as f:
            os.fsync(f.fileno())


_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def names_file(path: str | Path):
    """Name ``path`` in an ``OSError`` raised inside that names no file (a failed ``write`` does not).

    The error line and meta.json's reason then say which write failed: a full
    disk may stop any of them.
    """
    try:
        yield
    except OSError as err:
        if err.filename is not None or err.errno is None:
            raise
        raise OSError(err.errno, err.strerror, str(path)) from err


def atomic_write_bytes(path: Path, data: bytes | memoryview, durable: bool = True) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never half of one.

    ``durable``: also fsync the file and its folder, so the new file survives a
    power cut.  Leave it off only for copies that can be made again (two fsyncs
    cost more than the rest of a small checkpoint).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with names_file(path):  # a failed write names no file
            os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                if durable:
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)


def json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode()


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, json_bytes(obj))


def _write_synced(path: Path, data: bytes | memoryview) -> None:
    """Write and fsync a new file inside a checkpoint's temporary folder (the folder's rename is the atomic step)."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _tensor_bytes(obj: Any) -> memoryview:
    # Serialise in memory first: a full disk then fails in f.write with a plain OSError (ENOSPC),
    # not somewhere inside torch's zip writer.
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getbuffer()


def _save_tensors(obj: Any, path: Path) -> None:
    _write_synced(path, _tensor_bytes(obj))


def load_tensors(path: Path, device: torch.device | str = "cpu") -> Any:
    """Load a ``.pt`` file without unpickling arbitrary objects, in memory bounded by the file's size.

    Raises ``UntrustedFileError`` if the file asks for any Python callable
    (what a booby-trapped pickle does; nothing in it is run), and
    ``DamagedFileError`` if it is not a tensor file or declares more data than
    it holds.  The tensors are loaded as views of the memory-mapped file, which
    cannot be larger than the file (a compressed or crafted record declaring
    gigabytes is refused before anything is allocated), then copied to ``device``.
    """
    path = Path(path)
    try:
        mapped = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as err:
        if "global" in str(err).lower():
            raise UntrustedFileError(
                f"{path} contains Python objects, not just tensors; it was not loaded because it could run code. "
                "Delete it if you did not put it there."
            ) from None
        raise DamagedFileError(f"{path} is not a readable tensor file ({first_line(err)})") from None
    except Exception as err:  # truncated, not a zip, a record larger than the file: torch raises RuntimeError
        raise DamagedFileError(f"{path} is not a readable tensor file ({first_line(err)})") from None
    sizes: list[int] = []
    map_tensors(mapped, lambda t: sizes.append(t.numel() * t.element_size()))
    if sum(sizes) > MAX_DECLARED_PER_BYTE * path.stat().st_size:
        raise DamagedFileError(f"{path} declares {sum(sizes)} bytes of tensors in {path.stat().st_size} bytes")
    return map_tensors(mapped, lambda t: t.to(device, copy=True))  # owned memory, no longer tied to the file


def map_tensors(obj: Any, fn: Callable[[torch.Tensor], Any]) -> Any:
    """``obj`` (nested dicts, lists, tuples) with ``fn`` applied to every tensor."""
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, dict):
        return {key: map_tensors(value, fn) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        values = [map_tensors(value, fn) for value in obj]
        return type(obj)(*values) if hasattr(obj, "_fields") else type(obj)(values)  # namedtuples take fields
    return obj


def first_line(err: BaseException) -> str:
    """``Type: first line of the message``, for one-line warnings and errors."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:300] if text else ''}"


def capture_rng(device: torch.device) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every random state that changes a run on ``device``, split into (tensors, JSON-able values).

    Of the GPUs, only the training device's generator matters (and touching the
    others would start CUDA on each of them, or fail on a machine with fewer).
    """
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, state, gauss = random.getstate()
    # The two 625-number generator states are tensors, not JSON: loop_state.json stays short enough to read,
    # and writing it costs microseconds (JSON with indentation is encoded in pure Python).
    tensors: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(keys.astype(np.int64)),
        "python": torch.from_numpy(np.array(state, dtype=np.int64)),
    }
    if device.type == "cuda":
        tensors["cuda"] = torch.cuda.get_rng_state(device)
    plain = {
        "python": {"version": version, "gauss_next": gauss},
        "numpy": {"kind": kind, "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
    }
    return tensors, plain


def restore_rng(tensors: dict[str, Any], plain: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(tensors["torch"].cpu())
    if "cuda" in tensors and device.type == "cuda":
        torch.cuda.set_rng_state(tensors["cuda"].cpu(), device)
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
    python = plain["python"]
    random.setstate((python["version"], tuple(tensors["python"].tolist()), python["gauss_next"]))


def save_checkpoint(
    results_dir: Path, step: int, model_state: dict, tensors: dict, loop_state: dict, keep: int = 2
) -> Path:
    """Write checkpoint ``step`` atomically; keep the ``keep`` newest; point ``model.pt`` at it.

    Raises ``CheckpointWriteError`` if anything cannot be written; the older
    checkpoints are then untouched, so the run can resume from the last one.
    """
    results_dir = Path(results_dir)
    root = results_dir / CHECKPOINTS
    final = root / f"{PREFIX}{step:09d}"
    tmp = None
    try:
        root.mkdir(exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=".tmp-"))
        os.chmod(tmp, 0o777 & ~_UMASK)
        _save_tensors(model_state, tmp / "model.pt")
        _save_tensors(tensors, tmp / "state.pt")
        _write_synced(tmp / "loop_state.json", json_bytes(loop_state))
        # The temporary folder itself is not fsynced: on Linux's journaling file systems (ext4, XFS, btrfs)
        # fsyncing a new file also makes its name durable, and on a small VM every fsync costs the training
        # about as long as it waits (0.7 ms on the 2-core CI machine).  The rename below is synced.
        if final.exists():  # a folder set aside as unreadable had this step: the new one replaces it
            shutil.rmtree(final)
        os.rename(tmp, final)
        fsync_dir(root)
        publish_checkpoint(final, loop_state)
    except BaseException as err:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, OSError):
            raise CheckpointWriteError(f"could not write checkpoint {final.name}: {err}") from err
        raise
    for old in list_checkpoints(results_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def sync_published(results_dir: Path) -> None:
    """Make the published ``loop_state.json``, ``model.pt`` and ``best_model.pt`` durable (once, when a run returns)."""
    for name in ("loop_state.json", "model.pt", "best_model.pt"):
        fsync_file(Path(results_dir) / name)
    fsync_dir(Path(results_dir))


def publish_checkpoint(folder: Path, loop_state: dict) -> None:
    """Copy checkpoint ``folder``'s weights to ``RESULTS_DIR/model.pt`` and its position to ``loop_state.json``.

    Not fsynced: both are copies of the durable checkpoint; resuming
    publishes them again and a returning run syncs them (``sync_published``).
    A power cut in between can leave them one checkpoint behind until then.
    """
    results_dir = folder.parent.parent
    publish(folder / "model.pt", results_dir / "model.pt")
    loop_state = {**loop_state, "checkpoint": f"{CHECKPOINTS}/{folder.name}"}
    atomic_write_bytes(results_dir / "loop_state.json", json_bytes(loop_state), durable=False)


def remove_leftovers(results_dir: Path) -> list[Path]:
    """Delete the temporary files and folders of writes that a killed process left half done.

    Only call this while holding the results directory's lock: then no live
    process can be writing them.
    """
    results_dir = Path(results_dir)
    found = [*results_dir.glob(".*.tmp"), *(results_dir / CHECKPOINTS).glob(".tmp-*")]
    for path in found:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    return found


def list_unreadable(results_dir: Path) -> list[Path]:
    """Checkpoint folders set aside by ``set_aside``."""
    root = Path(results_dir) / CHECKPOINTS
    return sorted(root.glob(f"{UNREADABLE}*")) if root.is_dir() else []


def publish(source: Path, target: Path) -> None:
    """Atomically make ``target`` a copy of ``source``.

    A copy, not a hard link: a user who saves over ``model.pt`` or
    ``best_model.pt`` must not change the checkpoint that resume reads.
    """
    atomic_write_bytes(target, Path(source).read_bytes(), durable=False)


def set_aside(path: Path) -> Path:
    """Rename an unreadable checkpoint folder so it is kept for inspection but never loaded again."""
    target = path.with_name(f"{UNREADABLE}{path.name}")
    if target.exists():
        shutil.rmtree(target)
    os.rename(path, target)
    return target


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


class NonFiniteLoss(RuntimeError):
    """The training loss or the weights became NaN or infinite; no checkpoint was written from that state."""


class NoReadableCheckpoint(RuntimeError):
    """Every checkpoint of a results directory failed to load."""


class CheckpointMismatch(RuntimeError):
    """A checkpoint was read but does not fit the model (its code or config changed)."""


class Stateful(Protocol):
    """What a checkpoint is taken of (``loop.Trainer``): weights, other tensors, a JSON-able loop state."""

    def state_dict(self) -> tuple[dict, dict, dict]: ...
    def load_state_dict(self, weights: dict, tensors: dict, loop: dict) -> None: ...


class FailedOnRankZero(RuntimeError):
    """Rank 0 could not load the checkpoint (it says why); the other processes stop too."""


class Checkpointer:
    """Saves a run's whole state into ``results_dir/checkpoints`` and loads the newest one back.

    The loop calls ``load`` once when it starts, ``save`` wherever it wants a
    checkpoint, and ``sync`` when it returns.  ``save`` writes in the training
    thread: a checkpoint of the shipped cifar10 CNN takes about 6 ms, against
    11 s per epoch, too little for a background writer to earn its complexity.

    Under data parallelism every process calls ``save`` and ``load`` at the same
    moments.  The weights and optimizer are the same in all of them; what
    differs (the ``rank`` entries of the state: running loss, metric states,
    random generators) is gathered, and rank 0 writes one checkpoint holding
    every process's share (``ranks``).  Each process loads its own share back.
    """

    def __init__(self, results_dir: Path, keep: int, device: torch.device, world: World | None = None):
        self.folder, self.keep, self.device, self.world = Path(results_dir), keep, device, world or World()
        self.saved_step = 0  # global step of the newest checkpoint written or loaded (0: nothing to save yet)
        self.last_save = time.monotonic()

    def seconds_since_save(self) -> float:
        return time.monotonic() - self.last_save

    def save(self, target: Stateful) -> None:
        """Checkpoint ``target`` unless this step is already saved.

        A state whose weights hold NaN or Inf is never written (``NonFiniteLoss``).
        """
        weights, tensors, loop = target.state_dict()
        step = loop["global_step"]
        if step == self.saved_step:
            return
        floats = [t for t in weights.values() if t.is_floating_point()]
        if floats and not torch.stack([t.isfinite().all() for t in floats]).all():  # one read-back for all
            raise NonFiniteLoss(f"the weights hold NaN or Inf at step {step}; no checkpoint was written")
        rng_tensors, rng_plain = capture_rng(self.device)
        mine = ({**tensors.pop("rank"), "rng": rng_tensors}, {**loop.pop("rank"), "rng": rng_plain})
        if self.world.size > 1:  # sent between processes as CPU tensors
            mine = map_tensors(mine, lambda t: t.detach().cpu())
        ranks = self.world.gather(mine)
        if self.world.is_main:
            tensors["ranks"], loop["ranks"] = [t for t, _ in ranks], [plain for _, plain in ranks]
            saved = save_checkpoint(self.folder, step, weights, tensors, loop, self.keep)
            if loop["is_best"]:
                publish(saved / "model.pt", self.folder / "best_model.pt")
        self.saved_step, self.last_save = step, time.monotonic()

    def load(self, target: Stateful) -> Path | None:
        """Load the newest readable checkpoint into ``target``; return its folder (None: there is none).

        An unreadable checkpoint (truncated, corrupted) is set aside with a
        warning and the one before it is used.  A file that would run code is
        never loaded (``UntrustedFileError``); a checkpoint that does not fit
        ``target`` (or was written by another number of processes) is
        ``CheckpointMismatch``.  Rank 0 chooses; the other processes load what
        it chose (``FailedOnRankZero`` if it failed).
        """
        if not self.world.is_main:
            chosen, problem = self.world.broadcast(None)
            if problem is not None:
                raise FailedOnRankZero(problem)
            if chosen is not None:
                self._apply(target, Path(chosen), *load_checkpoint(chosen))
            return None if chosen is None else Path(chosen)
        try:
            path = self._load_newest(target)
        except Exception as err:
            self.world.broadcast((None, f"{type(err).__name__}: {err}"))
            raise
        self.world.broadcast((None if path is None else str(path), None))
        if path is not None:  # a kill right after the checkpoint's rename may have left model.pt and friends behind
            publish_checkpoint(path, self._loop)
            if self._loop["is_best"]:
                publish(path / "model.pt", self.folder / "best_model.pt")
        return path

    def _load_newest(self, target: Stateful) -> Path | None:
        remove_leftovers(self.folder)  # the caller holds the lock: nobody else is writing them
        found = list_checkpoints(self.folder)
        for path in reversed(found):
            try:
                weights, tensors, loop = load_checkpoint(path)
            except UntrustedFileError:
                raise
            except Exception as err:  # truncated, corrupted: a damaged file, not a damaged run
                aside = set_aside(path)
                print(f"warning: {path.name} is unreadable ({first_line(err)}); kept as {aside.name}, "
                      "trying the one before", file=sys.stderr)  # fmt: skip
                continue
            self._apply(target, path, weights, tensors, loop)
            return path
        if found or list_unreadable(self.folder):  # never silently start such a run over
            raise NoReadableCheckpoint(
                f"no checkpoint in {self.folder / CHECKPOINTS} could be read (see the warnings); "
                "move the results directory away to start again"
            )
        return None

    def _apply(self, target: Stateful, path: Path, weights: dict, tensors: dict, loop: dict) -> None:
        """Load this process's share of a checkpoint's state into ``target``."""
        written_by = len(loop["ranks"])
        if written_by != self.world.size:
            raise CheckpointMismatch(
                f"{path} was written by {written_by} training process(es), and this run has {self.world.size}: "
                f"resume it with {written_by} (torchrun --nproc_per_node, SLURM tasks), or train into a new RESULTS_DIR"
            )
        tensors, mine = (
            {**tensors, "rank": tensors["ranks"][self.world.rank]},
            {**loop, "rank": loop["ranks"][self.world.rank]},
        )
        try:
            target.load_state_dict(weights, tensors, mine)
        except Exception as err:  # the files are fine but do not fit this model: the code or config changed
            raise CheckpointMismatch(
                f"{path} does not fit the model built from this config and code ({first_line(err)}); "
                "undo the change or train into a new RESULTS_DIR"
            ) from None
        restore_rng(tensors["rank"]["rng"], mine["rank"]["rng"], self.device)
        self.saved_step, self._loop = loop["global_step"], loop

    def sync(self) -> None:
        """Make the top-level copies of the newest checkpoint durable (``sync_published``): once, as a run returns."""
        sync_published(self.folder)
