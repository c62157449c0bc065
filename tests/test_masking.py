"""The multiblock mask sampler: the I-JEPA recipe, its upstream bug fixed, and
agreement with the plain per-image loop it replaces."""

from __future__ import annotations

import math
from collections import Counter
from statistics import NormalDist

import attrs
import pytest
import torch

from jepa_core.bench.masking import reference_multiblock
from jepa_core.plugins.transformations.masking import MultiBlock, jepa_register_transformations
from jepa_core.registries import ComponentError, Registry, build_config
from jepa_core.registries.transformations import Masks

GRID = (14, 14)
N = GRID[0] * GRID[1]


def batches(config, grid=GRID, batch_size=16, n=50, seed=0):
    masker = MultiBlock(config, grid)
    g = torch.Generator().manual_seed(seed)
    return [masker.sample(batch_size, g) for _ in range(n)]


def block_shape(idx: torch.Tensor, cols: int) -> tuple[int, int]:
    """(h, w) of a block given its sorted flat indices; asserts it is a full rectangle."""
    r, c = idx // cols, idx % cols
    h, w = int(r.max() - r.min() + 1), int(c.max() - c.min() + 1)
    corner = int(r.min()) * cols + int(c.min())
    expected = corner + (torch.arange(h)[:, None] * cols + torch.arange(w)).flatten()
    assert torch.equal(idx, expected), "a block is not a full, sorted rectangle"
    return h, w


def assert_size_in_range(h, w, scale, aspect, grid):
    """h = round(sqrt(A a)), w = round(sqrt(A / a)), clamped below the grid size: some
    area A / N in ``scale`` and aspect a in ``aspect`` must round to (h, w)."""
    rows, cols = grid
    sh = (h - 0.5, math.inf if h == rows - 1 else h + 0.5)  # range of sqrt(A a)
    sw = (w - 0.5, math.inf if w == cols - 1 else w + 0.5)  # range of sqrt(A / a)
    area = (sh[0] * sw[0] / (rows * cols), sh[1] * sw[1] / (rows * cols))
    ratio = (sh[0] / sw[1], sh[1] / max(sw[0], 1e-9))
    assert area[0] <= scale[1] and area[1] >= scale[0], f"{h}x{w} block has scale {h * w / (rows * cols):.3f}"
    assert ratio[0] <= aspect[1] and ratio[1] >= aspect[0], f"{h}x{w} block has aspect {h / w:.3f}"


def target_mask(masks, n=N) -> torch.Tensor:
    """(B, n) bool: patches covered by any target block."""
    b = masks.targets.shape[0]
    return torch.zeros(b, n, dtype=torch.bool).scatter_(1, masks.targets.flatten(1), True)


# -- registration and config ------------------------------------------------------


def test_registers_through_the_hook_and_converts_yaml_lists():
    registry = Registry("transformations")
    jepa_register_transformations(registry)
    entry = registry.get("multiblock")
    assert entry.config is MultiBlock.Config
    assert entry.description.startswith("I-JEPA multiblock masking")
    masker = registry.create("multiblock", GRID, target_scale=[0.1, 0.2])
    assert isinstance(masker, MultiBlock) and masker.grid == GRID
    assert masker.config.target_scale == (0.1, 0.2)
    assert masker.config == MultiBlock.Config(target_scale=(0.1, 0.2))


@pytest.mark.parametrize(
    "params, key",
    [
        ({"target_scale": [0.3, 0.1]}, "target_scale"),
        ({"target_scale": [0.0, 0.1]}, "target_scale"),
        ({"context_scale": [0.9, 1.2]}, "context_scale"),
        ({"target_aspect": [-1.0, 1.0]}, "target_aspect"),
        ({"context_aspect": [0.0, 1.0]}, "context_aspect"),
        ({"target_aspect": [1.0]}, "target_aspect"),
        ({"n_targets": 0}, "n_targets"),
        ({"min_keep": 0}, "min_keep"),
        ({"allow_overlap": "yes"}, "allow_overlap"),
        ({"upstream": True}, "upstream"),
        ({"upstream": "exactly"}, "upstream"),
        ({"upstream_bounds": True}, "upstream_bounds"),  # replaced by upstream: bounds
    ],
)
def test_bad_config_names_the_key(params, key):
    with pytest.raises(ComponentError) as info:
        build_config(MultiBlock.Config, params, "x")
    assert info.value.key == key


def test_min_keep_larger_than_any_context_block_fails_at_build():
    with pytest.raises(ValueError, match="min_keep"):
        MultiBlock(MultiBlock.Config(min_keep=10), (4, 4))  # context blocks are at most 3x3


# -- shapes and sizes ---------------------------------------------------------------


def test_shapes_dtypes_and_sorted_indices():
    masks = MultiBlock(MultiBlock.Config(), GRID).sample(8, torch.Generator().manual_seed(0))
    assert masks.context.dtype == masks.targets.dtype == torch.int64
    assert masks.context.device.type == masks.targets.device.type == "cpu"
    assert masks.context.shape[0] == 8 and masks.targets.shape[:2] == (8, 4)
    for idx in (masks.context, masks.targets):
        assert (idx.diff(dim=-1) > 0).all() and idx.min() >= 0 and idx.max() < N


@pytest.mark.parametrize("grid", [GRID, (10, 16)])
def test_target_blocks_have_the_recipe_scale_and_aspect(grid):
    cfg = MultiBlock.Config()
    sizes = set()
    for masks in batches(cfg, grid, batch_size=4, n=60):
        shapes = {block_shape(block, grid[1]) for block in masks.targets.flatten(0, 1)}
        assert len(shapes) == 1, "one target size per batch"
        (h, w), = shapes
        assert_size_in_range(h, w, cfg.target_scale, cfg.target_aspect, grid)
        sizes.add((h, w))
    assert len(sizes) > 3, "the block size should vary between batches"
    # Scale and aspect are independent draws: upstream's single uniform makes h grow
    # exactly when w shrinks, so it never yields two sizes with both h and w larger.
    assert any(h1 < h2 and w1 < w2 for h1, w1 in sizes for h2, w2 in sizes)


def test_context_block_has_the_recipe_scale_and_aspect():
    cfg = MultiBlock.Config(allow_overlap=True)  # the context is then the whole block
    for masks in batches(cfg, (20, 20), batch_size=4, n=40):
        shapes = {block_shape(block, 20) for block in masks.context}
        assert len(shapes) == 1, "one context size per batch"
        (h, w), = shapes
        assert h == w, "context aspect is 1"
        assert_size_in_range(h, w, cfg.context_scale, cfg.context_aspect, (20, 20))


# -- overlap and min_keep -------------------------------------------------------------


def test_context_excludes_targets_by_default():
    for masks in batches(MultiBlock.Config()):
        assert not target_mask(masks).gather(1, masks.context).any()


def test_context_may_overlap_targets_when_allowed():
    overlap = [target_mask(m).gather(1, m.context).any() for m in batches(MultiBlock.Config(allow_overlap=True), n=5)]
    assert all(overlap)


def test_context_keeps_min_keep_by_redrawing():
    # Without re-draws ~60% of these batches have an image below min_keep (calibrated).
    cfg = MultiBlock.Config(context_scale=(0.5, 0.5), min_keep=20)
    for masks in batches(cfg):
        assert masks.context.shape[1] >= 20
        assert not target_mask(masks).gather(1, masks.context).any()
    assert min(m.context.shape[1] for m in batches(MultiBlock.Config())) >= 10


def test_truncation_keeps_the_first_patches_of_each_context():
    # upstream bounds with a 13x13 context on 14x14 pins the context block at (0, 0),
    # so each image's full context is known: the block minus its targets.
    cfg = MultiBlock.Config(context_scale=(1.0, 1.0), upstream="bounds")
    block = torch.zeros(GRID, dtype=torch.bool)
    block[:13, :13] = True
    for masks in batches(cfg, n=10):
        full = block.flatten() & ~target_mask(masks)
        n = masks.context.shape[1]
        assert n == int(full.sum(1).min()), "truncated to the shortest context in the batch"
        for kept, context in zip(full, masks.context):
            assert torch.equal(context, kept.nonzero().flatten()[:n])


def test_impossible_min_keep_relaxes_target_exclusion_instead_of_crashing():
    # Any two 3x3 blocks on a 4x4 grid overlap, so a 3x3 context never keeps 9 patches outside
    # the targets: as upstream, the context is finally allowed to overlap them (never a crash mid-run).
    cfg = MultiBlock.Config(target_scale=(1.0, 1.0), context_scale=(1.0, 1.0), min_keep=9)
    masks = MultiBlock(cfg, (4, 4)).sample(4, torch.Generator().manual_seed(0))
    assert masks.context.shape == (4, 9)


def test_small_grids_never_fail_mid_run():
    masker = MultiBlock(MultiBlock.Config(min_keep=4), (6, 6))
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        assert masker.sample(32, g).context.shape[1] >= 4


def test_a_context_block_that_can_be_smaller_than_min_keep_is_a_build_error():
    with pytest.raises(ValueError, match="smallest context block"):
        MultiBlock(MultiBlock.Config(context_scale=(0.2, 1.0), min_keep=10), (6, 6))


# -- positions: every valid place, unlike upstream ---------------------------------------

# On a 6x9 grid: targets 3x4 (area 12, aspect 0.75), context 5x5 (area 27, aspect 1).
FIXED = dict(target_scale=(12 / 54, 12 / 54), target_aspect=(0.75, 0.75), context_scale=(0.5, 0.5), allow_overlap=True)


def corners(masks, cols=9):
    """Sets of (row, col) top-left corners of the target and context blocks."""
    t = masks.targets[..., 0].flatten()
    c = masks.context[:, 0]
    return {(int(i) // cols, int(i) % cols) for i in t}, {(int(i) // cols, int(i) % cols) for i in c}


def test_every_valid_position_is_reachable():
    t_corners, c_corners, covered = set(), set(), torch.zeros(54, dtype=torch.bool)
    for masks in batches(MultiBlock.Config(**FIXED), (6, 9), batch_size=32, n=20):
        assert masks.targets.shape[2] == 12 and masks.context.shape[1] == 25
        t, c = corners(masks)
        t_corners |= t
        c_corners |= c
        covered |= target_mask(masks, 54).any(0)
    assert t_corners == {(r, c) for r in range(4) for c in range(6)}  # top in [0, 6-3], left in [0, 9-4]
    assert c_corners == {(r, c) for r in range(2) for c in range(5)}
    assert covered.all(), "the last row and column must be reachable as targets"


@pytest.mark.parametrize("upstream", ["bounds", "exact"])
def test_upstream_bounds_reproduce_the_missing_last_row_and_column(upstream):
    t_corners, c_corners, covered = set(), set(), torch.zeros(54, dtype=torch.bool)
    for masks in batches(MultiBlock.Config(**FIXED, upstream=upstream), (6, 9), batch_size=32, n=20):
        t, c = corners(masks)
        t_corners |= t
        c_corners |= c
        covered |= target_mask(masks, 54).any(0)
    assert max(r for r, _ in t_corners) == 2 and max(c for _, c in t_corners) == 4  # never rows-h, cols-w
    assert c_corners == {(0, c) for c in range(4)}
    grid = covered.view(6, 9)
    assert not grid[-1].any() and not grid[:, -1].any() and grid[:-1, :-1].all()


def test_default_recipe_reaches_every_patch():
    covered = torch.zeros(N, dtype=torch.bool)
    for masks in batches(MultiBlock.Config(), n=20):
        covered |= target_mask(masks).any(0)
    assert covered.all()


# -- reproducibility ----------------------------------------------------------------------


def test_same_seed_same_masks_and_only_the_generator_matters():
    masker = MultiBlock(MultiBlock.Config(), GRID)
    torch.manual_seed(1)
    a = masker.sample(16, torch.Generator().manual_seed(7))
    torch.manual_seed(2)  # the global RNG must not matter
    b = masker.sample(16, torch.Generator().manual_seed(7))
    c = masker.sample(16, torch.Generator().manual_seed(8))
    assert torch.equal(a.context, b.context) and torch.equal(a.targets, b.targets)
    assert a.context.shape != c.context.shape or not torch.equal(a.context, c.context)
    assert a.targets.shape != c.targets.shape or not torch.equal(a.targets, c.targets)


# -- same distribution as the per-image reference loop ---------------------------------------


def _stats(sample, n_batches=200, batch_size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    coverage, n_context, n_target = torch.zeros(N), 0.0, 0.0
    for _ in range(n_batches):
        masks = sample(batch_size, g)
        coverage += torch.bincount(masks.targets.flatten(), minlength=N)
        n_context += masks.context.shape[1] / n_batches
        n_target += masks.targets.shape[2] / n_batches
    return coverage / coverage.sum(), n_context, n_target


def test_matches_the_reference_loop_distribution():
    cfg = MultiBlock.Config()
    masker = MultiBlock(cfg, GRID)
    cov, n_ctx, n_tgt = _stats(masker.sample, seed=0)
    ref_cov, ref_ctx, ref_tgt = _stats(lambda b, g: reference_multiblock(cfg, GRID, b, g), seed=1)
    # Calibrated: seed-to-seed max difference ~0.0005 (uniform coverage would be 1/196 = 0.0051).
    assert (cov - ref_cov).abs().max() < 0.0012
    assert abs(n_ctx - ref_ctx) < 2.0 and abs(n_tgt - ref_tgt) < 1.0
    # The comparison is sharp enough to see the upstream off-by-one (~0.003).
    up = MultiBlock.Config(upstream="bounds")
    up_cov, _, _ = _stats(lambda b, g: reference_multiblock(up, GRID, b, g), seed=2)
    assert (cov - up_cov).abs().max() > 0.002


# -- upstream: exact against a loop oracle of the official MaskCollator -----------------------
# Written from facebookresearch/ijepa src/masks/multiblock.py: _sample_block_size,
# _sample_block_mask and __call__, per image and per block in Python. Upstream draws the
# sizes from the step's seeded generator and the positions from the global RNG; the oracle
# takes a generator for each. Upstream hard-codes the context aspect (1, 1), the default here.


def official_size(_rand: float, scale, aspect, grid) -> tuple[int, int]:
    height, width = grid
    min_s, max_s = scale
    mask_scale = min_s + _rand * (max_s - min_s)
    max_keep = int(height * width * mask_scale)
    min_ar, max_ar = aspect
    aspect_ratio = min_ar + _rand * (max_ar - min_ar)
    h = int(round(math.sqrt(max_keep * aspect_ratio)))
    w = int(round(math.sqrt(max_keep / aspect_ratio)))
    while h >= height:
        h -= 1
    while w >= width:
        w -= 1
    return h, w


def official_block_size(g, scale, aspect, grid) -> tuple[int, int]:
    return official_size(torch.rand(1, generator=g).item(), scale, aspect, grid)


def official_block_mask(g, size, grid, min_keep, excluded_blocks=None):
    """(sorted kept indices, the block's index set); ``excluded_blocks`` are the target blocks
    (upstream multiplies by their complements, its ``acceptable_regions``)."""
    (h, w), (height, width) = size, grid
    tries, timeout = 0, 20
    while True:
        top = int(torch.randint(0, height - h, (1,), generator=g))
        left = int(torch.randint(0, width - w, (1,), generator=g))
        block = {r * width + c for r in range(top, top + h) for c in range(left, left + w)}
        mask = set(block)
        if excluded_blocks is not None:
            for region in excluded_blocks[: max(len(excluded_blocks) - tries, 0)]:
                mask -= region
        if len(mask) > min_keep:
            return sorted(mask), block
        timeout -= 1
        if timeout == 0:
            tries, timeout = tries + 1, 20


def official_collate(cfg, grid, batch_size, size_g, position_g) -> Masks:
    p_size = official_block_size(size_g, cfg.target_scale, cfg.target_aspect, grid)
    e_size = official_block_size(size_g, cfg.context_scale, cfg.context_aspect, grid)
    preds, encs = [], []
    for _ in range(batch_size):
        masks_p = [official_block_mask(position_g, p_size, grid, cfg.min_keep) for _ in range(cfg.n_targets)]
        preds.append([m for m, _ in masks_p])
        regions = None if cfg.allow_overlap else [block for _, block in masks_p]
        encs.append(official_block_mask(position_g, e_size, grid, cfg.min_keep, regions)[0])
    n_pred = min(len(m) for ms in preds for m in ms)
    n_enc = min(len(m) for m in encs)
    return Masks(torch.tensor([m[:n_enc] for m in encs]), torch.tensor([[m[:n_pred] for m in ms] for ms in preds]))


WIDE = dict(target_aspect=(0.3, 3.0), context_scale=(0.4, 0.7), context_aspect=(0.5, 2.0), min_keep=4)
EXACT_CASES = [pytest.param({}, GRID, id="ijepa-14x14"), pytest.param(WIDE, (10, 16), id="wide-10x16")]


def z_bonferroni(m: int, alpha: float = 1e-3) -> float:
    """Two-sided normal quantile for m comparisons at family-wise level alpha."""
    return NormalDist().inv_cdf(1 - alpha / (2 * m))


@pytest.mark.parametrize("params, grid", EXACT_CASES)
def test_upstream_exact_draws_the_official_block_sizes(params, grid):
    # Not only the same distribution: from the same generator state, the very same sizes
    # (upstream draws the target size, then the context size, one float32 uniform each).
    cfg = MultiBlock.Config(**params, upstream="exact")
    masker = MultiBlock(cfg, grid)
    for seed in range(2000):
        ours = masker.block_sizes(torch.Generator().manual_seed(seed))
        g = torch.Generator().manual_seed(seed)
        official = (official_block_size(g, cfg.target_scale, cfg.target_aspect, grid),
                    official_block_size(g, cfg.context_scale, cfg.context_aspect, grid))
        assert ours == official, seed
    for seed in range(20):  # and they are the sizes sample() uses
        masks = masker.sample(2, torch.Generator().manual_seed(seed))
        (th, tw), _ = masker.block_sizes(torch.Generator().manual_seed(seed))
        assert {block_shape(b, grid[1]) for b in masks.targets.flatten(0, 1)} == {(th, tw)}


def official_size_distribution(scale, aspect, grid, n=100_000) -> dict:
    """P(h, w) of the official size: a function of one uniform, integrated on n midpoints."""
    counts = Counter(official_size((i + 0.5) / n, scale, aspect, grid) for i in range(n))
    return {size: k / n for size, k in counts.items()}


def test_upstream_exact_target_sizes_have_the_official_distribution_and_the_default_does_not():
    cfg = MultiBlock.Config()
    p = official_size_distribution(cfg.target_scale, cfg.target_aspect, GRID)
    official_mean = sum(h * w * q for (h, w), q in p.items())
    assert official_mean == pytest.approx(33.39, abs=0.01)  # patches, 14x14, I-JEPA defaults
    n = 4000
    sizes = {}
    for upstream in ("exact", False):
        masker = MultiBlock(attrs.evolve(cfg, upstream=upstream), GRID)
        g = torch.Generator().manual_seed(0)
        sizes[upstream] = [masker.block_sizes(g)[0] for _ in range(n)]
    z = z_bonferroni(len(p) + 1)

    def agrees(drawn) -> bool:
        freq = Counter(drawn)
        for size in set(freq) | set(p):
            q = p.get(size, 0.0)
            if abs(freq[size] / n - q) > z * math.sqrt(max(q * (1 - q), 1 / n) / n):
                return False
        areas = torch.tensor([h * w for h, w in drawn], dtype=torch.float64)
        return abs(float(areas.mean()) - official_mean) <= z * float(areas.std()) / math.sqrt(n)

    exact_mean = sum(h * w for h, w in sizes["exact"]) / n
    fixed_mean = sum(h * w for h, w in sizes[False]) / n
    assert agrees(sizes["exact"]), f"exact mode: mean target block {exact_mean:.2f} vs official {official_mean:.2f}"
    # The check has the power to see the default's independent, real-valued draws (mean 34.26).
    assert not agrees(sizes[False]), f"default mode: mean target block {fixed_mean:.2f}"
    # 34.26: the default's mean, by quadrature of block_size over both uniforms.
    fixed_areas = torch.tensor([h * w for h, w in sizes[False]], dtype=torch.float64)
    assert abs(fixed_mean - 34.26) <= z * float(fixed_areas.std()) / math.sqrt(n)


def _position_stats(batched, singles, grid):
    """(counts, n) per statistic: target top and left marginals over the blocks of ``batched``;
    per-cell context frequency and the context-size histogram over the images of ``singles``
    (batches of one: truncation to the batch's shortest context would couple the images)."""
    rows, cols = grid
    corner = torch.cat([m.targets[..., 0].flatten() for m in batched])
    contexts = [m.context[0] for m in singles]
    return (
        (torch.bincount(corner // cols, minlength=rows), corner.numel()),
        (torch.bincount(corner % cols, minlength=cols), corner.numel()),
        (torch.bincount(torch.cat(contexts), minlength=rows * cols), len(contexts)),
        (torch.bincount(torch.tensor([c.numel() for c in contexts]), minlength=rows * cols + 1), len(contexts)),
    )


def _max_z(ours, official) -> float:
    """Largest |difference of frequencies| / its standard error over all bins of all statistics."""
    worst = 0.0
    for (a, na), (b, nb) in zip(ours, official):
        a, b = a.double(), b.double()
        pooled = (a + b) / (na + nb)
        se = (pooled * (1 - pooled) * (1 / na + 1 / nb)).sqrt().clamp_min(1e-12)
        worst = max(worst, float(((a / na - b / nb).abs() / se).max()))
    return worst


@pytest.mark.parametrize("params, grid", EXACT_CASES)
def test_upstream_exact_positions_match_the_official_loop(params, grid):
    # Same generator seed per batch, so both draw the same block sizes; positions then come
    # from independent streams and their distributions are compared bin by bin (a two-sample
    # z-test per bin, Bonferroni over all bins at family-wise level 1e-3).
    cfg = MultiBlock.Config(**params, upstream="exact")
    batched_seeds, single_seeds = range(8), range(100, 1100)

    def ours(config):
        masker = MultiBlock(config, grid)
        draw = lambda b, s: masker.sample(b, torch.Generator().manual_seed(s))  # noqa: E731
        return [draw(256, s) for s in batched_seeds], [draw(1, s) for s in single_seeds]

    def official(b, s):
        return official_collate(cfg, grid, b, torch.Generator().manual_seed(s), torch.Generator().manual_seed(10**6 + s))

    ref_batched = [official(256, s) for s in batched_seeds]
    ref = _position_stats(ref_batched, [official(1, s) for s in single_seeds], grid)
    mine = ours(cfg)
    for a, b in zip(mine[0], ref_batched):
        assert a.targets.shape == b.targets.shape
    z = z_bonferroni(sum(counts.numel() for counts, _ in ref))
    assert _max_z(_position_stats(*mine, grid), ref) <= z
    # The check has the power to see the default mode (every valid place, other sizes).
    assert _max_z(_position_stats(*ours(attrs.evolve(cfg, upstream=False)), grid), ref) > z


def test_upstream_exact_keeps_more_than_min_keep_as_upstream():
    # A 5x5 context on 6x6 with min_keep 25 is refused: upstream needs *more* than 25.
    small = dict(target_scale=(0.1, 0.1), context_scale=(0.7, 0.7))
    MultiBlock(MultiBlock.Config(**small, min_keep=25), (6, 6))
    with pytest.raises(ValueError, match="smallest context block"):
        MultiBlock(MultiBlock.Config(**small, min_keep=25, upstream="exact"), (6, 6))
    masks = batches(MultiBlock.Config(**small, min_keep=20, upstream="exact"), (6, 6), n=20)
    assert min(m.context.shape[1] for m in masks) > 20
