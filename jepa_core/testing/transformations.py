"""Contracts of the ``transformations`` registry: image ops (``Transformation``) and mask samplers (``Masking``)."""

from __future__ import annotations

import math

from typing import Any, Callable

import torch

from jepa_core.api import ENCODINGS, Masking, Masks, Params, Transformation
from jepa_core.testing._core import Subject, create, draw_twice, first_difference, max_abs_diff

#: images per checked batch, and their side in pixels
BATCH, SIZE = 12, 32
#: float32 results computed two ways (a batch, one image) agree to this, on pixels in [0, 1]
ATOL = 1e-4
#: a bfloat16 result against the float32 one: eight bfloat16 steps at 1.0, what a few chained
#: roundings reach (colour jitter's four rounds: 0.017), not an op computed at too low a precision
BF16_ATOL = 2**-5
#: the patch grid of a ViT/16 at 224 px (what mask defaults are tuned for), one column wider
#: so that a swapped row and column shows
GRID = (14, 15)


def _devices() -> list[tuple[str, torch.dtype]]:
    """What the loop may run an op on besides the CPU in float32."""
    cuda = [("cuda", torch.float32), ("cuda", torch.bfloat16)] if torch.cuda.is_available() else []
    return [("cpu", torch.bfloat16)] + cuda


def _images() -> torch.Tensor:
    levels = torch.randint(0, 256, (BATCH, 3, SIZE, SIZE), generator=torch.Generator().manual_seed(0))
    return levels.float() / 255  # as the loader's uint8 crops become


def _rows(params: Params, i: int) -> Params:
    return {k: v[i:i + 1] for k, v in params.items()}


def _same_params(a: Params, b: Params) -> str | None:
    """The first key whose values differ, or None."""
    for key in sorted(set(a) | set(b)):
        if key not in a or key not in b or not torch.equal(a[key], b[key]):
            return key
    return None


def _sampled(it: Subject, what: str, draw: Callable[[torch.Generator], Params]) -> Params:
    """``draw``'s parameters, checked to be a function of the generator alone and shaped per sample."""
    try:
        first, second, moved = draw_twice(draw)
    except NotImplementedError:
        it.fail(f"{what} is not implemented (the base class's sample() and the world-model evaluators call it)")
    key = _same_params(first, second)
    it.expect(key is None and not moved,
              f"{what} draws from a global random generator (same generator seed, another global seed: "
              + (f"parameter {key!r} differs)" if key else "the global torch RNG moved)")
              + "; draw everything from the generator argument")
    it.expect("applied" in first, f"{what} has no 'applied' entry")
    for key, value in first.items():
        it.expect(isinstance(value, torch.Tensor) and value.shape[:1] == (BATCH,) and value.device.type == "cpu",
                  f"{what}: parameter {key!r} is not a CPU tensor with the batch ({BATCH}) as first dimension")
    it.expect(first["applied"].dtype == torch.bool and first["applied"].shape == (BATCH,),
              f"{what}: 'applied' is not a ({BATCH},) bool tensor")
    return first


def _apply(it: Subject, op: Transformation, images: torch.Tensor, params: Params, what: str) -> torch.Tensor:
    """``op.apply``, checked to keep its input intact and the batch's shape, dtype and device."""
    before = images.clone()
    out = op.apply(images, params)
    it.expect(torch.equal(images, before), f"apply with {what} changed its input images in place "
                                           "(the other view is made from the same pixels)")
    it.expect(isinstance(out, torch.Tensor) and out.shape == images.shape and out.dtype == images.dtype
              and out.device == images.device,
              f"apply with {what} returned {_describe(out)}, not {_describe(images)} like its input")
    return out


def _describe(x: Any) -> str:
    return f"{tuple(x.shape)} {x.dtype} on {x.device}" if isinstance(x, torch.Tensor) else type(x).__name__


def check_transformation(name: str, factory: Callable[..., Any], /, **params: Any) -> None:
    """Check an image transformation built as YAML ``{name: NAME, **params}`` builds it; ContractError if it breaks one.

    Parameters come only from the generator; the identity parameters and
    samples with ``applied`` false leave images unchanged, and apply leaves its
    input alone; a batch equals its images one by one;
    the action has ``action_dim`` entries and is zero between equal parameters;
    apply runs on the CPU in bfloat16 and on CUDA when there is one.
    """
    it = Subject("transformation", name)
    op = create("transformations", name, factory, **params)
    it.expect(isinstance(op, Transformation) and not isinstance(op, Masking),
              f"is a {type(op).__name__}, not an image Transformation (mask samplers: check_masking)")
    it.expect(op.encoding in ENCODINGS, f"declares encoding {op.encoding!r}; valid: {', '.join(ENCODINGS)}")
    op.check_image_size(SIZE, SIZE)
    images = _images()
    drawn = _sampled(it, "sample()", lambda g: op.sample(BATCH, g))
    every = _sampled(it, "sample_applied()", lambda g: {**op.sample_applied(BATCH, g),
                                                         "applied": torch.ones(BATCH, dtype=torch.bool)})
    if bad := first_difference(_apply(it, op, images, op.null_params(BATCH), "null_params()"), images, 0.0):
        it.fail(f"the identity parameters (null_params(), applied false) changed image {bad[0]} "
                f"(max abs diff {bad[1]:.3g})")
    out = _apply(it, op, images, drawn, "sampled parameters")
    kept = (~drawn["applied"]).nonzero().flatten().tolist()
    changed = next((i for i in kept if not torch.equal(out[i], images[i])), None)
    if changed is not None:
        it.fail(f"image {changed} has applied false but apply changed it "
                f"(max abs diff {max_abs_diff(out[changed], images[changed]):.3g})")
    for what, p, batch in (("sampled parameters", drawn, out),
                           ("every image drawn", every, _apply(it, op, images, every, "every image drawn"))):
        alone = torch.cat([_apply(it, op, images[i:i + 1], _rows(p, i), what) for i in range(BATCH)])
        if bad := first_difference(batch, alone, ATOL):
            it.fail(f"batch apply differs from per-image apply at image {bad[0]} (max abs diff {bad[1]:.3g}, {what})")
    _check_action(it, op, drawn, every)
    _check_devices(it, op, images, every)


def _check_action(it: Subject, op: Transformation, source: Params, target: Params) -> None:
    action = op.encode(source, target)
    it.expect(isinstance(action, torch.Tensor) and action.shape == (BATCH, op.action_dim)
              and action.is_floating_point(),
              f"encode() returned {_describe(action)}; the declared action_dim {op.action_dim} "
              f"makes it ({BATCH}, {op.action_dim}) float")
    it.expect(bool(torch.isfinite(action).all()), "encode() returned non-finite action entries")
    for what, p in (("sampled", source), ("null", op.null_params(BATCH))):
        same = op.encode(p, p)
        if bool(same.any()):
            it.fail(f"the action between equal {what} source and target parameters is not zero "
                    f"(max abs {max_abs_diff(same, torch.zeros_like(same)):.3g})")


def _check_devices(it: Subject, op: Transformation, images: torch.Tensor, params: Params) -> None:
    reference = op.apply(images, params)
    for device, dtype in _devices():
        what = f"{device} {str(dtype).removeprefix('torch.')}"
        moved = images.to(device, dtype)
        try:
            out = _apply(it, op, moved, params, f"images in {what}")
        except (RuntimeError, TypeError) as exc:
            it.fail(f"apply fails on {what} images: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}")
        atol = ATOL if dtype == torch.float32 else BF16_ATOL
        if bad := first_difference(out.float(), reference, atol):
            it.fail(f"apply on {what} differs from cpu float32 at image {bad[0]} "
                    f"(max abs diff {bad[1]:.3g}, allowed {atol:g})")


def check_masking(name: str, factory: Callable[..., Any], /, **params: Any) -> None:
    """Check a mask sampler built as the engine builds it (``Cls(config, grid)``); ContractError if it breaks one.

    Masks come only from the generator; indices are in range and distinct;
    context and targets are disjoint when the config's ``allow_overlap`` is
    false; the counts are the same for every image, so the masks stack.
    """
    it = Subject("masking", name)
    dims = getattr(factory, "grid_dims", 2)
    grids = {2: [GRID], 3: [(2, *GRID)], None: [GRID, (2, *GRID)]}[dims]  # a video grid: (time, rows, cols)
    for grid in grids:
        masking = create("transformations", name, factory, grid, **params)
        it.expect(isinstance(masking, Masking), f"is a {type(masking).__name__}, not a Masking")
        first, second, moved = draw_twice(lambda g: masking.sample(BATCH, g))
        it.expect(isinstance(first, Masks), f"sample() returned a {type(first).__name__}, not Masks")
        same = torch.equal(first.context, second.context) and torch.equal(first.targets, second.targets)
        it.expect(same and not moved, "sample() draws from a global random generator (same generator seed, "
                                      "another global seed: other masks); draw everything from the generator argument")
        disjoint = getattr(masking.config, "allow_overlap", None) is False
        for seed in range(4):
            _check_masks(it, masking.sample(BATCH, torch.Generator().manual_seed(seed)), disjoint, grid)


def _check_masks(it: Subject, masks: Masks, disjoint: bool, grid: tuple[int, ...]) -> None:
    n = math.prod(grid)
    context, targets = masks.context, masks.targets
    it.expect(context.dim() == 2 and targets.dim() == 3 and context.shape[0] == targets.shape[0] == BATCH
              and min(context.shape + targets.shape) > 0,
              f"masks of shapes context {tuple(context.shape)}, targets {tuple(targets.shape)}; the contract is "
              f"({BATCH}, Nc) and ({BATCH}, M, Nt), the same counts for every image, none empty")
    it.expect(not context.is_floating_point() and not targets.is_floating_point(), "mask indices are not integers")
    for what, idx in (("context", context), ("target", targets)):
        wrong = ((idx < 0) | (idx >= n)).nonzero()
        if wrong.numel():
            it.fail(f"{what} index {int(idx[tuple(wrong[0])])} at image {int(wrong[0, 0])} is outside "
                    f"a {'x'.join(map(str, grid))} grid")
        rows = idx.reshape(-1, idx.shape[-1]).sort(dim=1).values
        it.expect(not bool((rows[:, 1:] == rows[:, :-1]).any()), f"a {what} block names a token twice")
    if disjoint:
        shared = (context[:, :, None, None] == targets[:, None]).flatten(1).any(dim=1)
        if bool(shared.any()):
            it.fail(f"context and targets share a token at image {int(shared.nonzero()[0])} "
                    "although allow_overlap is off")
