"""Data-parallel training over several processes: torchrun's workers, or the tasks of a SLURM job.

Each process trains a replica of the network on its shard of every batch
(``DistributedDataParallel`` averages the gradients), so all replicas hold the
same weights and optimizer state at every step.  ``World`` is what the rest of
the engine sees of this: the process's rank, how many there are, and the few
collectives the loop needs.  With one process (no torchrun, a one-task job)
``World()`` is a world of one and every collective returns its input.

Rank 0 owns the results directory; the other ranks write nothing there.  The
processes agree after every step on whether to stop or checkpoint (a signal may
reach only one of them, and the clocks differ), so they always stop at the same
step.
"""

from __future__ import annotations

import atexit
import ctypes
import datetime as dt
import os
import signal
import socket
import sys
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
import torch.distributed as dist

# How long a process waits for the others at start-up and in a collective before it gives up.
TIMEOUT = dt.timedelta(minutes=10)
_EXIT_CODE: int | None = None  # set by World.close: the exit code of a process of several, taken at exit


@dataclass
class World:
    """This process's place among the training processes (a world of one by default)."""

    rank: int = 0
    local_rank: int = 0  # which of this machine's devices it trains on
    size: int = 1
    rendezvous: str | None = None  # HOST:PORT of the store the processes met through
    launcher: str | None = None  # torchrun or slurm
    _cpu_group: Any = field(default=None, repr=False)  # gloo group for the CPU-side agreements (nccl cannot)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def max(self, values: Sequence[int]) -> list[int]:
        """Each of ``values``, the largest any process has (on the CPU: no device sync)."""
        if self.size == 1:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.int64)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX, group=self._cpu_group)
        return tensor.tolist()

    def total(self, loss_sum: torch.Tensor, samples: int) -> tuple[torch.Tensor, int]:
        """A loss sum (on the device) and a sample count, summed over the processes."""
        if self.size == 1:
            return loss_sum, samples
        loss_sum, count = loss_sum.clone(), torch.tensor(samples, device=loss_sum.device)
        dist.all_reduce(loss_sum)
        dist.all_reduce(count)
        return loss_sum, int(count.item())

    def share_buffers(self, module: torch.nn.Module) -> None:
        """Give every process rank 0's buffers (BatchNorm's running statistics), which its checkpoint holds."""
        for buffer in module.buffers() if self.size > 1 else ():
            dist.broadcast(buffer, src=0)

    def gather(self, obj: Any) -> list[Any] | None:
        """Every process's ``obj``, in rank order, on rank 0 (None elsewhere)."""
        if self.size == 1:
            return [obj]
        gathered = [None] * self.size if self.is_main else None
        dist.gather_object(obj, gathered, dst=0, group=self._cpu_group)
        return gathered

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj``, in every process."""
        if self.size == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0, group=self._cpu_group)
        return box[0]

    def close(self, code: int) -> None:
        """Leave the world once the run has ended with exit ``code``: the process exits with it, at interpreter exit.

        Not ``destroy_process_group``: gloo's teardown in torch 2.14 aborts about one exit in five ("terminate
        called without an active exception"), also without it, at interpreter exit, which would turn a
        finished run's exit code into SIGABRT.  Everything is written by now: the process skips that teardown.
        """
        global _EXIT_CODE
        if self.size > 1:
            _EXIT_CODE = code


def launched() -> dict[str, Any] | None:
    """Rank, local rank, world size and rendezvous set by torchrun or SLURM, or None for a single process."""
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env and "TORCHELASTIC_RUN_ID" in env:
        return {
            "rank": int(env["RANK"]),
            "local_rank": int(env["LOCAL_RANK"]),
            "size": int(env["WORLD_SIZE"]),
            "host": env["MASTER_ADDR"],
            "port": int(env["MASTER_PORT"]),
            "launcher": "torchrun",
        }
    if int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in env and "SLURM_STEP_ID" in env:
        # A task of a multi-task job step (srun): submitit's helper reads SLURM's variables (the first node of
        # the job hosts the store, on a port derived from the job id).
        from submitit.helpers import TorchDistributedEnvironment

        found = TorchDistributedEnvironment()
        return {
            "rank": found.rank,
            "local_rank": found.local_rank,
            "size": found.world_size,
            "host": found.master_addr,
            "port": found.master_port,
            "launcher": "slurm",
        }
    return None


def start(device_name: str) -> World:
    """Join the other training processes, if this one was started as one of several; a world of one otherwise.

    nccl on CUDA (one device per local rank), gloo on the CPU.  Workers that
    torchrun restarts meet under a key prefix of their own: the agent's store
    outlives them and still holds the dead workers' addresses.
    """
    found = launched()
    if found is None or found["size"] == 1:
        return World()
    if found["launcher"] == "torchrun":
        _die_with_the_agent()
    atexit.register(_exit_without_teardown)  # (runs before torch's own exit handlers: registered after them)
    cuda = device_name in ("auto", "cuda") and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(found["local_rank"])
    rank, size = found["rank"], found["size"]
    agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = dist.TCPStore(
        found["host"], found["port"], size, is_master=rank == 0 and not agent_store, timeout=TIMEOUT,
        wait_for_workers=False,
    )  # fmt: skip
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    store = dist.PrefixStore(f"training/attempt_{attempt}", store)
    dist.init_process_group("nccl" if cuda else "gloo", store=store, rank=rank, world_size=size, timeout=TIMEOUT)
    cpu_group = dist.new_group(backend="gloo") if cuda else None
    return World(rank, found["local_rank"], size, f"{found['host']}:{found['port']}", found["launcher"], cpu_group)


def describe(world: World, device: torch.device) -> dict[str, Any]:
    """What meta.json records of the world: its size, rendezvous and backend, and each rank's host and device."""
    me = {"rank": world.rank, "host": socket.gethostname(), "device": str(device)}
    ranks = world.gather(me)
    if world.size == 1:
        return {"world_size": 1}
    return {
        "world_size": world.size,
        "launcher": world.launcher,
        "rendezvous": world.rendezvous,
        "backend": dist.get_backend(),
        "ranks": ranks,
    }


def _exit_without_teardown() -> None:
    """At interpreter exit, after a run recorded by ``World.close``: exit with its code, skipping C++ teardown."""
    if _EXIT_CODE is not None:
        from .signals import exit_status

        code = exit_status(_EXIT_CODE)
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)


def _die_with_the_agent() -> None:
    """Have the kernel SIGKILL this torchrun worker when its agent dies (Linux).

    Each worker runs in a session of its own: a killed agent would leave it
    training, holding rank 0's lock against the rerun, or racing it.  Killed,
    it writes nothing more (an unfinished checkpoint is never published).
    """
    if not sys.platform.startswith("linux"):
        return
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:  # the agent died before the call
        os.kill(os.getpid(), signal.SIGKILL)
