"""V-JEPA 3-D multiblock ("tube") masking, vectorised over the batch.

The token grid of a clip is ``(time, rows, cols)`` (time = frames // tubelet) and
token ``(t, r, c)`` has flat index ``t * rows * cols + r * cols + c``. As V-JEPA's
``_MaskGenerator`` (``src/masks/multiblock3d.py``): one block size ``(t, h, w)``
is drawn per batch, shared by all ``num_blocks`` blocks of every clip so masks
stack; each block gets its own start, top and left, uniform over every valid
place; the targets are the union of the blocks, the context is the rest. With
``max_temporal_keep`` < 1 the context keeps only the first
``max(1, int(time * max_temporal_keep))`` time steps and the later tokens join the
targets (upstream zeroes them in every block mask, so they are predicted). Then
both index lists are cut to the shortest in the batch by keeping the first
indices in sorted (time-major) order, as upstream does: a clip with more tokens
loses its latest ones, not a random subset.

The block size is upstream's: three float32 uniforms in the order temporal scale,
spatial scale, aspect; ``t = max(1, int(time * scale_t))``, the area is rounded down
to whole tokens (``int(rows * cols * scale_s)``) before the square roots and a block
may span the whole height or width (upstream clips to ``min(h, rows)``, unlike
I-JEPA's ``h < rows``). Given the same generator state, :meth:`TubeMasking.block_size`
returns what upstream's ``_sample_block_size`` returns.

Deviations, on purpose:

* every draw, positions included, comes from the step's generator (upstream draws
  the positions from the global RNG), so a run is reproducible from ``(seed, step)``;
* a clip must keep at least ``min_keep`` context tokens (upstream: at least one);
  its positions are re-drawn until it does, and a config that can never keep that
  many is refused when the masking is built;
* a block side is at least one token (upstream can round a side of a very
  elongated block down to zero, an empty block).

One mask configuration per plugin: V-JEPA's pair (8 short-range blocks of spatial
scale 0.15, 2 long-range of 0.7) is two maskings sampled in the same step.
"""

from __future__ import annotations

import math

import attrs
import torch

from jepa_core.api import Masking, Masks, validators as v

#: vectorised re-draws of the positions of clips left with < min_keep context tokens
MAX_TRIES = 100
#: the largest float32 below 1: ``torch.rand``'s largest value, the top of the size check
_U_MAX = 1.0 - 2.0 ** -24
#: uniforms at which the build-time check evaluates block sizes (both ends included)
_U_GRID = tuple(i / 10 for i in range(10)) + (_U_MAX,)


def _optional_positive_int(instance, attribute, value) -> None:
    if value is not None:
        v.positive_int(instance, attribute, value)


def tube_size(u: tuple[float, float, float], config: "TubeMasking.Config", grid) -> tuple[int, int, int]:
    """(t, h, w) of a block from three uniforms (temporal, spatial, aspect) as upstream,
    with each side at least one token."""
    time, rows, cols = grid
    (t_lo, t_hi), (s_lo, s_hi), (a_lo, a_hi) = config.temporal_scale, config.spatial_scale, config.aspect_ratio
    t = max(1, int(time * (t_lo + u[0] * (t_hi - t_lo))))
    area = int(rows * cols * (s_lo + u[1] * (s_hi - s_lo)))
    ratio = a_lo + u[2] * (a_hi - a_lo)
    h = round(math.sqrt(area * ratio))
    w = round(math.sqrt(area / ratio))
    return t, max(1, min(h, rows)), max(1, min(w, cols))


class TubeMasking(Masking):
    """V-JEPA tube masking: ``num_blocks`` (t, h, w) boxes are the one target group,
    the rest of the clip (within ``max_temporal_keep``) is the context.

    ``sample`` returns ``Masks`` with sorted flat indices on the CPU: context
    (B, Nc) and targets (B, 1, Nt).
    """

    grid_dims = 3

    @attrs.frozen
    class Config:
        """Defaults are V-JEPA's short-range configuration (the long-range one is
        ``spatial_scale: [0.7, 0.7]``, ``num_blocks: 2``)."""

        #: fraction of rows * cols one block covers, [min, max]
        spatial_scale: tuple = attrs.field(default=(0.15, 0.15), converter=v.as_pair,
                                           validator=v.positive_interval(1.0))
        #: fraction of the time steps one block spans, [min, max]
        temporal_scale: tuple = attrs.field(default=(1.0, 1.0), converter=v.as_pair, validator=v.positive_interval(1.0))
        #: block height / width, [min, max]
        aspect_ratio: tuple = attrs.field(
            default=(0.75, 1.5), converter=v.as_pair, validator=v.positive_interval(math.inf))
        num_blocks: int = attrs.field(default=8, validator=v.positive_int)
        #: fraction of the time steps the context may span; later tokens are targets
        max_temporal_keep: float = attrs.field(default=1.0, validator=[v.positive, v.in_range(0.0, 1.0)])
        #: cap on the context tokens (upstream's ``max_keep``); null keeps the batch minimum
        max_keep: int | None = attrs.field(default=None, validator=_optional_positive_int)
        #: fewest context tokens a clip may keep; its block positions are re-drawn otherwise
        min_keep: int = attrs.field(default=10, validator=v.positive_int)

    def __init__(self, config: "TubeMasking.Config | None", grid: tuple[int, ...]):
        config = config if config is not None else TubeMasking.Config()
        if len(grid) != 3:
            raise ValueError(
                f"tubes: tube masking needs a video encoder (set encoder.frames) for a (time, rows, cols) "
                f"token grid, got the {len(grid)}-D grid {tuple(grid)}"
            )
        super().__init__(config, grid)
        time, rows, cols = self.grid
        if min(self.grid) < 1:
            raise ValueError(f"tubes: the token grid must be positive, got {self.grid}")
        if config.max_keep is not None and config.max_keep < config.min_keep:
            raise ValueError(f"tubes: 'max_keep' = {config.max_keep} is below 'min_keep' = {config.min_keep}")
        self._context_time = max(1, int(time * config.max_temporal_keep))
        # Fail at build time, never mid-run, when some drawable block size leaves fewer
        # than min_keep context tokens even with every block stacked on the same place,
        # as late as possible (re-drawing positions could then never succeed).
        window = rows * cols * self._context_time
        sizes = {tube_size((ut, us, ua), config, self.grid) for ut in _U_GRID for us in _U_GRID for ua in _U_GRID}
        best, (t, h, w) = min((window - h * w * max(0, self._context_time - time + t), (t, h, w)) for t, h, w in sizes)
        if best < config.min_keep:
            raise ValueError(
                f"tubes: 'min_keep' = {config.min_keep} cannot be met: a {t}x{h}x{w} block on a "
                f"{time}x{rows}x{cols} grid leaves at most {best} context tokens; lower 'min_keep', "
                "'spatial_scale' or 'temporal_scale', or raise 'max_temporal_keep'"
            )
        self._steps = [torch.arange(n) for n in self.grid]
        # Tokens past the context window are targets in every clip (upstream).
        self._late = (torch.arange(time) >= self._context_time).repeat_interleave(rows * cols)

    def block_size(self, generator: torch.Generator) -> tuple[int, int, int]:
        """The batch's (t, h, w), the first draws of ``sample``: one float32 uniform each
        for temporal scale, spatial scale and aspect, in upstream's order."""
        return tube_size(tuple(torch.rand(3, generator=generator).tolist()), self.config, self.grid)

    def _masked(self, size: tuple[int, int, int], n: int, g: torch.Generator) -> torch.Tensor:
        """(n, time*rows*cols) bool: the union of ``num_blocks`` boxes per clip, plus the late tokens."""
        shape = (n, self.config.num_blocks)
        sides = []
        for side, extent, steps in zip(size, self.grid, self._steps):
            corner = torch.randint(0, extent - side + 1, shape, generator=g)[..., None]
            sides.append((steps >= corner) & (steps < corner + side))  # (n, blocks, extent)
        in_t, in_r, in_c = sides
        boxes = in_t[..., :, None, None] & in_r[..., None, :, None] & in_c[..., None, None, :]
        return boxes.any(1).flatten(1) | self._late

    def sample(self, batch_size: int, generator: torch.Generator) -> Masks:
        cfg, g = self.config, generator
        size = self.block_size(g)
        masked = self._masked(size, batch_size, g)
        # Re-draw the positions of the (few) clips whose blocks cover too much of the context.
        tries = 0
        while (bad := ((~masked).sum(1) < cfg.min_keep).nonzero().flatten()).numel():
            if tries == MAX_TRIES:
                raise RuntimeError(
                    f"tubes: {bad.numel()} clip(s) kept fewer than 'min_keep' = {cfg.min_keep} context tokens "
                    f"after {MAX_TRIES} re-draws of {cfg.num_blocks} {size[0]}x{size[1]}x{size[2]} blocks on a "
                    f"{'x'.join(map(str, self.grid))} grid; lower 'min_keep', 'num_blocks' or 'spatial_scale'"
                )
            masked[bad] = self._masked(size, bad.numel(), g)
            tries += 1
        keep = ~masked
        n_context = int(keep.sum(1).min())
        if cfg.max_keep is not None:
            n_context = min(n_context, cfg.max_keep)
        context = _first(keep, n_context)
        targets = _first(masked, int(masked.sum(1).min()))
        return Masks(context, targets.unsqueeze(1))


def _first(mask: torch.Tensor, n: int) -> torch.Tensor:
    """(B, n) long: the first ``n`` set indices of each row of ``mask``, in sorted order."""
    return (mask & (mask.cumsum(1) <= n)).nonzero()[:, 1].view(mask.shape[0], n)
