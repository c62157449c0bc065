"""V-JEPA tube masking: block sizes and shapes as configured, disjoint context and
targets, reproducible from the generator, and configs refused with a clear message."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from jepa_core.plugins.video.tubes import TubeMasking

GRID = (8, 14, 14)  # 16 frames, tubelet 2, 224 px, patch 16: V-JEPA's grid


def masker(grid=GRID, **config):
    return TubeMasking(TubeMasking.Config(**config), grid)


def copy(g: torch.Generator) -> torch.Generator:
    c = torch.Generator()
    c.set_state(g.get_state())
    return c


def as_set(idx: torch.Tensor) -> set[int]:
    return set(idx.flatten().tolist())


def box(start, top, left, size, grid) -> set[int]:
    """Flat indices of the (t, h, w) box at (start, top, left), by loops."""
    (t, h, w), (_, rows, cols) = size, grid
    return {s * rows * cols + r * cols + c
            for s in range(start, start + t) for r in range(top, top + h) for c in range(left, left + w)}


def union_of_boxes(masked: set[int], size, n_blocks: int, grid) -> bool:
    """Whether ``masked`` is the union of ``n_blocks`` boxes of ``size`` (the same box may repeat)."""
    time, rows, cols = grid
    t, h, w = size
    inside = [b for s in range(time - t + 1) for r in range(rows - h + 1) for c in range(cols - w + 1)
              if (b := frozenset(box(s, r, c, size, grid))) <= masked]
    return any(set().union(*combo) == masked for combo in itertools.combinations_with_replacement(inside, n_blocks))


# -- block sizes and the masked sets ------------------------------------------------


def test_block_sizes_stay_in_the_configured_ranges():
    """t from temporal_scale; h = round(sqrt(A a)), w = round(sqrt(A / a)) with the area
    A = int(rows * cols * scale), so the sides are bounded by the ranges' ends (round is monotone)."""
    cfg = dict(temporal_scale=(0.25, 0.75), spatial_scale=(0.1, 0.5), aspect_ratio=(0.5, 2.0))
    m = masker(**cfg)
    time, rows, cols = GRID
    a_lo, a_hi = int(rows * cols * 0.1), int(rows * cols * 0.5)
    g = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(500):
        t, h, w = m.block_size(g)
        seen.add((t, h, w))
        assert int(time * 0.25) <= t <= int(time * 0.75)
        assert round(math.sqrt(a_lo * 0.5)) <= h <= round(math.sqrt(a_hi * 2.0))
        assert round(math.sqrt(a_lo / 2.0)) <= w <= round(math.sqrt(a_hi / 0.5))
    assert len(seen) > 20, "block sizes should vary over the ranges"
    # fixed ranges give one size: area int(196 * 0.15) = 29, a 5x5 square over all 8 time steps
    assert masker(aspect_ratio=(1.0, 1.0)).block_size(g) == (8, 5, 5)


def test_block_size_matches_upstream_given_the_same_generator():
    """Upstream's _sample_block_size: three float32 uniforms, area rounded down, sides clipped to the grid."""
    m = masker(temporal_scale=(0.5, 1.0), spatial_scale=(0.15, 0.7), aspect_ratio=(0.3, 3.0))
    time, rows, cols = GRID
    for seed in range(100):
        g = torch.Generator().manual_seed(seed)
        u = [torch.rand(1, generator=g).item() for _ in range(3)]
        t = max(1, int(time * (0.5 + u[0] * 0.5)))
        area = int(rows * cols * (0.15 + u[1] * 0.55))
        ratio = 0.3 + u[2] * 2.7
        h, w = min(round(math.sqrt(area * ratio)), rows), min(round(math.sqrt(area / ratio)), cols)
        assert m.block_size(torch.Generator().manual_seed(seed)) == (t, h, w)


def test_targets_are_the_union_of_num_blocks_boxes_of_the_drawn_size():
    grid = (4, 6, 6)
    m = masker(grid, temporal_scale=(0.5, 1.0), spatial_scale=(0.1, 0.2), aspect_ratio=(0.5, 2.0),
               num_blocks=3, min_keep=1)
    g = torch.Generator().manual_seed(1)
    for _ in range(60):
        size = m.block_size(copy(g))  # sample's first draws
        masks = m.sample(1, g)  # one clip: nothing is truncated
        masked = as_set(masks.targets)
        assert union_of_boxes(masked, size, 3, grid), f"targets are not 3 boxes of {size}"
        assert as_set(masks.context) == set(range(math.prod(grid))) - masked


def test_context_and_targets_are_disjoint_sorted_and_in_range():
    m = masker()
    g = torch.Generator().manual_seed(2)
    for _ in range(20):
        masks = m.sample(8, g)
        for ctx, tgt in zip(masks.context, masks.targets[:, 0]):
            assert not as_set(ctx) & as_set(tgt)
            for idx in (ctx, tgt):
                assert torch.all(idx[1:] > idx[:-1]) and 0 <= int(idx.min()) and int(idx.max()) < math.prod(GRID)


def test_every_token_is_reachable_as_a_target():
    grid = (4, 5, 6)
    m = masker(grid, temporal_scale=(0.25, 0.5), spatial_scale=(0.1, 0.3), num_blocks=2)
    g = torch.Generator().manual_seed(3)
    hit = torch.zeros(math.prod(grid), dtype=torch.bool)
    for _ in range(200):
        hit[m.sample(4, g).targets.flatten()] = True
    missed = [(int(i) // 30, int(i) % 30 // 6, int(i) % 6) for i in (~hit).nonzero().flatten()]
    assert not missed, f"(t, row, col) never masked: {missed[:5]}"


def test_masks_stack_for_a_batch_of_8():
    masks = masker().sample(8, torch.Generator().manual_seed(4))
    assert masks.context.dtype == masks.targets.dtype == torch.long
    assert masks.context.shape[0] == 8 and masks.context.dim() == 2
    assert masks.targets.shape[:2] == (8, 1) and masks.targets.dim() == 3
    assert masks.context.shape[1] >= 10  # min_keep


# -- reproducibility ------------------------------------------------------------------


def test_the_generator_alone_decides_the_masks():
    m = masker()

    def draw(seed):
        torch.manual_seed(seed + 100)  # the global RNG must not matter
        return m.sample(8, torch.Generator().manual_seed(seed))

    a, b, c = draw(5), draw(5), draw(6)
    assert torch.equal(a.context, b.context) and torch.equal(a.targets, b.targets)
    assert not (a.context.shape == c.context.shape and torch.equal(a.context, c.context))


# -- the context window and the keep limits -----------------------------------------------


def test_max_temporal_keep_moves_late_tokens_from_context_to_targets():
    time, rows, cols = GRID
    m = masker(max_temporal_keep=0.5)
    masks = m.sample(1, torch.Generator().manual_seed(7))
    late = set(range(time // 2 * rows * cols, time * rows * cols))
    assert all(i < time // 2 * rows * cols for i in masks.context.flatten().tolist())
    assert late <= as_set(masks.targets)


def test_max_keep_caps_the_context():
    masks = masker(max_keep=50).sample(8, torch.Generator().manual_seed(8))
    assert masks.context.shape == (8, 50)


def test_min_keep_is_met_by_redrawing_positions():
    """Long-range blocks often cover a 14x14 frame entirely; those clips are re-drawn."""
    m = masker(spatial_scale=(0.7, 0.7), num_blocks=2, aspect_ratio=(1.5, 1.5), min_keep=80)
    g = torch.Generator().manual_seed(9)
    for _ in range(10):
        assert m.sample(16, g).context.shape[1] >= 80


def test_min_keep_that_positions_rarely_meet_raises_a_clear_runtime_error():
    # 3x3 blocks on a 4x4 frame keep 7 tokens only when all 8 share one corner
    m = masker((1, 4, 4), spatial_scale=(0.75, 0.75), aspect_ratio=(1.0, 1.0), num_blocks=8, min_keep=7)
    with pytest.raises(RuntimeError, match="'min_keep' = 7 .* after 100 re-draws"):
        m.sample(4, torch.Generator().manual_seed(0))


# -- refused configs ------------------------------------------------------------------------


@pytest.mark.parametrize("key, value", [
    ("spatial_scale", (0.0, 0.5)),
    ("spatial_scale", (0.2, 1.5)),
    ("temporal_scale", (0.5, 1.2)),
    ("aspect_ratio", (2.0, 1.0)),
    ("num_blocks", 0),
    ("max_temporal_keep", 0.0),
    ("max_temporal_keep", 1.5),
    ("max_keep", 0),
    ("min_keep", 0),
])
def test_a_bad_config_names_the_key(key, value):
    with pytest.raises(ValueError, match=f"'{key}'") as err:
        TubeMasking.Config(**{key: value})
    assert "\n" not in str(err.value.args[0])


def test_a_2d_grid_needs_a_video_encoder():
    with pytest.raises(ValueError, match=r"video encoder \(set encoder.frames\)") as err:
        TubeMasking(None, (14, 14))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("config, key", [
    (dict(spatial_scale=(1.0, 1.0), min_keep=1), "'min_keep' = 1 cannot be met"),
    (dict(max_temporal_keep=0.125, spatial_scale=(0.95, 0.95), min_keep=20), "'min_keep' = 20 cannot be met"),
    (dict(max_keep=5, min_keep=10), "'max_keep' = 5 is below 'min_keep' = 10"),
])
def test_a_config_the_grid_cannot_hold_is_refused_at_build(config, key):
    with pytest.raises(ValueError, match=key) as err:
        masker(**config)
    assert "\n" not in str(err.value)
