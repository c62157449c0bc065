"""Multiblock masking: the vectorised sampler against a per-image loop.

``reference_multiblock`` is a plain loop in the style of the official I-JEPA
``MaskCollator``, with the same parameterisation as the ``multiblock`` plugin
(same distribution, not the same random numbers). It is both the oracle the
tests compare distributions against and the baseline this benchmark times.
The engine reaches the plugin through the plugin manager only.
"""

from __future__ import annotations

import math
import statistics
import time

import torch

from jepa_core.registries.transformations import Masks

GRID = (14, 14)
BATCH = 256


def _block_size(scale, aspect, grid, g: torch.Generator) -> tuple[int, int]:
    rows, cols = grid
    u_scale, u_aspect = torch.rand(2, generator=g, dtype=torch.float64).tolist()
    area = rows * cols * (scale[0] + u_scale * (scale[1] - scale[0]))
    ratio = aspect[0] + u_aspect * (aspect[1] - aspect[0])
    h = round(math.sqrt(area * ratio))
    w = round(math.sqrt(area / ratio))
    while h >= rows and h > 1:  # as upstream: a block never spans the whole grid
        h -= 1
    while w >= cols and w > 1:
        w -= 1
    return max(h, 1), max(w, 1)


def _place(size, grid, upstream_bounds: bool, g: torch.Generator) -> torch.Tensor:
    """A (rows, cols) bool mask with one block at a uniform position."""
    (h, w), (rows, cols) = size, grid
    if upstream_bounds:
        top = int(torch.randint(0, max(rows - h, 1), (1,), generator=g))
        left = int(torch.randint(0, max(cols - w, 1), (1,), generator=g))
    else:
        top = int(torch.randint(0, rows - h + 1, (1,), generator=g))
        left = int(torch.randint(0, cols - w + 1, (1,), generator=g))
    mask = torch.zeros(rows, cols, dtype=torch.bool)
    mask[top : top + h, left : left + w] = True
    return mask


def reference_multiblock(config, grid, batch_size: int, generator: torch.Generator, max_tries: int = 100) -> Masks:
    """Multiblock masks from a per-image, per-block Python loop (the readable oracle)."""
    g = generator
    t_size = _block_size(config.target_scale, config.target_aspect, grid, g)
    c_size = _block_size(config.context_scale, config.context_aspect, grid, g)
    all_targets, all_contexts = [], []
    for _ in range(batch_size):
        blocks = [_place(t_size, grid, config.upstream_bounds, g) for _ in range(config.n_targets)]
        all_targets.append([torch.nonzero(b.flatten()).flatten() for b in blocks])
        for _ in range(max_tries):
            context = _place(c_size, grid, config.upstream_bounds, g)
            if not config.allow_overlap:
                for block in blocks:
                    context &= ~block
            kept = torch.nonzero(context.flatten()).flatten()
            if len(kept) >= config.min_keep:
                break
        else:
            raise RuntimeError(f"reference multiblock: no context kept min_keep={config.min_keep} patches")
        all_contexts.append(kept)
    n_context = min(len(c) for c in all_contexts)
    context = torch.stack([c[:n_context] for c in all_contexts])
    targets = torch.stack([torch.stack(t) for t in all_targets])
    return Masks(context, targets)


def _median_ms(fn, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def run(device: str) -> list[dict]:
    """Time ``multiblock`` against the loop for one batch.

    Masks are always sampled on the CPU (from the step's generator), so ``device``
    does not change the figure. Timed on one intra-op thread: ops this small gain
    nothing from more, and on a busy machine multi-threaded ones stall in OpenMP
    (measured 0.4 ms -> 60 ms per batch on 2 shared cores).
    """
    from jepa_core.manager import get_registries

    masker = get_registries().transformations.create("multiblock", GRID)
    g = torch.Generator().manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ms = _median_ms(lambda: masker.sample(BATCH, g), repeats=50)
        ref_ms = _median_ms(lambda: reference_multiblock(masker.config, GRID, BATCH, g), repeats=7)
    finally:
        torch.set_num_threads(threads)
    return [
        {
            "suite": "masking",
            "name": f"multiblock {GRID[0]}x{GRID[1]}, batch {BATCH}",
            "value": ms,
            "unit": "ms/batch",
            "reference": ref_ms,
            "ratio": ref_ms / ms,
            "target": ">= 20x",
        }
    ]
