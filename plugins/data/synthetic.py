"""Procedural datasets rendered on the fly (offline, any size, deterministic): ``shapes`` and ``motifs``.

Image i of a split is rendered from a generator seeded with a bijective mix of
(seed, split, i): it never changes and costs no disk.
"""

from __future__ import annotations

import functools
import math

import attrs
import torch
import torch.nn.functional as F

from jepa_core.api import SPLITS, check_split, splitmix64, validators as v


def _int_in(low: int, high: int):
    return attrs.validators.and_(attrs.validators.instance_of(int), v.in_range(low, high))


SHAPES = ("circle", "square", "triangle", "cross", "ring", "star", "crescent", "hexagon")
PALETTE = {
    "red": (0.90, 0.12, 0.12),
    "orange": (0.97, 0.55, 0.08),
    "yellow": (0.95, 0.88, 0.10),
    "green": (0.12, 0.75, 0.22),
    "cyan": (0.12, 0.85, 0.88),
    "blue": (0.12, 0.25, 0.92),
    "magenta": (0.88, 0.18, 0.80),
    "white": (0.97, 0.97, 0.97),
}
_N_RANDOM = 32  # uniforms drawn per image, all in one call (layout in Shapes.params)


@functools.lru_cache(maxsize=8)
def _grid(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates in [0, 1], (size, size) each: y down, x right."""
    t = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    return t.view(-1, 1).expand(size, size), t.view(1, -1).expand(size, size)


def _star_sdf(u: torch.Tensor, v_: torch.Tensor, k: int, r_out: float, r_in: float) -> torch.Tensor:
    """Radial signed distance to a k-pointed star (r_in = r_out*cos(pi/k) gives a regular k-gon).

    Each point's angle is folded into [0, pi/k]; the boundary there is the
    segment from the tip (r_out, angle 0) to the notch (r_in, angle pi/k).
    """
    a = math.pi / k
    phi = torch.remainder(torch.atan2(v_, u), 2 * a)
    phi = torch.minimum(phi, 2 * a - phi)
    dx, dy = r_in * math.cos(a) - r_out, r_in * math.sin(a)
    r_edge = (r_out * dy) / (torch.cos(phi) * dy - torch.sin(phi) * dx)
    return torch.hypot(u, v_) - r_edge


def _box(u, v_, half_w, half_h):
    return torch.maximum(u.abs() - half_w, v_.abs() - half_h)


# Signed distance (negative inside) in shape units: every shape fits the unit disc.
_SDF = {
    "circle": lambda u, v_: torch.hypot(u, v_) - 0.9,
    "square": lambda u, v_: _star_sdf(u, v_, 4, 1.0, math.cos(math.pi / 4)),
    "triangle": lambda u, v_: _star_sdf(u, v_, 3, 1.0, math.cos(math.pi / 3)),
    "cross": lambda u, v_: torch.minimum(_box(u, v_, 0.9, 0.3), _box(u, v_, 0.3, 0.9)),
    "ring": lambda u, v_: (torch.hypot(u, v_) - 0.72).abs() - 0.22,
    "star": lambda u, v_: _star_sdf(u, v_, 5, 1.0, 0.45),
    "crescent": lambda u, v_: torch.maximum(torch.hypot(u, v_) - 0.95, 0.72 - torch.hypot(u - 0.42, v_)),
    "hexagon": lambda u, v_: _star_sdf(u, v_, 6, 0.95, 0.95 * math.cos(math.pi / 6)),
}


#: a split's rendered items are kept when all of them fit in this many bytes (``Rendered``)
CACHE_BYTES = 256 * 2**20


def _copy(item):
    """A copy of an item's tensors (in tuples and dicts), so a caller writing into one spares the cache."""
    if isinstance(item, torch.Tensor):
        return item.clone()
    if isinstance(item, dict):
        return {k: _copy(x) for k, x in item.items()}
    if isinstance(item, tuple):
        return tuple(_copy(x) for x in item)
    return item


class Rendered:
    """A procedural split's items by index, kept when the whole split fits ``CACHE_BYTES``.

    Items are a pure function of their index, so keeping them changes nothing but
    the time: rendering is about a tenth of a tiny CPU step, and every epoch after
    the first would render the same images again.
    """

    def __init__(self, length: int, item_bytes: int):
        self._items: dict | None = {} if length * item_bytes <= CACHE_BYTES else None

    def get(self, index: int, make):
        """Item ``index``: ``make(index)`` the first time, a copy of that after."""
        if self._items is None:
            return make(index)
        if index not in self._items:
            self._items[index] = make(index)
        return _copy(self._items[index])


class Shapes(torch.utils.data.Dataset):
    """Procedural coloured shapes on textured backgrounds (offline, any size, deterministic).

    Image i of a split is rendered from a generator seeded with a bijective mix
    of (seed, split, i), so it never changes, costs no disk, and no val image
    shares its seed with a train image. Each image has one shape (label: shape
    class) in one palette colour (second task: ``labels("colour")``) at a random
    scale, position and rotation over a muted background of smooth noise,
    stripes or a checkerboard in two random colours, so neither colour nor
    texture alone gives the shape away.
    """

    @attrs.frozen
    class Config:
        size: int = attrs.field(default=64, validator=_int_in(8, 4096))
        train_size: int = attrs.field(default=2048, validator=v.positive_int)
        val_size: int = attrs.field(default=512, validator=v.positive_int)
        seed: int = attrs.field(default=0, validator=_int_in(0, 2**31 - 1))
        n_shapes: int = attrs.field(default=6, validator=_int_in(2, len(SHAPES)))
        n_colours: int = attrs.field(default=len(PALETTE), validator=_int_in(1, len(PALETTE)))

    def __init__(self, config: Config | None = None, split: str = "train"):
        check_split(split)
        self.config = config or self.Config()
        self.split = split
        self.size = self.config.size
        self.length = self.config.train_size if split == "train" else self.config.val_size
        self.num_classes = self.config.n_shapes
        #: task -> class names (the registries.datasets multi-task contract)
        self.tasks = {
            "shape": list(SHAPES[: self.config.n_shapes]),
            "colour": list(PALETTE)[: self.config.n_colours],
        }
        self._colours = torch.tensor(list(PALETTE.values())[: self.config.n_colours], dtype=torch.float32)
        self._labels: dict[str, torch.Tensor] = {}
        self._rendered = Rendered(self.length, 3 * self.size**2)

    def __len__(self) -> int:
        return self.length

    def index_seed(self, index: int) -> int:
        """Generator seed of image ``index``: distinct for every (seed, split, index)."""
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.split} split of {self.length}")
        return splitmix64(((self.config.seed * 2 + SPLITS.index(self.split)) << 32) + index)

    def params(self, index: int) -> dict:
        """All random choices of image ``index`` as Python numbers (cheap: labels need no rendering)."""
        u = torch.rand(_N_RANDOM, generator=torch.Generator().manual_seed(self.index_seed(index))).tolist()
        cfg = self.config
        radius = 0.16 + 0.2 * u[2]  # circumscribed radius, fraction of the image side
        return {
            "shape": min(int(u[0] * cfg.n_shapes), cfg.n_shapes - 1),
            "colour": min(int(u[1] * cfg.n_colours), cfg.n_colours - 1),
            "radius": radius,
            "centre": (radius + (1 - 2 * radius) * u[3], radius + (1 - 2 * radius) * u[4]),  # (y, x): inside
            "angle": u[5] * 2 * math.pi,
            "background": min(int(u[6] * 3), 2),  # noise, stripes, checker
            "bg_colours": [0.12 + 0.6 * x for x in u[7:13]],  # muted, so palette colours stand out
            "bg_angle": u[13] * math.pi,
            "bg_freq": 2 + 6 * u[14],
            "bg_phase": u[15] * 2 * math.pi,
            "noise": u[16:32],
        }

    def _background(self, p: dict) -> torch.Tensor:
        s = self.size
        if p["background"] == 0:
            grid = torch.tensor(p["noise"]).view(1, 1, 4, 4)
            t = F.interpolate(grid, size=(s, s), mode="bilinear", align_corners=False)[0, 0]
        else:
            ys, xs = _grid(s)
            c, sn, f = math.cos(p["bg_angle"]), math.sin(p["bg_angle"]), p["bg_freq"]
            along, across = xs * c + ys * sn, ys * c - xs * sn
            if p["background"] == 1:
                t = torch.sin(along * (2 * math.pi * f) + p["bg_phase"]).mul_(0.5).add_(0.5)
            else:
                t = torch.remainder(torch.floor(along * f) + torch.floor(across * f), 2)
        a, b = torch.tensor(p["bg_colours"]).view(2, 3, 1, 1)
        return torch.addcmul(a, b - a, t)

    def _draw(self, bg: torch.Tensor, p: dict) -> torch.Tensor:
        """``bg`` (3, size, size) floats with shape ``p`` (shape, colour, radius, centre, angle) painted on."""
        ys, xs = _grid(self.size)
        r = p["radius"]
        dy, dx = ys - p["centre"][0], xs - p["centre"][1]
        c, s = math.cos(p["angle"]) / r, math.sin(p["angle"]) / r
        u, v_ = dx * c + dy * s, dy * c - dx * s
        dist = _SDF[SHAPES[p["shape"]]](u, v_)
        alpha = dist.mul_(-r * self.size).add_(0.5).clamp_(0, 1)  # one-pixel anti-aliased edge
        return torch.addcmul(bg, self._colours[p["colour"]].view(3, 1, 1) - bg, alpha)

    def render(self, index: int, params: dict | None = None) -> torch.Tensor:
        """Image ``index`` as a uint8 (3, size, size) tensor."""
        p = params or self.params(index)
        img = self._draw(self._background(p), p)
        return img.mul_(255).round_().clamp_(0, 255).to(torch.uint8)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self._rendered.get(index, self._item)

    def _item(self, index: int) -> tuple[torch.Tensor, int]:
        p = self.params(index)
        return self.render(index, p), p["shape"]

    def labels(self, task: str = "shape") -> torch.Tensor:
        """Long tensor of every image's label for ``task`` ("shape" or "colour")."""
        if task not in self.tasks:
            raise ValueError(f"unknown task {task!r}; shapes has {', '.join(self.tasks)}")
        if task not in self._labels:
            ps = [self.params(i) for i in range(self.length)]
            for t in self.tasks:
                self._labels[t] = torch.tensor([p[t] for p in ps], dtype=torch.long)
        return self._labels[task]



@functools.lru_cache(maxsize=None)
def _area(shape: str) -> float:
    """Area of a shape in shape units (the unit disc holds it), measured on a fine grid."""
    t = torch.linspace(-1, 1, 513)
    u, v_ = t.view(-1, 1).expand(513, 513), t.view(1, -1).expand(513, 513)
    return (_SDF[shape](u, v_) < 0).float().mean().item() * 4


class Motifs(Shapes):
    """One shape class repeated on a jittered grid: the class is in no pixel statistic.

    Every image holds ``g x g`` copies of one shape (``g`` drawn from ``grid``)
    in one palette colour, each with its own size, rotation and position jitter
    inside its cell, over a low-contrast background. Every class covers the same
    area (shapes are scaled to the smallest one's), and colour is drawn
    independently of the class, so neither the colours nor how much of the image
    is painted give the class away (tests/test_datasets.py checks the channel
    means and spreads are at chance). The copies make the class what a masked
    copy's visible neighbours predict and what two crops of the image agree on.
    ``colour_per``, ``background`` and ``rotation`` decide what else the
    patches of an image share (docs/evaluation.md measures what a JEPA learns
    from each). Tasks: ``shape`` (the label), ``colour`` (with one colour per
    image only) and ``grid`` (copies per side).
    """

    @attrs.frozen
    class Config(Shapes.Config):
        #: copies per side: each image draws g uniformly from [low, high]
        grid: tuple[int, int] = attrs.field(
            default=(2, 3),
            converter=v.as_pair,
            validator=attrs.validators.and_(v.interval(1, 6), attrs.validators.deep_iterable(attrs.validators.instance_of(int))),
        )
        #: each copy turns by a uniform angle in [0, rotation) degrees
        rotation: float = attrs.field(default=360.0, converter=float, validator=v.in_range(0.0, 360.0))
        #: "image": one colour for all copies; "copy": each copy its own colour
        colour_per: str = attrs.field(default="image", validator=v.one_of("image", "copy"))
        #: "texture": noise, stripes or checks; "flat": one muted colour; "grey": one grey for every image
        background: str = attrs.field(default="texture", validator=v.one_of("texture", "flat", "grey"))

    def __init__(self, config: Config | None = None, split: str = "train"):
        super().__init__(config or self.Config(), split)
        self.tasks["grid"] = list(range(self.config.grid[0], self.config.grid[1] + 1))
        if self.config.colour_per == "copy":
            del self.tasks["colour"]  # no one colour to name

    def params(self, index: int) -> dict:
        cfg = self.config
        low, high = cfg.grid
        u = torch.rand(_N_RANDOM + 5 * high * high, generator=torch.Generator().manual_seed(self.index_seed(index))).tolist()
        g = low + min(int(u[1] * (high - low + 1)), high - low)
        shape = min(int(u[0] * cfg.n_shapes), cfg.n_shapes - 1)
        smallest = min(_area(name) for name in SHAPES[: cfg.n_shapes])
        area_scale = math.sqrt(smallest / _area(SHAPES[shape]))  # equal areas: coverage says nothing
        colour = min(int(u[2] * cfg.n_colours), cfg.n_colours - 1)
        base = [0.45] * 3 if cfg.background == "grey" else [0.2 + 0.5 * x for x in u[7:10]]
        copies = []
        for k in range(g * g):
            a, b, c, d, e = u[_N_RANDOM + 5 * k : _N_RANDOM + 5 * k + 5]
            outer = (0.3 + 0.15 * a) / g  # a cell is 1/g wide: copies never overlap
            slack = 0.5 / g - outer
            radius = outer * area_scale
            row, col = divmod(k, g)
            centre = ((row + 0.5) / g + slack * (2 * b - 1), (col + 0.5) / g + slack * (2 * c - 1))
            own = min(int(e * cfg.n_colours), cfg.n_colours - 1) if cfg.colour_per == "copy" else colour
            copies.append({"radius": radius, "centre": centre, "angle": math.radians(d * cfg.rotation), "colour": own})
        return {
            "shape": shape,
            "colour": colour,
            "grid": g - low,
            "copies": copies,
            "background": min(int(u[6] * 3), 2) if cfg.background == "texture" else None,  # None: flat
            "bg_colours": base + [x + 0.12 * (2 * w - 1) for x, w in zip(base, u[10:13])],  # low contrast
            "bg_angle": u[13] * math.pi,
            "bg_freq": 2 + 6 * u[14],
            "bg_phase": u[15] * 2 * math.pi,
            "noise": u[16:32],
        }

    def _background(self, p: dict) -> torch.Tensor:
        if p["background"] is None:  # flat: the first background colour everywhere
            return torch.tensor(p["bg_colours"][:3]).view(3, 1, 1).repeat(1, self.size, self.size)
        return super()._background(p)

    def render(self, index: int, params: dict | None = None) -> torch.Tensor:
        p = params or self.params(index)
        img = self._background(p)
        for copy in p["copies"]:
            img = self._draw(img, {**copy, "shape": p["shape"]})
        return img.mul_(255).round_().clamp_(0, 255).to(torch.uint8)
