"""I-JEPA multiblock masking, vectorised over the batch.

The official ``MaskCollator`` loops over images and blocks in Python and draws
positions with ``randint(0, H - h)``, an exclusive bound that never places a
block on the last row or column. Here the whole batch is sampled at once: target
indices are corner + offsets, the context is a boolean grid built by broadcasting
with the targets scattered out, and positions are uniform over every valid place.

``upstream`` selects how faithful to the official code the distribution is:

* ``false`` (default): the paper's description with upstream's quirks fixed:
  independent uniforms for scale and aspect, the real-valued area, and every
  valid position (``top`` in ``[0, H - h]``).
* ``"bounds"``: the above with only upstream's exclusive position bound
  (``randint(0, H - h)``: a block never touches the last row or column).
* ``"exact"``: the official ``MaskCollator`` distribution: one uniform sets
  both scale and aspect (perfectly correlated), the area is rounded down to
  whole patches (``int(H * W * scale)``) before the square roots, the exclusive
  bound, contexts must keep *more than* ``min_keep`` patches, and the context may
  overlap one more target block after every 20 failed draws. Given the same
  generator state it draws the same block sizes as upstream's
  ``_sample_block_size`` (target then context, one float32 uniform each).

The baselines' samplers live here too: ``full`` (every token is context and
one target block: SimCLR, VICReg, MoCo v3) and ``random`` (MAE's random
masking, ``mask_ratio`` 0.75: context = kept tokens, one target block = the
masked ones).
"""

from __future__ import annotations

import math

import attrs
import torch

from jepa_core.api import Masking, Masks, hookimpl, validators as v

#: vectorised re-draws of the context position for images left with < min_keep patches
MAX_TRIES = 100
#: upstream's ``timeout``: failed context draws before one more target block may be overlapped
UPSTREAM_TRIES = 20
#: values of ``MultiBlock.Config.upstream``
UPSTREAM_MODES = (False, "bounds", "exact")


_bool = attrs.validators.instance_of(bool)


def _upstream_mode(instance, attribute, value) -> None:
    if not (value is False or (isinstance(value, str) and value in UPSTREAM_MODES)):
        raise ValueError(f"'{attribute.name}' must be false, 'bounds' or 'exact', got {value!r}", attribute)


def block_size(u_scale: float, u_aspect: float, scale, aspect, grid) -> tuple[int, int]:
    """(h, w) of a block from two uniforms in [0, 1), as the official code (h < rows, w < cols)."""
    rows, cols = grid
    area = rows * cols * (scale[0] + u_scale * (scale[1] - scale[0]))
    ratio = aspect[0] + u_aspect * (aspect[1] - aspect[0])
    h = round(math.sqrt(area * ratio))
    w = round(math.sqrt(area / ratio))
    return max(1, min(h, rows - 1)), max(1, min(w, cols - 1))


def upstream_block_size(u: float, scale, aspect, grid) -> tuple[int, int]:
    """(h, w) of a block as the official ``_sample_block_size``: one uniform ``u`` sets both
    scale and aspect, and the area is rounded down to whole patches first (h < rows, w < cols)."""
    rows, cols = grid
    max_keep = int(rows * cols * (scale[0] + u * (scale[1] - scale[0])))
    ratio = aspect[0] + u * (aspect[1] - aspect[0])
    h = round(math.sqrt(max_keep * ratio))
    w = round(math.sqrt(max_keep / ratio))
    return max(1, min(h, rows - 1)), max(1, min(w, cols - 1))


def position_high(size: int, extent: int, upstream_bounds: bool) -> int:
    """Exclusive upper bound of a block's top (or left): every valid place unless upstream."""
    return max(extent - size, 1) if upstream_bounds else extent - size + 1


class MultiBlock(Masking):
    """I-JEPA multiblock masking: M target blocks, one context block minus the targets.

    One target size and one context size are drawn per batch (so masks stack);
    positions are drawn per image and per block. ``sample`` returns ``Masks``
    with sorted flat indices ``row * cols + col`` on the CPU.
    """

    @attrs.frozen
    class Config:
        """Defaults are the official I-JEPA configuration (RECIPES.md)."""

        n_targets: int = attrs.field(default=4, validator=v.positive_int)
        target_scale: tuple = attrs.field(default=(0.15, 0.2), converter=v.as_pair, validator=v.positive_interval(1.0))
        target_aspect: tuple = attrs.field(default=(0.75, 1.5), converter=v.as_pair,
                                           validator=v.positive_interval(math.inf))
        context_scale: tuple = attrs.field(default=(0.85, 1.0), converter=v.as_pair, validator=v.positive_interval(1.0))
        context_aspect: tuple = attrs.field(default=(1.0, 1.0), converter=v.as_pair,
                                            validator=v.positive_interval(math.inf))
        min_keep: int = attrs.field(default=10, validator=v.positive_int)
        allow_overlap: bool = attrs.field(default=False, validator=_bool)
        #: false (faithful, fixed), "bounds" (only upstream's exclusive position bound) or
        #: "exact" (the official MaskCollator's distribution); see the module docstring
        upstream: bool | str = attrs.field(default=False, validator=_upstream_mode)

        @property
        def upstream_bounds(self) -> bool:
            """Whether positions use upstream's exclusive bound (both upstream modes)."""
            return self.upstream in ("bounds", "exact")

    def __init__(self, config: "MultiBlock.Config | None", grid: tuple[int, int]):
        config = config if config is not None else MultiBlock.Config()
        super().__init__(config, grid)
        self._exact = config.upstream == "exact"
        rows, cols = self.grid
        if rows < 1 or cols < 1:
            raise ValueError(f"multiblock: the patch grid must be positive, got {self.grid}")
        # Fail at build time, never mid-run, when a context block drawn for some batch
        # could not hold min_keep patches even with every target overlapping it.
        if self._exact:
            sizes = (upstream_block_size(u / 1000, config.context_scale, config.context_aspect, self.grid)
                     for u in range(1001))
        else:
            sizes = (block_size(u / 10, a / 10, config.context_scale, config.context_aspect, self.grid)
                     for u in range(11) for a in range(11))
        smallest = min(math.prod(size) for size in sizes)
        if smallest < self._min_context:
            raise ValueError(
                f"multiblock: 'min_keep' = {config.min_keep} exceeds the smallest context block "
                f"({smallest} patches on a {rows}x{cols} grid"
                + (", and upstream: exact keeps more than min_keep" if self._exact else "")
                + "); lower 'min_keep' or raise 'context_scale'"
            )
        self._rows = torch.arange(rows)
        self._cols = torch.arange(cols)

    @property
    def _min_context(self) -> int:
        """Fewest context patches accepted: upstream accepts only more than ``min_keep``."""
        return self.config.min_keep + (1 if self._exact else 0)

    def block_sizes(self, generator: torch.Generator) -> tuple[tuple[int, int], tuple[int, int]]:
        """The batch's target and context (h, w), the first draws of ``sample``."""
        cfg, g = self.config, generator
        if self._exact:  # as upstream: one float32 uniform per block kind, target first
            u = torch.rand(2, generator=g, dtype=torch.float32).tolist()
            return (upstream_block_size(u[0], cfg.target_scale, cfg.target_aspect, self.grid),
                    upstream_block_size(u[1], cfg.context_scale, cfg.context_aspect, self.grid))
        u = torch.rand(4, generator=g, dtype=torch.float64).tolist()
        return (block_size(u[0], u[1], cfg.target_scale, cfg.target_aspect, self.grid),
                block_size(u[2], u[3], cfg.context_scale, cfg.context_aspect, self.grid))

    def _positions(self, size, n: tuple[int, ...], g: torch.Generator):
        """Top and left corners, uniform over the valid places, shape ``n``."""
        (h, w), (rows, cols), up = size, self.grid, self.config.upstream_bounds
        top = torch.randint(0, position_high(h, rows, up), n, generator=g)
        left = torch.randint(0, position_high(w, cols, up), n, generator=g)
        return top, left

    def _context_mask(self, top, left, h: int, w: int, targets) -> torch.Tensor:
        """(n, rows*cols) bool: the context block (broadcast arange comparisons) minus ``targets``."""
        r = (self._rows >= top[:, None]) & (self._rows < top[:, None] + h)
        c = (self._cols >= left[:, None]) & (self._cols < left[:, None] + w)
        keep = (r[:, :, None] & c[:, None, :]).flatten(1)
        # The target indices are already at hand: scattering False is cheaper than
        # building and OR-ing a (B, M, rows, cols) grid per target block.
        return keep.scatter_(1, targets.flatten(1), False)

    def _offsets(self, h: int, w: int) -> torch.Tensor:
        """Sorted flat offsets of an h x w block from its top-left corner."""
        return (torch.arange(h)[:, None] * self.grid[1] + torch.arange(w)).flatten()

    def sample(self, batch_size: int, generator: torch.Generator) -> Masks:
        cfg, g, cols = self.config, generator, self.grid[1]
        (th, tw), (ch, cw) = self.block_sizes(g)

        # Targets: every block has exactly th*tw patches, so indices are offsets from the corner.
        t_top, t_left = self._positions((th, tw), (batch_size, cfg.n_targets), g)
        targets = (t_top * cols + t_left)[..., None] + self._offsets(th, tw)

        c_top, c_left = self._positions((ch, cw), (batch_size,), g)
        if cfg.allow_overlap:  # the whole block, like the targets
            return Masks((c_top * cols + c_left)[:, None] + self._offsets(ch, cw), targets)
        keep = self._context_mask(c_top, c_left, ch, cw, targets)
        rank = keep.cumsum(1)  # rank[:, -1] is each image's context size
        # As upstream: re-draw the context position of the (few) images left too small, and
        # after every MAX_TRIES failures let it overlap one more target block (upstream's
        # constrain_mask), so sampling always ends: the whole block holds min_keep (checked).
        # Exact mode counts as upstream: the k-th re-draw follows k + 1 failures, 20 per level.
        min_context = self._min_context
        every, first = (UPSTREAM_TRIES, 1) if self._exact else (MAX_TRIES, 0)
        tries = 0
        while bool((bad := (rank[:, -1] < min_context).nonzero().flatten()).numel()):
            excluded = cfg.n_targets - min((tries + first) // every, cfg.n_targets)
            top, left = self._positions((ch, cw), (bad.numel(),), g)
            keep[bad] = self._context_mask(top, left, ch, cw, targets[bad, :excluded])
            rank = keep.cumsum(1)
            tries += 1
        # Truncate to the shortest context: the first n kept indices of each row, in row-major order.
        n = int(rank[:, -1].min())
        context = (keep & (rank <= n)).nonzero()[:, 1].view(batch_size, n)
        return Masks(context, targets)


class FullMasking(Masking):
    """Every token is context and every token is one target block (contrastive baselines)."""

    grid_dims = None  # any grid: images and clips

    def __init__(self, config: None, grid: tuple[int, ...]):
        super().__init__(config, grid)
        if min(self.grid) < 1:
            raise ValueError(f"full: the patch grid must be positive, got {self.grid}")
        self._all = torch.arange(math.prod(self.grid))

    def sample(self, batch_size: int, generator: torch.Generator) -> Masks:
        n = self._all.numel()
        return Masks(self._all.expand(batch_size, n).clone(), self._all.view(1, 1, n).expand(batch_size, 1, n).clone())


def _open_probability(instance, attribute, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
        raise ValueError(f"'{attribute.name}' must be in (0, 1), got {value!r}", attribute)


class RandomMasking(Masking):
    """MAE random masking: keep a uniformly random subset of tokens as context; the rest are one target block.

    As MAE's ``random_masking``: per image, ``int(N * (1 - mask_ratio))`` tokens
    are kept (the first of a random permutation drawn from uniform noise); the
    masked ones form a single target block. Both index sets are sorted.
    """

    @attrs.frozen
    class Config:
        #: fraction of tokens hidden from the encoder (MAE: 0.75)
        mask_ratio: float = attrs.field(default=0.75, validator=_open_probability)

    grid_dims = None  # any grid: images and clips

    def __init__(self, config: "RandomMasking.Config | None", grid: tuple[int, ...]):
        config = config if config is not None else RandomMasking.Config()
        super().__init__(config, grid)
        n = math.prod(self.grid)
        self.n_keep = int(n * (1 - config.mask_ratio))
        if not 1 <= self.n_keep < n:
            raise ValueError(
                f"random: 'mask_ratio' = {config.mask_ratio} keeps {self.n_keep} of the {n} patches of a "
                f"{'x'.join(map(str, self.grid))} grid; at least one must be kept and one masked"
            )

    def sample(self, batch_size: int, generator: torch.Generator) -> Masks:
        n = math.prod(self.grid)
        order = torch.rand(batch_size, n, generator=generator).argsort(dim=1)
        context = order[:, : self.n_keep].sort(dim=1).values
        targets = order[:, self.n_keep :].sort(dim=1).values
        return Masks(context, targets.unsqueeze(1))


@hookimpl
def jepa_register_transformations(registry):
    registry.register("multiblock", MultiBlock)
    registry.register("full", FullMasking)
    registry.register("random", RandomMasking)
