"""Collectives with gradients for the baselines' global-batch losses and batch norms.

SimCLR's negatives, VICReg's variance/covariance terms and the projectors' batch
norms use the global batch. The gathers here carry gradients, and the batch norm
reduces its statistics with differentiable all_reduces, so per-rank shards with
DDP's gradient averaging give the loss and gradients of one process holding the
whole batch (tests/test_baselines.py). Everything is the identity on one process.
"""

from __future__ import annotations

import torch
import torch.distributed as tdist
from torch import nn


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) unless a process group of several processes is running."""
    if tdist.is_available() and tdist.is_initialized() and tdist.get_world_size() > 1:
        return tdist.get_rank(), tdist.get_world_size()
    return 0, 1


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums every rank's gradient and returns this rank's slice.

    The semantics of ``torch.distributed.nn.functional.all_gather`` (deprecated
    in torch 2.x with a FutureWarning) and of VICReg's ``FullGatherLayer``; it
    works on gloo and NCCL.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = x.contiguous()
        out = [torch.empty_like(x) for _ in range(tdist.get_world_size())]
        tdist.all_gather(out, x)
        return tuple(out)

    @staticmethod
    def backward(ctx, *grads: torch.Tensor) -> torch.Tensor:
        stacked = torch.stack(grads).contiguous()
        tdist.all_reduce(stacked)
        return stacked[tdist.get_rank()]


class _AllReduceSum(torch.autograd.Function):
    """Differentiable all_reduce(SUM): the backward sums the gradients too."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.clone(memory_format=torch.contiguous_format)
        tdist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone(memory_format=torch.contiguous_format)
        tdist.all_reduce(grad)
        return grad


def gather(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(every rank's ``x`` concatenated along dim 0, offset of this rank's rows).

    Differentiable: the gradient of the sum of all ranks' losses reaches each
    rank's rows. Every rank must pass the same shape (the loader drops the last
    partial batch). Without several processes: ``(x, 0)``.
    """
    rank, size = world()
    if size == 1:
        return x, 0
    return torch.cat(_GatherWithGrad.apply(x), dim=0), rank * x.shape[0]


class GlobalBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d whose training statistics are over the global batch (every rank).

    SimCLR ("global BN"), VICReg and MoCo v3 (SyncBatchNorm) normalise with the
    whole batch. torch's SyncBatchNorm refuses CPU tensors, so this computes the
    mean and the biased variance with differentiable all_reduces; on one process
    it is exactly ``nn.BatchNorm1d``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, size = world()
        if not self.training or size == 1:
            return super().forward(x)
        xf = x.float()
        count = xf.shape[0] * size
        mean = _AllReduceSum.apply(xf.sum(dim=0)) / count
        var = _AllReduceSum.apply((xf - mean).pow(2).sum(dim=0)) / count
        out = (xf - mean) * torch.rsqrt(var + self.eps)
        if self.affine:
            out = out * self.weight + self.bias
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.detach(), m)
                self.running_var.lerp_(var.detach() * count / max(count - 1, 1), m)
        return out


class ScaleOnlyBatchNorm1d(GlobalBatchNorm1d):
    """Batch norm with a learnable scale and no shift (SimCLR's last BN: ``center=False``)."""

    def __init__(self, num_features: int):
        super().__init__(num_features, affine=True)
        self.bias.requires_grad_(False)  # stays zero; the optimiser never sees it
