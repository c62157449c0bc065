"""Transformations: the actions a world model learns, and the masks it predicts.

Two contracts share the ``transformations`` registry:

* :class:`Transformation` -- a photometric (or other image-space) op. It samples
  per-sample parameters from a ``torch.Generator``, applies them to a whole batch
  in one pass on any device, says how its parameters enter the action vector and
  what its identity (null action) is.
* :class:`Masking` -- a transformation whose output is token indices: the context
  tokens the encoder sees and the target blocks the predictor must fill.

Parameters are a ``dict[str, Tensor]`` whose tensors all have the batch as first
dimension and always include ``applied`` (bool): a sample that did not draw the
op carries the identity parameters, so encodings need no special case.
"""

from __future__ import annotations

from typing import ClassVar

import attrs
import torch

Params = dict[str, torch.Tensor]

ENCODINGS = ("difference", "flag", "none")


class Transformation:
    """Base class of image-space transformations (see the module docstring).

    Subclasses set ``action_dim`` and ``encoding`` and implement ``sample_applied``
    (the parameters of samples that draw the op), ``identity`` and ``apply``.
    ``p`` (probability of applying) comes from the subclass's config when it
    has one.
    """

    #: entries this transformation adds to the action vector
    action_dim: ClassVar[int] = 0
    #: how the parameters enter the action: "difference" (target minus source of
    #: ``action_params()``), "flag" (applied to the source and not the target:
    #: +1, the reverse: -1) or "none" (carried elsewhere, e.g. by mask positions)
    encoding: ClassVar[str] = "none"

    def __init__(self, config=None):
        self.config = config

    @property
    def p(self) -> float:
        return float(getattr(self.config, "p", 1.0))

    # -- to implement -------------------------------------------------------
    def identity(self, batch_size: int) -> Params:
        """Parameters of the identity, on the CPU."""
        raise NotImplementedError

    def sample_applied(self, batch_size: int, generator: torch.Generator) -> Params:
        """Parameters as if every sample drew the op (CPU, from ``generator``)."""
        raise NotImplementedError

    def apply(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        """Apply per-sample ``params`` to ``images`` (B, C, H, W) float in [0, 1]."""
        raise NotImplementedError

    def check_image_size(self, height: int, width: int) -> None:
        """Raise ValueError naming the parameter when the op cannot run at this size."""

    def action_params(self, params: Params) -> torch.Tensor:
        """(B, action_dim) float values compared by the "difference" encoding."""
        raise NotImplementedError

    # -- provided -----------------------------------------------------------
    def null_params(self, batch_size: int) -> Params:
        """Identity parameters with ``applied`` all False (the op in the other view only)."""
        params = dict(self.identity(batch_size))
        params["applied"] = torch.zeros(batch_size, dtype=torch.bool)
        return params

    def sample(self, batch_size: int, generator: torch.Generator) -> Params:
        """Per-sample parameters: drawn with probability ``p``, identity otherwise."""
        drawn = self.sample_applied(batch_size, generator)
        applied = torch.rand(batch_size, generator=generator) < self.p
        ident = self.identity(batch_size)
        out = {}
        for key, value in drawn.items():
            if key == "applied":
                continue
            mask = applied.view(-1, *([1] * (value.dim() - 1)))
            out[key] = torch.where(mask, value, ident[key])
        out["applied"] = applied
        return out

    def encode(self, source: Params, target: Params) -> torch.Tensor:
        """The action entries for going from the source view to the target view."""
        batch = source["applied"].shape[0]
        device = source["applied"].device
        if self.encoding == "difference":
            return (self.action_params(target) - self.action_params(source)).float()
        if self.encoding == "flag":
            return (source["applied"].float() - target["applied"].float()).view(batch, 1)
        return torch.zeros(batch, 0, device=device)


@attrs.frozen
class Masks:
    """Token indices for one batch.

    ``context``: (B, Nc) indices the encoder sees; ``targets``: (B, M, Nt), M
    target blocks per image. Every image has the same counts so they stack.
    """

    context: torch.Tensor
    targets: torch.Tensor

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Masks":
        return Masks(
            self.context.to(device, non_blocking=non_blocking),
            self.targets.to(device, non_blocking=non_blocking),
        )


class Masking:
    """Base class of mask samplers: ``sample(batch_size, generator) -> Masks``.

    Built with the config and the patch grid ``(rows, cols)``, or ``(time, rows,
    cols)`` for a video encoder; sampling must be a pure function of the
    generator state so a run is reproducible from ``(seed, step)``.
    """

    #: the grid it samples on: 2 (rows, cols), 3 (time, rows, cols) or None (any)
    grid_dims: ClassVar[int | None] = 2

    def __init__(self, config, grid: tuple[int, int]):
        self.config = config
        self.grid = tuple(grid)

    def sample(self, batch_size: int, generator: torch.Generator) -> Masks:
        raise NotImplementedError
