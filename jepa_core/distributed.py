"""Process-group setup: from torchrun's or submitit's environment, never silently single.

The official I-JEPA code swallows init errors, falls back to one process and
uses a fixed port; here a failed init is an error and the rendezvous address
comes from the job:

* torchrun (or ``launch --local --nproc N``): ``RANK``, ``WORLD_SIZE``,
  ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` are used as they are;
* a submitit Slurm job (``SUBMITIT_EXECUTOR=slurm``) with several tasks: rank,
  world size and local rank from submitit's ``JobEnvironment``, the first node
  of the allocation as the master and a port derived from ``SLURM_JOB_ID``
  (unless ``MASTER_PORT`` is set), so jobs sharing a node do not collide.

gloo on the CPU, NCCL on CUDA. This module also holds the stop request that a
preemption or time-limit signal raises (:data:`STOP`): the training loop polls
it between optimizer steps, so a checkpoint is only ever written at a step
boundary, and under DDP every rank agrees on the step at which it stops.
"""

from __future__ import annotations

import datetime
import os
import socket
from typing import Any

import attrs
import torch
import torch.distributed as tdist
from torch import nn

#: the Slurm rendezvous port is PORT_BASE + job id % PORT_SPAN: below Linux's
#: ephemeral range (32768-60999), so no outgoing connection holds it by chance
PORT_BASE, PORT_SPAN = 10000, 20000


class DistributedInitError(RuntimeError):
    """torch.distributed could not be initialised (never a silent fall-back to one process)."""


class Preempted(BaseException):
    """The training loop checkpointed at ``step`` and stopped because a stop was requested.

    A BaseException, like KeyboardInterrupt: a preempted run has not failed, so
    ``except Exception`` handlers (status files, loggers) must not treat it as an error.
    """

    def __init__(self, step: int):
        super().__init__(f"stopped at step {step} after a preemption or time-limit signal (checkpoint written)")
        self.step = step


@attrs.define
class DistInfo:
    """Rank, world size and device of this process (defaults: a single process)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: Any = None
    #: a gloo group for CPU-side agreement (stop requests) when the main backend is NCCL
    control: Any = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def wrap(self, module: nn.Module) -> nn.Module:
        """DDP-wrap a module with trainable parameters when several processes train."""
        if not self.active or not any(p.requires_grad for p in module.parameters()):
            return module
        device_ids = [self.device.index] if self.device is not None and self.device.type == "cuda" else None
        # static_graph: the same parameters take part in every step, and some never do
        # (timm's unused fc_norm); DDP learns that set on the first step instead of
        # failing on it (or searching the graph every step, find_unused_parameters)
        return nn.parallel.DistributedDataParallel(module, device_ids=device_ids, static_graph=True)

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return value
        value = value.clone()
        tdist.all_reduce(value)
        return value / self.world_size

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on any rank (a CPU all-reduce)."""
        if not self.active:
            return bool(flag)
        value = torch.tensor([int(bool(flag))], dtype=torch.int32)
        tdist.all_reduce(value, op=tdist.ReduceOp.MAX, group=self.control)
        return bool(value.item())

    def broadcast_flag(self, flag: bool) -> bool:
        """Rank 0's ``flag`` on every rank."""
        if not self.active:
            return bool(flag)
        value = torch.tensor([int(bool(flag))], dtype=torch.int32)
        tdist.broadcast(value, src=0, group=self.control)
        return bool(value.item())

    def should_stop(self, step: int, total: int) -> bool:
        """Called by the training loop after each optimizer step: stop (and checkpoint) now?"""
        return STOP.poll(self, step, total)


# --------------------------------------------------------------------- stop requests

class StopRequest:
    """A request to checkpoint and stop, raised by a signal and honoured between steps.

    ``enabled`` is set by a job that installed a signal handler (jepa_core.slurm);
    only then does the loop poll (and, under DDP, all-reduce) the request, so
    runs without a handler pay nothing. ``polling`` tells the handler whether a
    training loop will see the request at its next step boundary; when none
    will (building, evaluation), the handler acts at once instead.
    """

    def __init__(self) -> None:
        self.enabled = False
        self.polling = False
        self.requested = False
        self.signum: int | None = None

    def reset(self, enabled: bool = False) -> None:
        self.enabled, self.polling, self.requested, self.signum = enabled, False, False, None

    def request(self, signum: int | None = None) -> None:
        self.requested, self.signum = True, signum

    def poll(self, dist: DistInfo, step: int, total: int) -> bool:
        if not self.enabled:
            return False
        stop = dist.any(self.requested)
        # after the last step nobody polls again: a later signal must be handled at once
        self.polling = step < total
        return stop


#: the process's stop request (one training loop per process)
STOP = StopRequest()


# -------------------------------------------------------------------- rendezvous

def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free right now on ``host`` (for local multi-process runs)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def slurm_port(job_id: str) -> int:
    """The rendezvous port of a Slurm job: a function of its id, so every task computes the same."""
    return PORT_BASE + int(job_id) % PORT_SPAN


def env_rendezvous() -> dict[str, str] | None:
    """RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT from torchrun or submitit, if any."""
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:
        missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if k not in env]
        if missing and int(env["WORLD_SIZE"]) > 1:
            raise DistributedInitError(f"RANK and WORLD_SIZE are set but {' and '.join(missing)} not")
        keys = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
        return {k: env[k] for k in keys if k in env}
    if env.get("SUBMITIT_EXECUTOR") == "slurm" and "SLURM_JOB_ID" in env:
        import submitit

        job = submitit.JobEnvironment()
        if job.num_tasks == 1:
            return None
        return {
            "RANK": str(job.global_rank), "WORLD_SIZE": str(job.num_tasks), "LOCAL_RANK": str(job.local_rank),
            "MASTER_ADDR": job.hostnames[0],
            # SLURM_JOB_ID is the array task's own id in an array, so members never share a port
            "MASTER_PORT": env.get("MASTER_PORT", str(slurm_port(env["SLURM_JOB_ID"]))),
        }
    return None


def _timeout() -> datetime.timedelta | None:
    seconds = os.environ.get("JEPA_CORE_DIST_TIMEOUT_S")
    return datetime.timedelta(seconds=float(seconds)) if seconds else None


def init(device_name: str = "auto") -> DistInfo:
    """Initialise the process group when the environment asks for several processes.

    ``device_name`` is ``train.device`` (auto, cpu or cuda). Raises
    :class:`DistributedInitError` when the group cannot be formed.
    """
    rendezvous = env_rendezvous()
    if rendezvous is None or int(rendezvous["WORLD_SIZE"]) == 1:
        return DistInfo()
    os.environ.update(rendezvous)
    rank, world = int(rendezvous["RANK"]), int(rendezvous["WORLD_SIZE"])
    local_rank = int(rendezvous.get("LOCAL_RANK", 0))
    if device_name == "cuda" and not torch.cuda.is_available():
        raise DistributedInitError("train.device is 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
    use_cuda = device_name != "cpu" and torch.cuda.is_available()
    backend = "nccl" if use_cuda else "gloo"
    device = torch.device("cpu")
    if use_cuda:
        count = torch.cuda.device_count()
        if local_rank < count:  # every task sees the node's GPUs: take number local_rank
            device = torch.device("cuda", local_rank)
        elif count == 1:  # Slurm bound one GPU to this task
            device = torch.device("cuda", 0)
        else:
            raise DistributedInitError(f"local rank {local_rank} has no GPU: this process sees {count}")
        torch.cuda.set_device(device)
    where = f"{rendezvous.get('MASTER_ADDR')}:{rendezvous.get('MASTER_PORT')}"
    control = None
    try:
        if not tdist.is_initialized():
            kwargs = {"timeout": _timeout()} if _timeout() else {}
            tdist.init_process_group(backend, rank=rank, world_size=world, **kwargs)
        if backend == "nccl":
            control = tdist.new_group(backend="gloo")
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DistributedInitError(
            f"torch.distributed init failed for rank {rank}/{world} at {where} ({backend}): {first}"
        ) from exc
    return DistInfo(rank, world, local_rank, device, control)


def shutdown() -> None:
    """Leave the process group, if any (end of a run)."""
    if tdist.is_available() and tdist.is_initialized():
        tdist.destroy_process_group()
