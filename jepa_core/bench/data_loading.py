"""Data loading from an image folder of JPEGs, with the training crops and flips.

The benchmark writes its own folder (shapes rendered at 256 px, saved as JPEG),
then reads it through the training loader with the default worker count
(``data.num_workers``) and reports images/s overall and per worker, beside
the images/s the fastest I-JEPA train step consumes at the benchmark
configuration (bf16 where the CPU has fast bf16: the precision suite's steps).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path


from jepa_core.bench import precision
from jepa_core.bench.train_step import BATCH, SIZE
from jepa_core.schema import DataConfig

N_IMAGES = 512


def write_folder(root: Path, n: int = N_IMAGES) -> Path:
    """An ImageNet-layout folder (train/<class>/*.JPEG) of rendered shapes."""
    from torchvision.io import write_jpeg

    from jepa_core.manager import get_registries

    shapes = get_registries().datasets.create("shapes", "train", size=256, train_size=n)
    for i in range(n):
        image, label = shapes[i]
        folder = root / "train" / f"class_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        write_jpeg(image, str(folder / f"{i:05d}.JPEG"), quality=90)
    return root


def loader_images_per_s(root: Path, workers: int, batches: int = 24) -> float:
    from jepa_core.data import build_loader
    from jepa_core.manager import get_registries

    dataset = get_registries().datasets.create("imagefolder", "train", root=str(root))
    loader, _ = build_loader(dataset, image_size=SIZE, batch_size=BATCH, crop_scale=(0.3, 1.0), flip_p=0.5,
                             seed=0, num_workers=workers)
    it = iter(loader)
    next(it)  # workers started
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * BATCH / (time.perf_counter() - start)


def run(device: str) -> list[dict]:
    workers = DataConfig().num_workers
    with tempfile.TemporaryDirectory(prefix="jepa-bench-jpeg-") as tmp:
        root = write_folder(Path(tmp))
        loaded = loader_images_per_s(root, workers)
    steps = precision.measured(device)[1]
    fastest = min(steps, key=lambda name: steps[name][0])
    consumed = BATCH / steps[fastest][0]
    return [
        {"suite": "data_loading", "name": f"JPEG folder -> {SIZE}px crops, {workers} workers, against the {fastest} step",
         "value": loaded, "unit": "img/s", "reference": consumed, "ratio": loaded / consumed,
         "target": ">= 2x the fastest train step"},
        {"suite": "data_loading", "name": "per worker", "value": loaded / max(workers, 1), "unit": "img/s"},
    ]
