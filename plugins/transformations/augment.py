"""``augment``: registered image ops applied as augmentations, not actions (action dimension 0).

The contrastive baselines' views: symmetric targets need transformations that
carry no action.
"""

from __future__ import annotations

from typing import Any

import attrs
import torch

from jepa_core.api import ComponentError, Masking, Params, Transformation


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

    def __init__(self, config: Config, *, registry: Any):
        """``registry``: the transformations registry the ops come from, bound at registration."""
        super().__init__(config)
        self.ops: list[tuple[str, Transformation]] = []
        for i, spec in enumerate(config.ops):
            params = {k: v for k, v in spec.items() if k != "name"}
            try:
                component = registry.get(spec["name"]).component
                if not isinstance(component, type) or not issubclass(component, Transformation) \
                        or issubclass(component, (Masking, Augment)):
                    raise ComponentError(f"augment: {spec['name']!r} is not an image transformation")
                op = registry.create(spec["name"], **params)
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

    def sample_applied(self, batch_size: int, generator: torch.Generator) -> Params:
        """Every op drawn for every image, its ``p`` ignored (as the world-model evaluators draw target ops)."""
        every = torch.ones(batch_size, dtype=torch.bool)
        drawn = [{**op.sample_applied(batch_size, generator), "applied": every} for _, op in self.ops]
        return self._collect(drawn, batch_size, True)

    def identity(self, batch_size: int) -> Params:
        return self._collect([op.null_params(batch_size) for _, op in self.ops], batch_size, False)

    def apply(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        for i, (_, op) in enumerate(self.ops):
            prefix = f"{i}."
            images = op.apply(images, {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)})
        return images
