"""Contrastive and joint-embedding baselines: SimCLR, VICReg and MoCo v3 (implementations).

The hooks are in :mod:`jepa_core.plugins.baselines`. Every baseline runs in the same
engine as I-JEPA/IWM, with ``views.masking: full`` (the encoder sees every
token of both views):

* predictor ``projector``: average-pools the context tokens and applies an MLP
  projection head (and, for MoCo v3, an MLP prediction head on top). It returns
  ``(B, 1, 1, out)`` so it fits the predictor contract.
* target ``infonce`` (SimCLR): embeds the target view with the *online*
  encoder and projector (with gradients) and computes NT-Xent.
* target ``vicreg``: the same embedding, VICReg's three terms.
* target ``mocov3``: momentum encoder + momentum projector, symmetric
  contrastive loss (the engine adds the swapped pass).
* transformation ``augment``: a list of registered image ops applied as
  *augmentations*, not actions (action dimension 0); symmetric targets need it.

Distributed training: negatives (InfoNCE) and the batch statistics of VICReg's
variance/covariance terms use the global batch, gathered *with* gradients
(:func:`gather`); the projector's batch norms use global statistics
(:class:`GlobalBatchNorm1d`, SyncBN that also runs on gloo/CPU). With DDP's
gradient averaging, per-rank shards then give the loss and gradients of one
process with the whole batch (tests/test_baselines.py).
"""

from __future__ import annotations

import copy
import math
from typing import Any, ClassVar

import attrs
import torch
import torch.distributed as tdist
import torch.nn.functional as F
from torch import nn

from jepa_core.registries import ComponentError
from jepa_core.registries.predictors import Predictor
from jepa_core.registries.targets import Target
from jepa_core.registries.transformations import Masking, Params, Transformation
from jepa_core.registries.validators import in_range, non_negative, one_of, positive, positive_int

# --------------------------------------------------------------------------- distributed helpers


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


def mlp(in_dim: int, hidden: int, out: int, layers: int, *, hidden_bias: bool, last_bn: str) -> nn.Sequential:
    """``layers`` Linear layers; the hidden ones are followed by (global) BN and ReLU.

    ``last_bn``: "none" (VICReg), "plain" (BN without learnable parameters,
    MoCo v3) or "scale" (BN with a learnable scale only, SimCLR). The last
    Linear has no bias in the three official codes.
    """
    mods: list[nn.Module] = []
    for i in range(layers):
        d_in = in_dim if i == 0 else hidden
        d_out = out if i == layers - 1 else hidden
        last = i == layers - 1
        mods.append(nn.Linear(d_in, d_out, bias=hidden_bias and not last))
        if not last:
            mods += [GlobalBatchNorm1d(d_out), nn.ReLU(inplace=True)]
        elif last_bn == "plain":
            mods.append(GlobalBatchNorm1d(d_out, affine=False))
        elif last_bn == "scale":
            mods.append(ScaleOnlyBatchNorm1d(d_out))
    return nn.Sequential(*mods)


def pool(tokens: torch.Tensor) -> torch.Tensor:
    """(B, K, D) tokens -> (B, D): the average pooling every evaluator also uses."""
    return tokens.mean(dim=1)


# --------------------------------------------------------------------------- losses


def nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's NT-Xent on (n, d) embeddings of two views, negatives from the global batch.

    For each of the 2N embeddings (N = global batch), with cosine similarity s:
    ``l(i, j) = -log(exp(s_ij / t) / sum_{k != i} exp(s_ik / t))`` where j is the
    other view of the same image and k runs over the other 2N - 1 embeddings of
    both views. Returns the mean over this rank's 2n anchors, so the mean over
    ranks is the paper's ``1/(2N) sum_k [l(2k-1, 2k) + l(2k, 2k-1)]``.
    """
    a, b = F.normalize(a.float(), dim=1), F.normalize(b.float(), dim=1)
    a_all, offset = gather(a)
    b_all, _ = gather(b)
    labels = torch.arange(a.shape[0], device=a.device) + offset
    self_mask = F.one_hot(labels, a_all.shape[0]).bool()
    losses = []
    for anchor, same, other in ((a, a_all, b_all), (b, b_all, a_all)):
        positives_and_others = anchor @ other.T / temperature
        same_view = (anchor @ same.T / temperature).masked_fill(self_mask, float("-inf"))
        losses.append(F.cross_entropy(torch.cat([positives_and_others, same_view], dim=1), labels))
    return (losses[0] + losses[1]) / 2


def off_diagonal(m: torch.Tensor) -> torch.Tensor:
    n = m.shape[0]
    return m.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()


def vicreg_terms(x: torch.Tensor, y: torch.Tensor, gamma: float = 1.0, eps: float = 1e-4):
    """VICReg's (invariance, variance, covariance) terms, unweighted, as the official code.

    invariance: MSE between this rank's x and y (its mean over ranks is the
    global MSE); variance: ``mean_d relu(gamma - sqrt(Var(x_d) + eps))``
    averaged over x and y; covariance: squared off-diagonal entries of the
    covariance (normalised by N - 1) summed and divided by the dimension, for x
    plus y. Variance and covariance use the global batch (gathered with
    gradients).
    """
    x, y = x.float(), y.float()
    invariance = F.mse_loss(x, y)
    x, _ = gather(x)
    y, _ = gather(y)
    n, dim = x.shape
    x = x - x.mean(dim=0)
    y = y - y.mean(dim=0)
    std_x = torch.sqrt(x.var(dim=0) + eps)
    std_y = torch.sqrt(y.var(dim=0) + eps)
    variance = F.relu(gamma - std_x).mean() / 2 + F.relu(gamma - std_y).mean() / 2
    cov_x = x.T @ x / (n - 1)
    cov_y = y.T @ y / (n - 1)
    covariance = off_diagonal(cov_x).pow(2).sum() / dim + off_diagonal(cov_y).pow(2).sum() / dim
    return invariance, variance, covariance


def moco_contrastive(q: torch.Tensor, k: torch.Tensor, temperature: float) -> torch.Tensor:
    """MoCo v3's ``ctr(q, k)``: cross-entropy of q against every key of the global batch, times 2t."""
    q, k = F.normalize(q.float(), dim=1), F.normalize(k.float(), dim=1)
    with torch.no_grad():  # keys come from the momentum branch: gathered without gradient
        k_all, offset = gather(k.detach())
    logits = q @ k_all.T / temperature
    labels = torch.arange(q.shape[0], device=q.device) + offset
    return F.cross_entropy(logits, labels) * (2 * temperature)


# --------------------------------------------------------------------------- predictor


class Projector(Predictor):
    """Projection head (SimCLR/VICReg/MoCo v3): average-pooled context -> MLP [-> MLP predictor]."""

    @attrs.frozen
    class Config:
        #: hidden width of the projection MLP (SimCLR 2048, VICReg 8192, MoCo v3 4096)
        hidden: int = attrs.field(default=2048, validator=positive_int)
        #: output width (SimCLR 128, VICReg 8192, MoCo v3 256)
        out: int = attrs.field(default=128, validator=positive_int)
        #: Linear layers of the projector (SimCLR 2, VICReg 3, MoCo v3 ViT 3)
        layers: int = attrs.field(default=2, validator=positive_int)
        #: biases on the hidden Linear layers (VICReg: yes; SimCLR, MoCo v3: no, BN follows)
        hidden_bias: bool = False
        #: BN after the last Linear: none (VICReg), plain (no parameters, MoCo v3), scale (SimCLR)
        last_bn: str = attrs.field(default="scale", validator=one_of("none", "plain", "scale"))
        #: MoCo v3's prediction MLP on top of the projector: Linear layers (0: none; MoCo v3: 2)
        predictor_layers: int = attrs.field(default=0, validator=non_negative)
        predictor_hidden: int = attrs.field(default=4096, validator=positive_int)

        def __attrs_post_init__(self):
            if isinstance(self.predictor_layers, bool) or not isinstance(self.predictor_layers, int):
                raise ValueError(f"'predictor_layers' must be an integer >= 0, got {self.predictor_layers!r}",
                                 attrs.fields(type(self)).predictor_layers)

    def __init__(self, config: Config, embed_dim: int, grid: tuple[int, int], conditioner):
        super().__init__()
        if conditioner.n_tokens or any(True for _ in conditioner.parameters()):
            raise ValueError("predictor 'projector' ignores the action; use conditioning: {name: none}")
        self.config = config
        self.out_dim = config.out
        self.projector = mlp(embed_dim, config.hidden, config.out, config.layers,
                             hidden_bias=config.hidden_bias, last_bn=config.last_bn)
        self.head = (mlp(config.out, config.predictor_hidden, config.out, config.predictor_layers,
                         hidden_bias=config.hidden_bias, last_bn=config.last_bn)
                     if config.predictor_layers else nn.Identity())

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, K, D) encoder tokens -> (B, out) projector output (no prediction head)."""
        return self.projector(pool(tokens))

    def forward(self, context, context_idx, target_idx, action):
        z = self.head(self.embed(context))
        return z.view(z.shape[0], 1, 1, -1)


# --------------------------------------------------------------------------- targets


def _needs_projector(name: str, predictor) -> None:
    if not isinstance(predictor, Projector):
        raise ValueError(f"target {name!r} embeds both views through the online projection head; "
                         f"use predictor: {{name: projector}} (got {type(predictor).__name__})")


class _OnlineTarget(Target):
    """The target view embedded by the online encoder and projector, with gradients."""

    name: ClassVar[str] = ""

    def __init__(self, config, encoder, predictor):
        super().__init__()
        _needs_projector(self.name, predictor)
        self.config = config
        self._online = [encoder, predictor]  # a list keeps them out of this module's parameters

    def forward(self, images, target_idx):
        encoder, predictor = self._online
        idx = target_idx.reshape(target_idx.shape[0], -1)
        return predictor.embed(encoder(images, idx)).unsqueeze(1).unsqueeze(1)

    @staticmethod
    def _flat(prediction: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return prediction.reshape(prediction.shape[0], -1), target.reshape(target.shape[0], -1)


class InfoNCETarget(_OnlineTarget):
    """SimCLR: NT-Xent between the two views' online projections, negatives from the global batch."""

    name = "infonce"

    @attrs.frozen
    class Config:
        #: SimCLR ImageNet (large batch): 0.1
        temperature: float = attrs.field(default=0.1, validator=positive)

    def loss(self, prediction, target):
        return nt_xent(*self._flat(prediction, target), self.config.temperature)


class VICRegTarget(_OnlineTarget):
    """VICReg: invariance (MSE) + variance (std hinge) + covariance (off-diagonal) on the expander outputs."""

    name = "vicreg"

    @attrs.frozen
    class Config:
        #: published weights: 25, 25, 1
        sim_coeff: float = attrs.field(default=25.0, validator=non_negative)
        std_coeff: float = attrs.field(default=25.0, validator=non_negative)
        cov_coeff: float = attrs.field(default=1.0, validator=non_negative)
        #: target standard deviation of the hinge
        gamma: float = attrs.field(default=1.0, validator=positive)
        eps: float = attrs.field(default=1e-4, validator=positive)

    def __init__(self, config, encoder, predictor):
        super().__init__(config, encoder, predictor)
        if predictor.head is not None and not isinstance(predictor.head, nn.Identity):
            raise ValueError("target 'vicreg' compares the expander outputs of both views; "
                             "set predictor.predictor_layers: 0")

    def loss(self, prediction, target):
        c = self.config
        inv, var, cov = vicreg_terms(*self._flat(prediction, target), gamma=c.gamma, eps=c.eps)
        return c.sim_coeff * inv + c.std_coeff * var + c.cov_coeff * cov


class MoCoV3Target(Target):
    """MoCo v3: momentum encoder + projector as keys, symmetric InfoNCE (t 0.2, scaled by 2t)."""

    symmetric = True

    @attrs.frozen
    class Config:
        temperature: float = attrs.field(default=0.2, validator=positive)
        #: initial momentum; it rises to 1 along a half cosine (MoCo v3 --moco-m-cos)
        momentum: float = attrs.field(default=0.99, validator=in_range(0.0, 1.0))
        #: freeze the encoder's patch projection (MoCo v3 --stop-grad-conv1, "random patch projection")
        freeze_patch_embed: bool = False

    def __init__(self, config: Config, encoder, predictor):
        super().__init__()
        _needs_projector("mocov3", predictor)
        self.config = config
        if config.freeze_patch_embed:
            encoder.vit.patch_embed.requires_grad_(False)
        self.encoder = copy.deepcopy(encoder).requires_grad_(False)
        self.projector = copy.deepcopy(predictor.projector).requires_grad_(False)
        self._online = [encoder, predictor]  # a list keeps them out of this module's parameters

    @torch.no_grad()
    def forward(self, images, target_idx):
        idx = target_idx.reshape(target_idx.shape[0], -1)
        k = self.projector(pool(self.encoder(images, idx)))
        return k.view(k.shape[0], 1, 1, -1)

    def loss(self, prediction, target):
        return moco_contrastive(prediction.reshape(prediction.shape[0], -1), target.reshape(target.shape[0], -1),
                                self.config.temperature)

    @property
    def momentum_pairs(self):
        encoder, predictor = self._online
        return [(encoder, self.encoder), (predictor.projector, self.projector)]

    def target_encoder(self, online):
        return self.encoder

    def momentum(self, step, total_steps):
        progress = min(step, total_steps) / max(total_steps, 1)
        return 1.0 - 0.5 * (1.0 + math.cos(math.pi * progress)) * (1.0 - self.config.momentum)


# --------------------------------------------------------------------------- augmentations


def _op_specs(instance: Any, attribute: Any, value: Any) -> None:
    if not isinstance(value, (list, tuple)) or not all(isinstance(s, dict) and "name" in s for s in value):
        raise ValueError(f"'{attribute.name}' must be a list of ops, each {{name: ..., **params}}, got {value!r}",
                         attribute)


class Augment(Transformation):
    """Augmentations, not actions: registered image ops in order, action dimension 0 (contrastive views)."""

    @attrs.frozen
    class Config:
        #: the ops, as in views.source: [{name: color_jitter, p: 0.8, ...}, {name: grayscale}, ...]
        ops: tuple = attrs.field(factory=tuple, converter=lambda v: tuple(v) if isinstance(v, list) else v,
                                 validator=_op_specs)

    action_dim = 0
    encoding = "none"
    #: the transformations registry the ops come from (bound at registration)
    registry: ClassVar[Any] = None

    def __init__(self, config: Config):
        super().__init__(config)
        self.ops: list[tuple[str, Transformation]] = []
        for i, spec in enumerate(config.ops):
            params = {k: v for k, v in spec.items() if k != "name"}
            try:
                entry = self.registry.get(spec["name"])
                factory = entry.factory
                if not isinstance(factory, type) or not issubclass(factory, Transformation) \
                        or issubclass(factory, (Masking, Augment)):
                    raise ComponentError(f"augment: {spec['name']!r} is not an image transformation")
                op = self.registry.create(spec["name"], **params)
            except ComponentError as exc:
                raise ComponentError(f"ops.{i}: {exc}", key=f"ops.{i}.{exc.key or 'name'}") from None
            self.ops.append((spec["name"], op))

    def check_image_size(self, height: int, width: int) -> None:
        for _, op in self.ops:
            op.check_image_size(height, width)

    def _collect(self, per_op: list[Params], batch_size: int, applied: bool) -> Params:
        out = {f"{i}.{k}": v for i, params in enumerate(per_op) for k, v in params.items()}
        out["applied"] = torch.full((batch_size,), applied, dtype=torch.bool)
        return out

    def sample(self, batch_size: int, generator: torch.Generator) -> Params:
        return self._collect([op.sample(batch_size, generator) for _, op in self.ops], batch_size, True)

    def identity(self, batch_size: int) -> Params:
        return self._collect([op.null_params(batch_size) for _, op in self.ops], batch_size, False)

    def apply(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        for i, (_, op) in enumerate(self.ops):
            prefix = f"{i}."
            images = op.apply(images, {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)})
        return images


def bind_augment(registry) -> type:
    """An :class:`Augment` class that builds its ops from ``registry``."""
    return type("Augment", (Augment,), {"registry": registry, "__doc__": Augment.__doc__,
                                        "__module__": __name__})
