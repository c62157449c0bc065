"""Batched photometric kernels: (B, 3, H, W) float images in [0, 1], per-sample parameters.

Each kernel reproduces the matching ``torchvision.transforms.v2.functional`` op
(same formulas, same clamping) for a whole batch in one pass, with one
parameter per sample as an (B,) tensor on the images' device. They are written
for the CPU's sake as much as the GPU's: few full-tensor passes, no boolean
``torch.where`` (unvectorised and ~10x slower than arithmetic on CPU), and
``on_subset`` so an op drawn with probability p costs p of the batch.
"""

from __future__ import annotations

import ctypes
import math
import sys
from typing import Callable

import torch
import torch.nn.functional as F

#: ITU-R 601-2 luma weights, as torchvision's rgb_to_grayscale
LUMA = (0.2989, 0.587, 0.114)


def _per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.to(device=like.device, dtype=like.dtype).view(-1, *([1] * (like.dim() - 1)))


def gray(x: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) luma, computed exactly as torchvision does."""
    r, g, b = x.unbind(1)
    return r.mul(LUMA[0]).add_(g, alpha=LUMA[1]).add_(b, alpha=LUMA[2]).unsqueeze(1)


def blend(x: torch.Tensor, factor: torch.Tensor, kind: torch.Tensor | int) -> torch.Tensor:
    """Brightness (kind 0), contrast (1) or saturation (2), chosen per sample, in one call.

    All three are torchvision's ``clamp(f * x + (1 - f) * ref)`` with ref 0,
    the image's mean luma, or its luma image, so a colour-jitter round runs
    every sample of a block through one call; any other kind is the identity
    (exact: x * 1, clamped, for x in [0, 1]). A contrast mean is a weighted sum
    of channel means (no luma image). Weights are formed on the CPU, where the
    parameters live, and cross to the device once.
    """
    kind = torch.as_tensor(kind).expand(x.shape[0]).cpu()
    f = factor.cpu().to(torch.float64)
    rest = 1.0 - f
    weights = torch.stack([torch.where(kind <= 2, f, 1.0), rest * (kind == 1), rest * (kind == 2)], dim=1)
    has_contrast, has_saturation = bool(weights[:, 1].any()), bool(weights[:, 2].any())
    scale, to_mean, to_gray = weights.to(device=x.device, dtype=x.dtype).view(-1, 3, 1, 1, 1).unbind(1)
    out = x * scale
    if has_contrast:
        luma = torch.tensor(LUMA, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        out.add_((x.mean(dim=(2, 3), keepdim=True) * luma).sum(1, keepdim=True).mul_(to_mean))
    if has_saturation:
        out.addcmul_(gray(x), to_gray)
    return out.clamp_(0.0, 1.0)


def brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return blend(x, factor, 0)


def contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return blend(x, factor, 1)


def saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return blend(x, factor, 2)


def hue(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Rotate the hue by ``factor`` turns without materialising HSV.

    torchvision goes rgb -> hsv -> rgb (~20 full-tensor passes and a gather).
    With V = max, C = max - min and H the hue in turns, the round trip is
    ``out_c = V - C * clamp(min(k, 4 - k), 0, 1)``, ``k = (6 H + n_c) mod 6``,
    n = (5, 3, 1) for (r, g, b) -- the same piecewise-linear map, evaluated
    directly. Which channel is the max (r first, then g on ties, as
    torchvision) is selected with 0/1 float weights and ``lerp``. Reduced-precision
    images are rotated in float32: the turns run in [0.5, 2), where bfloat16 steps
    by 1/128 of a turn, several percent of the pixel range once scaled by the chroma.
    """
    if x.dtype not in (torch.float32, torch.float64):
        return hue(x.float(), factor).to(x.dtype)
    r, g, b = x.unbind(1)
    vmax = torch.maximum(torch.maximum(r, g), b)
    vmin = torch.minimum(torch.minimum(r, g), b)
    chroma = vmax - vmin
    is_r = torch.eq(r, vmax, out=torch.empty_like(r))
    is_g = torch.eq(g, vmax, out=torch.empty_like(g))
    # hue * chroma in sextants for each choice of the max channel
    h = (r - g).add_(chroma, alpha=4.0).lerp_((b - r).add_(chroma, alpha=2.0), is_g).lerp_(g - b, is_r)
    # chroma == 0 implies h == 0, so any non-zero divisor gives hue 0 as torchvision.
    den = chroma.clamp_min(torch.finfo(x.dtype).tiny).mul_(6.0)
    turns = torch.addcdiv(_per_sample(factor, r) + 1.0, h, den)  # > 0, so frac() is mod 1
    out = torch.empty_like(x)
    for c, n in enumerate((5.0, 3.0, 1.0)):
        k = (turns + n / 6.0).frac_().mul_(6.0).sub_(2.0).abs_().sub_(1.0).clamp_(0.0, 1.0)
        torch.addcmul(vmin, chroma, k, out=out[:, c])  # V - C (1 - k') == min + C k'
    return out


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """Luma replicated to 3 channels (torchvision's num_output_channels=3)."""
    return gray(x).expand_as(x)


def solarize(x: torch.Tensor, threshold: float) -> torch.Tensor:
    """Invert pixels >= threshold; lerp with a 0/1 weight is exact and vectorised."""
    return torch.lerp(x, 1.0 - x, torch.ge(x, threshold, out=torch.empty_like(x)))


def gaussian_kernels(sigma: torch.Tensor, kernel_size: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(B, kernel_size) normalised 1-D Gaussians, built as torchvision builds them."""
    lim = (kernel_size - 1) / (2.0 * math.sqrt(2.0))
    t = torch.linspace(-lim, lim, kernel_size, dtype=dtype, device=sigma.device)
    return torch.softmax(-(t / sigma.to(dtype).view(-1, 1)).pow(2), dim=1)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Separable blur with one sigma per sample, reflect padding as torchvision.

    The 2-D kernel is the outer product of two 1-D ones, so a vertical then a
    horizontal depthwise convolution (one group per image channel) gives the
    same result as torchvision's k x k convolution at 2k instead of k^2
    multiply-adds per pixel. On CPU the grouped convolution is ~6x faster in
    channels-last layout (every image channel a contiguous "pixel" vector).
    """
    n, c, h, w = x.shape
    p = kernel_size // 2
    weight = gaussian_kernels(sigma.to(x.device), kernel_size, x.dtype).repeat_interleave(c, dim=0)
    y = F.pad(x, (p, p, p, p), mode="reflect").view(1, n * c, h + 2 * p, w + 2 * p)
    if x.device.type == "cpu":
        y = y.contiguous(memory_format=torch.channels_last)
    y = F.conv2d(y, weight.view(n * c, 1, kernel_size, 1), groups=n * c)
    y = F.conv2d(y, weight.view(n * c, 1, 1, kernel_size), groups=n * c)
    return y.contiguous().view(n, c, h, w)


_HUGE_PAGE = 2 << 20
_madvise = None


def new_like(images: torch.Tensor, copy: bool = False) -> torch.Tensor:
    """A fresh contiguous tensor like ``images`` (its copy with ``copy``).

    Large CPU buffers are advised onto transparent huge pages before first
    touch: a fresh buffer takes one page fault per 4 KiB page, and for a
    batch of 224 px images those cost ~3x the copy itself (what PyTorch's
    ``THP_MEM_ALLOC_ENABLE=1`` does for every allocation). Purely advisory:
    where it is unavailable nothing changes.
    """
    global _madvise
    out = torch.empty_like(images, memory_format=torch.contiguous_format)
    if out.device.type == "cpu" and out.nbytes >= 8 * _HUGE_PAGE and _madvise is not False:
        try:
            if _madvise is None:
                if not sys.platform.startswith("linux"):
                    raise OSError("no transparent huge pages")
                _madvise = ctypes.CDLL(None, use_errno=True).madvise
                _madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
            start = -(-out.data_ptr() // _HUGE_PAGE) * _HUGE_PAGE
            end = (out.data_ptr() + out.nbytes) // _HUGE_PAGE * _HUGE_PAGE
            _madvise(start, end - start, 14)  # MADV_HUGEPAGE
        except (OSError, AttributeError):
            _madvise = False
    return out.copy_(images) if copy else out


#: on the CPU, kernels run on blocks of about this many bytes of images so their
#: temporaries stay in cache: a full-batch temporary streams through DRAM and a
#: fresh one page-faults (~5x slower per pass than an in-cache block).
CPU_BLOCK_BYTES = 2 << 20


def on_subset(
    images: torch.Tensor,
    rows: torch.Tensor,
    fn: Callable[..., torch.Tensor],
    params: dict[str, torch.Tensor] | None = None,
    inplace: bool = False,
    **static,
) -> torch.Tensor:
    """``fn`` on the selected samples, written back; the others pass through.

    ``rows`` is a (B,) bool mask or the indices to process, in processing
    order. Work scales with their number: the subset is gathered, transformed
    and scattered back, on the CPU block by block (``CPU_BLOCK_BYTES``). Rows
    and ``params`` (per batch sample) are read on the CPU, where they were
    sampled, so selecting costs no device synchronisation; ``fn`` gets its
    block's entries of every param. With ``inplace`` the result is written
    into ``images`` (a buffer the caller owns); otherwise ``images`` is never
    modified.
    """
    rows = rows.cpu()
    index = rows.nonzero().squeeze(1) if rows.dtype == torch.bool else rows
    count, batch = index.numel(), images.shape[0]
    if count == 0:
        return images
    params = {k: v.cpu()[index] for k, v in (params or {}).items()}
    step = count
    if images.device.type == "cpu":
        step = max(1, CPU_BLOCK_BYTES // max(1, images[0].numel() * images.element_size()))
    if count == batch and step >= batch and bool((index == torch.arange(batch)).all()):
        return fn(images, **params, **static)
    out = images if inplace else new_like(images, copy=count < batch)
    for start in range(0, count, step):
        block = {k: v[start : start + step] for k, v in params.items()}
        chunk = index[start : start + step]
        first, last = int(chunk[0]), int(chunk[-1])
        if last - first + 1 == chunk.numel() and bool((chunk.diff() == 1).all()):  # consecutive: slices
            out[first : last + 1] = fn(images[first : last + 1], **block, **static)
        else:
            chunk = chunk.to(images.device)
            out.index_copy_(0, chunk, fn(images.index_select(0, chunk), **block, **static))
    return out
