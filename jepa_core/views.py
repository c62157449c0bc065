"""Views: from a loaded batch to (target view y, source view x, action, masks).

Both views share the crop and flip done in the loader workers. The target
pipeline makes y, the source pipeline makes x, and the action a(x->y) is the
concatenation, per transformation, of what it declares (difference of its
parameters, a flag, ...). A transformation in only one pipeline is the
identity in the other, so the action dimension follows from the YAML alone.
"""

from __future__ import annotations

import attrs
import torch

from jepa_core.registries.transformations import Masking, Masks, Params, Transformation

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def normalize(images: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(MEAN, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return (images - mean) / std


@attrs.frozen
class ViewBatch:
    """One step's inputs; images are normalised float tensors on the device."""

    target: torch.Tensor
    source: torch.Tensor
    action: torch.Tensor
    masks: Masks
    source_params: dict[str, Params]
    target_params: dict[str, Params]
    #: the masks of the second and later samplers of a ``views.masking`` list (V-JEPA's pair)
    more_masks: tuple[Masks, ...] = ()


@attrs.frozen
class ActionSlot:
    """Where one transformation's entries sit in the action vector."""

    name: str
    start: int
    dim: int
    encoding: str


class Views:
    """Builds y, x, the action and the masks for a batch (see the module docstring)."""

    def __init__(
        self,
        target: list[tuple[str, Transformation]],
        source: list[tuple[str, Transformation]],
        masking: Masking | list[Masking],
    ):
        self.target = target
        self.source = source
        self.maskings = list(masking) if isinstance(masking, list) else [masking]
        self.masking = self.maskings[0]
        names = list(dict.fromkeys([n for n, _ in source] + [n for n, _ in target]))
        ops = {**dict(target), **dict(source)}
        self.slots: list[ActionSlot] = []
        start = 0
        for name in names:
            op = ops[name]
            self.slots.append(ActionSlot(name, start, op.action_dim, op.encoding))
            start += op.action_dim
        self._ops = ops
        self.action_dim = start

    def null_action(self, batch_size: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """The identity action (source equals target); evaluators condition on it."""
        return self.encode({}, {}, batch_size).to(device)

    def sample_params(self, pipeline, batch_size: int, generator: torch.Generator) -> dict[str, Params]:
        return {name: op.sample(batch_size, generator) for name, op in pipeline}

    def encode(self, source: dict[str, Params], target: dict[str, Params], batch_size: int) -> torch.Tensor:
        """The (B, action_dim) action taking the source view to the target view."""
        parts = [torch.zeros(batch_size, 0)]
        for slot in self.slots:
            op = self._ops[slot.name]
            src = source.get(slot.name) or op.null_params(batch_size)
            tgt = target.get(slot.name) or op.null_params(batch_size)
            parts.append(op.encode(src, tgt).cpu())
        return torch.cat(parts, dim=1).float()

    @classmethod
    def apply(cls, pipeline, images: torch.Tensor, params: dict[str, Params]) -> torch.Tensor:
        """Run ``pipeline`` on images (B, 3, H, W) or clips (B, T, 3, H, W): a clip's frames share its parameters."""
        if images.dim() == 5:
            return torch.stack([cls.apply(pipeline, frame, params) for frame in images.unbind(1)], dim=1)
        for name, op in pipeline:
            images = op.apply(images, params[name])
        return images

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> ViewBatch:
        """``images``: uint8 (B, 3, H, W) or clips (B, T, 3, H, W) on the device; all randomness from ``generator``."""
        batch = images.shape[0]
        pixels = images.float().div_(255.0)
        target_params = self.sample_params(self.target, batch, generator)
        source_params = self.sample_params(self.source, batch, generator)
        masks = [m.sample(batch, generator).to(images.device, non_blocking=True) for m in self.maskings]
        y = self.apply(self.target, pixels, target_params)
        x = self.apply(self.source, pixels, source_params)
        action = self.encode(source_params, target_params, batch).to(images.device, non_blocking=True)
        return ViewBatch(normalize(y), normalize(x), action, masks[0], source_params, target_params, tuple(masks[1:]))
