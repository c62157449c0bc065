"""Process-group setup: from torchrun's or submitit's environment, never silently single.

The official I-JEPA code swallows init errors and falls back to one process
and uses a fixed port; here a failed init is an error and the rendezvous
address comes from the job.
"""

from __future__ import annotations

import os
from typing import Any

import attrs
import torch
import torch.distributed as tdist
from torch import nn


@attrs.define
class DistInfo:
    """Rank, world size and device of this process (defaults: a single process)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: Any = None

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
        device_ids = [self.local_rank] if self.device is not None and self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(module, device_ids=device_ids)

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return value
        value = value.clone()
        tdist.all_reduce(value)
        return value / self.world_size


def env_rendezvous() -> dict[str, str] | None:
    """RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT from torchrun or submitit, if any."""
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env and "MASTER_ADDR" in env:
        return {k: env[k] for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if k in env}
    if "SLURM_JOB_ID" in env and "SLURM_NTASKS" in env and int(env["SLURM_NTASKS"]) > 1:
        import submitit

        job = submitit.JobEnvironment()
        port = 20000 + int(env["SLURM_JOB_ID"]) % 20000  # from the job, not a constant
        return {
            "RANK": str(job.global_rank), "WORLD_SIZE": str(job.num_tasks), "LOCAL_RANK": str(job.local_rank),
            "MASTER_ADDR": job.hostnames[0], "MASTER_PORT": env.get("MASTER_PORT", str(port)),
        }
    return None


def init(device_name: str = "auto") -> DistInfo:
    """Initialise the process group when the environment asks for several processes."""
    rendezvous = env_rendezvous()
    if rendezvous is None or int(rendezvous["WORLD_SIZE"]) == 1:
        return DistInfo()
    os.environ.update(rendezvous)
    rank, world = int(rendezvous["RANK"]), int(rendezvous["WORLD_SIZE"])
    local_rank = int(rendezvous.get("LOCAL_RANK", 0))
    use_cuda = device_name != "cpu" and torch.cuda.is_available()
    backend = "nccl" if use_cuda else "gloo"
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if not tdist.is_initialized():
        try:
            tdist.init_process_group(backend, rank=rank, world_size=world)
        except Exception as exc:
            raise RuntimeError(
                f"torch.distributed init failed for rank {rank}/{world} at "
                f"{rendezvous['MASTER_ADDR']}:{rendezvous.get('MASTER_PORT')} ({backend}): {exc}"
            ) from exc
    return DistInfo(rank, world, local_rank, device)
