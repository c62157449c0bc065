"""A natural-photo classification set in ImageNet layout, cut from photos on this machine.

``python -m jepa_core.photos OUT [--photos DIR]`` writes ``OUT/train/<photo>/*.png``
and ``OUT/val/<photo>/*.png``: square crops of each photo, the class being which
photo a crop comes from, for the ``imagefolder`` dataset (docs/evaluation.md,
"Natural photos"). Nothing is downloaded: the photos are a folder you give, or
by default the colour photographs that scikit-image ships inside its wheel
(``pip install scikit-image``, in the ``dev`` extra) and matplotlib's
``grace_hopper.jpg``.

Why the crops are cut this way:

- train and val crops come from disjoint parts of each photo (val from the last
  ``val_fraction`` of its longer side), so a val crop never overlaps a train
  crop and k-NN cannot match pixels;
- every crop gets a random permutation of its colour channels, so a photo's
  palette does not give its class away; what is left is content and texture.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from importlib import resources
from pathlib import Path

import torch
from PIL import Image

from jepa_core.errors import UserError, cli

#: the colour photographs in scikit-image's wheel (its grey and synthetic images are left out:
#: a grey photo would stay grey under the channel permutation and give its class away)
SKIMAGE_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "hubble_deep_field.jpg", "ihc.png",
                  "motorcycle_left.png", "retina.jpg", "rocket.jpg")
SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def shipped_photos() -> list[Path]:
    """The default photos: matplotlib's grace_hopper.jpg plus scikit-image's colour photos if installed."""
    import matplotlib

    found = [Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"]
    try:
        data = resources.files("skimage") / "data"
    except ModuleNotFoundError:
        return found
    return found + [Path(str(data / name)) for name in SKIMAGE_PHOTOS]


def photos_in(folder: str | Path) -> list[Path]:
    """The image files directly inside ``folder``, sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"--photos: {folder} is not a directory")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES)


def _regions(width: int, height: int, val_fraction: float) -> dict[str, tuple[int, int, int, int]]:
    """(left, top, right, bottom) of the train and val parts: val is the end of the longer side."""
    if width >= height:
        cut = round(width * (1 - val_fraction))
        return {"train": (0, 0, cut, height), "val": (cut, 0, width, height)}
    cut = round(height * (1 - val_fraction))
    return {"train": (0, 0, width, cut), "val": (0, cut, width, height)}


def crops(photo: Image.Image, region: tuple[int, int, int, int], count: int, size: int,
          scale: tuple[float, float], g: torch.Generator) -> list[Image.Image]:
    """``count`` random square crops of ``region``, side ``scale`` x the photo's short side, channels permuted."""
    left, top, right, bottom = region
    short = min(photo.size)
    out = []
    for u in torch.rand(count, 3, generator=g).tolist():
        side = min(round(short * (scale[0] + (scale[1] - scale[0]) * u[0])), right - left, bottom - top)
        x = left + int(u[1] * (right - left - side + 1))
        y = top + int(u[2] * (bottom - top - side + 1))
        crop = photo.crop((x, y, x + side, y + side)).resize((size, size), Image.Resampling.BICUBIC)
        channels = crop.split()
        out.append(Image.merge("RGB", [channels[i] for i in torch.randperm(3, generator=g).tolist()]))
    return out


def build(out: str | Path, photos: list[Path], *, train_per_class: int = 200, val_per_class: int = 50,
          size: int = 64, scale: tuple[float, float] = (0.15, 0.3), val_fraction: float = 0.3,
          seed: int = 0) -> dict[str, int]:
    """Write the set to ``out`` (which must not exist yet); returns images per split.

    It is written to ``out.partial`` and renamed at the end, so ``out`` is
    either complete or absent. The same arguments give the same files.
    """
    out = Path(out)
    if out.exists():
        raise UserError(f"{out} already exists; give a new directory (nothing is overwritten)")
    if len(photos) < 2:
        raise UserError(f"need at least 2 photos, got {len(photos)}; install scikit-image "
                          "(pip install scikit-image) or pass --photos DIR with your own")
    names = [p.stem for p in photos]
    shared = sorted({name for name in names if names.count(name) > 1})
    if shared:
        raise UserError(f"photos share a file name, which is their class name: {', '.join(shared)}; rename them")
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    counts = {"train": train_per_class, "val": val_per_class}
    for index, path in enumerate(photos):
        with Image.open(path) as image:
            photo = image.convert("RGB")
        for split, region in _regions(*photo.size, val_fraction).items():
            g = torch.Generator().manual_seed(seed * 1_000_003 + index * 2 + (split == "val"))
            folder = partial / split / path.stem
            folder.mkdir(parents=True)
            for i, crop in enumerate(crops(photo, region, counts[split], size, scale, g)):
                crop.save(folder / f"{path.stem}_{i:04d}.png")
    os.replace(partial, out)
    return {split: n * len(photos) for split, n in counts.items()}


@cli
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jepa_core.photos", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="directory to create (ImageNet layout: OUT/train, OUT/val)")
    parser.add_argument("--photos", metavar="DIR",
                        help="a folder of photos, one class each (default: the ones scikit-image and matplotlib ship)")
    parser.add_argument("--train-per-class", type=int, default=200, metavar="N", help="train crops per photo (200)")
    parser.add_argument("--val-per-class", type=int, default=50, metavar="N", help="val crops per photo (50)")
    parser.add_argument("--size", type=int, default=64, metavar="PX", help="crop side in pixels after resizing (64)")
    parser.add_argument("--seed", type=int, default=0, help="the crops' seed (0)")
    args = parser.parse_args(argv)
    for flag in ("train_per_class", "val_per_class", "size"):
        if getattr(args, flag) < 1:
            raise UserError(f"--{flag.replace('_', '-')}: must be a positive integer, got {getattr(args, flag)}")
    photos = photos_in(args.photos) if args.photos else shipped_photos()
    counts = build(args.out, photos, train_per_class=args.train_per_class, val_per_class=args.val_per_class,
                   size=args.size, seed=args.seed)
    print(f"wrote {args.out}: {len(photos)} classes, {counts['train']} train and {counts['val']} val crops "
          f"of {args.size} px")
    return 0


if __name__ == "__main__":
    sys.exit(main())
