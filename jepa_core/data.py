"""The engine side of data loading: crops and flips in the workers, resumable order.

Reproducibility is the point of this module. Every random choice a training
sample sees comes from a ``torch.Generator`` seeded with a ``draw_seed`` that
the sampler computes as a pure function of (seed, epoch, index), so

* the batches do not depend on the number of loader workers or their seeding;
* a run resumed at optimizer step k (``set_position(k)``) sees exactly the
  batches, crops and flips an uninterrupted run would have seen from step k.

Datasets come from the ``datasets`` registry (``jepa_core.registries.datasets``) and yield
``(image, label)`` with image a PIL image or a uint8 (3, H, W) tensor; the
loaders here turn them into dicts ``{"image", "label", "crop", "flip"}`` where
``crop`` = (top, left, height, width) of the crop divided by the source
height/width, so the geometric action between two views can be computed later.

Clip datasets yield ``({"frames", "actions"?, "states"?}, label)``; every frame
of a clip gets the same crop and flip, ``image`` is then uint8 (T, 3, H, W) and
the actions and states travel beside it unchanged.
"""

from __future__ import annotations

import math
from typing import Any, Iterator

import torch
import torchvision.transforms.v2.functional as TF
from torch.utils.data import DataLoader, Dataset, Sampler

_MASK64 = (1 << 64) - 1
# Domain tags so the sampler's seeds never coincide with mix_seed(seed, a, b) used elsewhere.
_PERMUTATION, _DRAW = 0x7065726D, 0x64726177


def splitmix64(x: int) -> int:
    """SplitMix64 finaliser: a bijection on 64-bit ints that scrambles neighbouring seeds."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def mix_seed(*parts: int) -> int:
    """A 64-bit seed that is a pure function of ``parts`` (order matters)."""
    h = 0x5EED
    for p in parts:
        h = splitmix64(h ^ (int(p) & _MASK64))
    return h


def _unpack(item: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """A dataset item's pixels (an image, or a clip's uint8 frames) and what travels beside them."""
    if isinstance(item, dict):
        return item["frames"], {k: torch.as_tensor(item[k], dtype=torch.float32)
                                for k in ("actions", "states") if k in item}
    return to_uint8_image(item), {}


def to_uint8_image(image: Any) -> torch.Tensor:
    """PIL image or tensor -> uint8 (3, H, W); grey and RGBA inputs become RGB."""
    if not isinstance(image, torch.Tensor):
        if getattr(image, "mode", "RGB") != "RGB":
            image = image.convert("RGB")
        image = TF.pil_to_tensor(image)
    if image.dtype != torch.uint8:
        raise TypeError(f"dataset images must be uint8 tensors or PIL images, got a {image.dtype} tensor")
    if image.dim() == 2:
        image = image.unsqueeze(0)
    if image.shape[0] == 1:
        image = image.expand(3, -1, -1)
    elif image.shape[0] == 4:
        image = image[:3]
    return image.contiguous()


def sample_crop(
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator,
) -> tuple[int, int, int, int]:
    """RandomResizedCrop's box (top, left, h, w), drawn from ``generator``.

    Same algorithm as ``torchvision.transforms.RandomResizedCrop.get_params``
    (10 tries, then the largest centred crop of allowed ratio), which draws from
    the global RNG and so cannot be made worker-independent.
    """
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        u = torch.rand(4, generator=generator).tolist()
        target_area = area * (scale[0] + (scale[1] - scale[0]) * u[0])
        aspect = math.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * u[1])
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = min(int(u[2] * (height - h + 1)), height - h)
            left = min(int(u[3] * (width - w + 1)), width - w)
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def _view(image: torch.Tensor, label: Any, box: tuple[int, int, int, int], flip: bool, size: int,
          extras: dict[str, torch.Tensor]) -> dict:
    H, W = image.shape[-2:]
    top, left, h, w = box
    out = TF.resized_crop(image, top, left, h, w, [size, size], antialias=True)
    if flip:
        out = TF.horizontal_flip(out)
    return {
        "image": out.contiguous(),
        "label": int(label),
        "crop": torch.tensor([top / H, left / W, h / H, w / W], dtype=torch.float32),
        "flip": torch.tensor(bool(flip)),
        **extras,
    }


class CropFlip(Dataset):
    """Random resized crop + horizontal flip of a dataset, recording the geometry.

    Indexed by ``(index, draw_seed)`` so that the randomness travels with the
    index from the sampler instead of living in the worker process. The crop is
    drawn before the flip, so flip_p does not change which crop a seed gives.
    """

    def __init__(
        self,
        dataset: Dataset,
        image_size: int,
        crop_scale: tuple[float, float] = (0.3, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        flip_p: float = 0.5,
    ):
        self.dataset = dataset
        self.image_size = int(image_size)
        self.crop_scale = tuple(crop_scale)
        self.ratio = tuple(ratio)
        self.flip_p = float(flip_p)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]) -> dict:
        index, draw_seed = item
        item, label = self.dataset[index]
        image, extras = _unpack(item)
        g = torch.Generator().manual_seed(int(draw_seed))
        box = sample_crop(image.shape[-2], image.shape[-1], self.crop_scale, self.ratio, g)
        flip = torch.rand(1, generator=g).item() < self.flip_p
        return _view(image, label, box, flip, self.image_size, extras)


class CentreCrop(Dataset):
    """Deterministic evaluation view: shorter side resized to image_size, then centre-cropped.

    ``crop`` is reported as the full image (0, 0, 1, 1) and ``flip`` as False:
    the evaluation view is the reference (identity) view.
    """

    def __init__(self, dataset: Dataset, image_size: int):
        self.dataset = dataset
        self.image_size = int(image_size)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        item, label = self.dataset[index]
        image, extras = _unpack(item)
        image = TF.resize(image, [self.image_size], antialias=True)
        image = TF.center_crop(image, [self.image_size, self.image_size])
        return {
            "image": image.contiguous(),
            "label": int(label),
            "crop": torch.tensor([0.0, 0.0, 1.0, 1.0]),
            "flip": torch.tensor(False),
            **extras,
        }


class ResumableSampler(Sampler):
    """Infinite, sharded, resumable sample order yielding ``(index, draw_seed)``.

    Epoch e is a permutation that is a pure function of (seed, e); rank r takes
    every world_size-th entry of its first ``world_size * (n // world_size)``
    entries (disjoint across ranks), truncated to whole batches. So batches never
    straddle epochs and global step k is batch ``k % steps_per_epoch`` of epoch
    ``k // steps_per_epoch`` -- which is what makes ``set_position`` exact.
    The training loop stops the iteration; it never ends by itself.
    """

    def __init__(self, length: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        self.length = int(length)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        if self.steps_per_epoch < 1:
            per_rank = length // world_size
            raise ValueError(
                f"dataset of {length} samples is too small for batch_size {batch_size} "
                f"on {world_size} rank(s): no full batch per epoch; "
                + (f"use at most {per_rank}" if per_rank else "use more images than ranks")
            )
        self.start_step = 0

    @property
    def steps_per_epoch(self) -> int:
        """Full batches per rank per epoch (drop_last)."""
        return (self.length // self.world_size) // self.batch_size

    def set_position(self, step: int) -> None:
        """Start the next iteration at global optimizer step ``step``."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        self.start_step = int(step)

    def epoch_indices(self, epoch: int) -> torch.Tensor:
        """This rank's sample indices of ``epoch``, in order (whole batches only)."""
        g = torch.Generator().manual_seed(mix_seed(self.seed, _PERMUTATION, epoch))
        perm = torch.randperm(self.length, generator=g)
        mine = perm[self.rank : (self.length // self.world_size) * self.world_size : self.world_size]
        return mine[: self.steps_per_epoch * self.batch_size]

    def draw_seed(self, epoch: int, index: int) -> int:
        """Seed of every random draw sample ``index`` gets in ``epoch`` (crop, flip)."""
        return mix_seed(self.seed, _DRAW, epoch, index)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, batch = divmod(self.start_step, self.steps_per_epoch)
        skip = batch * self.batch_size
        while True:
            for index in self.epoch_indices(epoch)[skip:].tolist():
                yield index, self.draw_seed(epoch, index)
            epoch, skip = epoch + 1, 0


def build_loader(
    dataset: Dataset,
    *,
    image_size: int,
    batch_size: int,
    crop_scale: tuple[float, float],
    flip_p: float,
    seed: int,
    num_workers: int,
    rank: int = 0,
    world_size: int = 1,
    pin_memory: bool = False,
    start_step: int = 0,
) -> tuple[DataLoader, ResumableSampler]:
    """Infinite training loader of per-rank batches of :class:`CropFlip` views, from ``start_step``."""
    sampler = ResumableSampler(len(dataset), batch_size, seed, rank=rank, world_size=world_size)
    sampler.set_position(start_step)
    loader = DataLoader(
        CropFlip(dataset, image_size, crop_scale=crop_scale, flip_p=flip_p),
        batch_size=batch_size,
        sampler=sampler,
        drop_last=True,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
        # its own generator: the workers' base seed must not draw from the global RNG,
        # whose state the checkpoint restores (a resumed run would draw once more)
        generator=torch.Generator().manual_seed(mix_seed(seed, rank, _DRAW)),
    )
    return loader, sampler


def build_eval_loader(dataset: Dataset, *, image_size: int, batch_size: int, num_workers: int) -> DataLoader:
    """All samples in order, once, as deterministic centre crops (last batch may be short)."""
    return DataLoader(
        CentreCrop(dataset, image_size),
        batch_size=batch_size,
        shuffle=False,
        drop_last=False,
        num_workers=num_workers,
    )
