"""Photometric transformations of the Image World Models recipe, batched.

Colour jitter (brightness, contrast, saturation, hue, and ``color_jitter``
which applies the four in a random order) and the destructive ops
(``grayscale``, ``gaussian_blur``, ``solarize``). Every op matches
``torchvision.transforms.v2.functional`` image by image (tests/test_photometric.py)
but runs on a whole batch with per-sample parameters, on any device, and only
computes the samples that drew it. Kernels live in :mod:`jepa_core.plugins.transformations.photometric_ops`.

Parameters are sampled on the CPU from the caller's generator so a run's views
do not depend on the device; ``apply`` moves what it needs to the images.
"""

from __future__ import annotations

import attrs
import torch

from jepa_core.api import Params, Transformation, hookimpl, validators as v
from jepa_core.plugins.transformations import photometric_ops as ops


def _uniform(batch_size: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(batch_size, generator=generator)


def _factor_range(strength: float) -> tuple[float, float]:
    """torchvision ColorJitter's range for brightness, contrast and saturation."""
    return max(0.0, 1.0 - strength), 1.0 + strength


class _Jitter(Transformation):
    """One colour-jitter factor per sample; the action is its difference."""

    action_dim = 1
    encoding = "difference"
    neutral = 1.0  # the identity factor

    def _range(self) -> tuple[float, float]:
        return _factor_range(self.config.strength)

    def identity(self, batch_size: int) -> Params:
        return {"factor": torch.full((batch_size,), self.neutral)}

    def sample_applied(self, batch_size: int, generator: torch.Generator) -> Params:
        return {"factor": _uniform(batch_size, *self._range(), generator)}

    def apply(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        return ops.on_subset(images, params["applied"], self.kernel, {"factor": params["factor"]})

    def action_params(self, params: Params) -> torch.Tensor:
        return params["factor"].float().view(-1, 1)


class Brightness(_Jitter):
    """Brightness jitter: multiply by a factor ~ U[max(0, 1 - s), 1 + s], as torchvision."""

    @attrs.frozen
    class Config:
        #: s: factor ~ U[max(0, 1 - s), 1 + s]
        strength: float = attrs.field(default=0.4, validator=v.non_negative)
        p: float = attrs.field(default=1.0, validator=v.probability)

    kernel = staticmethod(ops.brightness)


class Contrast(_Jitter):
    """Contrast jitter: blend with the mean luma by a factor ~ U[max(0, 1 - s), 1 + s]."""

    @attrs.frozen
    class Config:
        #: s: factor ~ U[max(0, 1 - s), 1 + s]
        strength: float = attrs.field(default=0.4, validator=v.non_negative)
        p: float = attrs.field(default=1.0, validator=v.probability)

    kernel = staticmethod(ops.contrast)


class Saturation(_Jitter):
    """Saturation jitter: blend with the luma image by a factor ~ U[max(0, 1 - s), 1 + s]."""

    @attrs.frozen
    class Config:
        #: s: factor ~ U[max(0, 1 - s), 1 + s]
        strength: float = attrs.field(default=0.2, validator=v.non_negative)
        p: float = attrs.field(default=1.0, validator=v.probability)

    kernel = staticmethod(ops.saturation)


class Hue(_Jitter):
    """Hue jitter: rotate the hue by a factor ~ U[-s, s] turns (identity 0)."""

    @attrs.frozen
    class Config:
        #: s: factor ~ U[-s, s] turns; torchvision allows at most half a turn
        strength: float = attrs.field(default=0.1, validator=v.in_range(0.0, 0.5))
        p: float = attrs.field(default=1.0, validator=v.probability)

    neutral = 0.0
    kernel = staticmethod(ops.hue)

    def _range(self) -> tuple[float, float]:
        return -self.config.strength, self.config.strength


JITTERS = ("brightness", "contrast", "saturation", "hue")
_NEUTRAL = (1.0, 1.0, 1.0, 0.0)


class ColorJitter(Transformation):
    """Colour jitter: brightness, contrast, saturation and hue in a random per-sample order.

    As torchvision's ColorJitter inside RandomApply(p): with probability p the
    four factors are drawn (an op with strength 0 keeps its identity factor
    and is skipped) and applied in ``order`` (B, 4), a random permutation of
    (0 brightness, 1 contrast, 2 saturation, 3 hue) per sample. The order is
    a sampled parameter but not part of the action, which is the difference
    of the four factors (identity: 1, 1, 1, 0).
    """

    @attrs.frozen
    class Config:
        brightness: float = attrs.field(default=0.4, validator=v.non_negative)
        contrast: float = attrs.field(default=0.4, validator=v.non_negative)
        saturation: float = attrs.field(default=0.2, validator=v.non_negative)
        #: factor ~ U[-hue, hue] turns
        hue: float = attrs.field(default=0.1, validator=v.in_range(0.0, 0.5))
        p: float = attrs.field(default=0.8, validator=v.probability)

    action_dim = 4
    encoding = "difference"

    def identity(self, batch_size: int) -> Params:
        params = {name: torch.full((batch_size,), n) for name, n in zip(JITTERS, _NEUTRAL)}
        params["order"] = torch.arange(4).repeat(batch_size, 1)
        return params

    def sample_applied(self, batch_size: int, generator: torch.Generator) -> Params:
        cfg = self.config
        params = {name: _uniform(batch_size, *_factor_range(getattr(cfg, name)), generator) for name in JITTERS[:3]}
        params["hue"] = _uniform(batch_size, -cfg.hue, cfg.hue, generator)
        params["order"] = torch.rand(batch_size, 4, generator=generator).argsort(dim=1)
        return params

    def apply(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        """Four rounds; in round j each sample gets the op ``order[:, j]`` names.

        Per round, one ``ops.blend`` call does brightness, contrast and
        saturation for every sample that drew one of them, and ``ops.hue`` runs
        on those that drew hue, so each sample sees each op once, as in the
        per-image loop, without a loop over images. On the CPU a block of
        samples goes through all four rounds while it is in cache, and samples
        are grouped by the round of their hue so a block usually needs one hue
        call; on a GPU the batch is one block. Identity factors are skipped.
        """
        order = params["order"].cpu()
        factors = torch.stack([params[name].cpu() for name in JITTERS], dim=1).gather(1, order)  # round order
        kinds = torch.where(factors != torch.tensor(_NEUTRAL)[order], order, -1)  # -1: nothing this round
        rows = params["applied"].cpu().nonzero().squeeze(1)
        if images.device.type == "cpu":  # blocks: group samples by the round of their hue
            hue_round = torch.where(kinds == 3, torch.arange(4), 4).amin(dim=1)
            rows = rows[hue_round[rows].argsort(stable=True)]
        return ops.on_subset(images, rows, self._rounds, {"factors": factors, "kinds": kinds})

    @staticmethod
    def _rounds(x: torch.Tensor, factors: torch.Tensor, kinds: torch.Tensor) -> torch.Tensor:
        """All four rounds on one block; ``factors``/``kinds`` (n, 4) are in round order."""
        out = x
        for j in range(4):
            kind, factor = kinds[:, j], factors[:, j]
            if bool(((kind >= 0) & (kind <= 2)).any()):
                out = ops.blend(out, factor, kind)
            out = ops.on_subset(out, kind == 3, ops.hue, {"factor": factor}, inplace=out is not x)
        return out

    def action_params(self, params: Params) -> torch.Tensor:
        return torch.stack([params[name].float() for name in JITTERS], dim=1)


class _Destructive(Transformation):
    """An op the target never sees; the action flags it (+1 applied to the source)."""

    action_dim = 1
    encoding = "flag"

    def identity(self, batch_size: int) -> Params:
        return {}

    def sample_applied(self, batch_size: int, generator: torch.Generator) -> Params:
        return {}

    def action_params(self, params: Params) -> torch.Tensor:
        return params["applied"].float().view(-1, 1)


class Grayscale(_Destructive):
    """Grayscale: replace RGB by the luma in all 3 channels (torchvision weights)."""

    @attrs.frozen
    class Config:
        p: float = attrs.field(default=0.2, validator=v.probability)

    def apply(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        return ops.on_subset(images, params["applied"], ops.grayscale)


def _odd_kernel(instance, attribute, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or value % 2 == 0:
        raise ValueError(f"'{attribute.name}' must be an odd integer >= 1, got {value!r}", attribute)


def _sigma_range(instance, attribute, value) -> None:
    v.interval(0.0, float("inf"))(instance, attribute, value)
    if value[0] <= 0:
        raise ValueError(f"'{attribute.name}' must be [min, max] with 0 < min <= max, got {list(value)!r}", attribute)


class GaussianBlur(_Destructive):
    """Gaussian blur: separable, kernel_size x kernel_size, sigma ~ U[sigma] per sample.

    ``kernel_size`` defaults to 23, about a tenth of a 224 px image, as in the
    SimCLR/BYOL tensor pipelines IWM's augmentations come from (torchvision
    needs a size; PIL's ``GaussianBlur(radius=sigma)`` in their PIL versions
    has none). At sigma 2 it spans +-5.5 sigma, so the truncated mass is
    below 1e-7. Scale it with the image size.
    """

    @attrs.frozen
    class Config:
        p: float = attrs.field(default=0.2, validator=v.probability)
        #: odd; at most the image's smaller side
        kernel_size: int = attrs.field(default=23, validator=_odd_kernel)
        sigma: tuple[float, float] = attrs.field(default=(0.1, 2.0), converter=v.as_pair, validator=_sigma_range)

    def identity(self, batch_size: int) -> Params:
        return {"sigma": torch.zeros(batch_size)}  # sigma 0: no blur

    def sample_applied(self, batch_size: int, generator: torch.Generator) -> Params:
        return {"sigma": _uniform(batch_size, *self.config.sigma, generator)}

    def check_image_size(self, height: int, width: int) -> None:
        k = self.config.kernel_size
        if k % 2 == 0 or k > min(height, width):
            raise ValueError(f"'kernel_size' ({k}) must be odd and smaller than the image ({height}x{width})")

    def apply(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        sigma, size = {"sigma": params["sigma"]}, self.config.kernel_size
        return ops.on_subset(images, params["applied"], ops.gaussian_blur, sigma, kernel_size=size)


class Solarize(_Destructive):
    """Solarization: invert the pixels at or above a threshold (torchvision semantics)."""

    @attrs.frozen
    class Config:
        p: float = attrs.field(default=0.2, validator=v.probability)
        threshold: float = attrs.field(default=0.5, validator=v.in_range(0.0, 1.0))

    def apply(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        return ops.on_subset(images, params["applied"], ops.solarize, threshold=self.config.threshold)


TRANSFORMATIONS = {
    "brightness": Brightness,
    "contrast": Contrast,
    "saturation": Saturation,
    "hue": Hue,
    "color_jitter": ColorJitter,
    "grayscale": Grayscale,
    "gaussian_blur": GaussianBlur,
    "solarize": Solarize,
}


@hookimpl
def jepa_register_transformations(registry) -> None:
    for name, cls in TRANSFORMATIONS.items():
        registry.register(name, cls)
