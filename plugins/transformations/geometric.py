"""Geometric view ops: an independent random resized crop and flip per view, batched.

The loader crops once per image and both views share that crop (I-JEPA and
IWM: the world model's action is photometric). Contrastive papers (SimCLR,
VICReg, MoCo v3) crop each view independently; ``random_resized_crop`` listed
first in each pipeline gives them that, on the device, seeded like every
other view op. Set the loader's ``crop_scale: [1.0, 1.0]`` and ``flip_p: 0``
so the loader only resizes; docs/baselines.md.
"""

from __future__ import annotations

import math

import attrs
import torch
import torch.nn.functional as F

from jepa_core.api import Params, Transformation, hookimpl, validators as v

_TRIES = 10  # torchvision's RandomResizedCrop.get_params


class RandomResizedCrop(Transformation):
    """torchvision's RandomResizedCrop + horizontal flip, per sample, in fractions of the image.

    The box is drawn as torchvision draws it (area fraction ~ U[scale], log
    aspect ~ U[log ratio], up to 10 tries, then the largest centred crop of an
    allowed aspect) but in continuous coordinates, so it does not depend on the
    image size. The crop is resized back to the input size bilinearly: it is
    never larger than the output, so no antialiasing is needed. An
    augmentation: action dimension 0.
    """

    @attrs.frozen
    class Config:
        scale: tuple[float, float] = attrs.field(default=(0.08, 1.0), converter=v.as_pair, validator=v.interval(0.0, 1.0))
        ratio: tuple[float, float] = attrs.field(
            default=(3 / 4, 4 / 3), converter=v.as_pair, validator=v.interval(1e-3, 1e3)
        )
        flip_p: float = attrs.field(default=0.5, validator=v.probability)
        p: float = attrs.field(default=1.0, validator=v.probability)

        @scale.validator
        def _positive_area(self, attribute, value):
            if value[1] <= 0:
                raise ValueError(f"'scale' must allow a crop of positive area, got {list(value)!r}", attribute)

    action_dim = 0
    encoding = "none"

    def identity(self, batch_size: int) -> Params:
        box = torch.tensor([0.0, 0.0, 1.0, 1.0]).expand(batch_size, 4).clone()
        return {"box": box, "flip": torch.zeros(batch_size, dtype=torch.bool)}

    def sample_applied(self, batch_size: int, generator: torch.Generator) -> Params:
        (s0, s1), (r0, r1) = self.config.scale, self.config.ratio
        u = torch.rand(batch_size, _TRIES, 4, generator=generator, dtype=torch.float64)
        area = s0 + (s1 - s0) * u[..., 0]
        aspect = torch.exp(math.log(r0) + (math.log(r1) - math.log(r0)) * u[..., 1])
        w, h = torch.sqrt(area * aspect), torch.sqrt(area / aspect)
        ok = (w <= 1) & (h <= 1) & (w > 0) & (h > 0)
        first = torch.where(ok.any(1), ok.float().argmax(1), -1)  # first valid try; -1: fall back
        pick = first.clamp(min=0).view(-1, 1)
        w, h = w.gather(1, pick)[:, 0], h.gather(1, pick)[:, 0]
        top = u[..., 2].gather(1, pick)[:, 0] * (1 - h)
        left = u[..., 3].gather(1, pick)[:, 0] * (1 - w)
        box = torch.stack([top, left, h, w], 1)
        fallback = first < 0  # the largest centred crop of an allowed aspect (the views are square)
        fh, fw = (1 / r0, 1.0) if r0 > 1 else ((1.0, r1) if r1 < 1 else (1.0, 1.0))
        box[fallback] = torch.tensor([(1 - fh) / 2, (1 - fw) / 2, fh, fw], dtype=box.dtype)
        flip = torch.rand(batch_size, generator=generator) < self.config.flip_p
        return {"box": box.float(), "flip": flip}

    def apply(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        """Crop each image to its box (top, left, h, w in fractions), flip, resize to the input size.

        Reduced-precision images are sampled in float32: a bfloat16 sampling grid
        steps by 1/128 of the half-width, most of a pixel at 224 px.
        """
        dtype = images.dtype if images.dtype == torch.float64 else torch.float32
        box = params["box"].to(images.device, dtype)
        top, left, h, w = box.unbind(1)
        sign = 1 - 2 * params["flip"].to(images.device, dtype)
        theta = torch.zeros(images.shape[0], 2, 3, device=images.device, dtype=dtype)
        theta[:, 0, 0] = w * sign  # output x in [-1, 1] -> input x, mirrored when flipped
        theta[:, 0, 2] = 2 * left + w - 1
        theta[:, 1, 1] = h
        theta[:, 1, 2] = 2 * top + h - 1
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        out = F.grid_sample(images.to(dtype), grid, mode="bilinear", padding_mode="border", align_corners=False)
        return out.to(images.dtype)


@hookimpl
def jepa_register_transformations(registry) -> None:
    registry.register("random_resized_crop", RandomResizedCrop)
