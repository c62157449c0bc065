"""The IWM source-view pipeline: batched transformations against torchvision per image.

Source view x of Image World Models: colour jitter (p 0.8; 0.4, 0.4, 0.2, 0.1),
grayscale (p 0.2), Gaussian blur (p 0.2), solarization (p 0.2). The reference
is what a data-loader worker does with ``torchvision.transforms.v2``: the same
ops composed and called image by image, each drawing its own parameters, so
each op runs only on the images that drew it. Both sides include parameter
sampling. The engine reaches the plugins through the plugin manager only.
"""

from __future__ import annotations

import statistics
import time

import torch

BATCH = 256
SIZE = 224
PIPELINE = ("color_jitter", "grayscale", "gaussian_blur", "solarize")


def _pipeline():
    from jepa_core.manager import get_registries

    create = get_registries().transformations.create
    return [create(name) for name in PIPELINE]


def _reference(ops):
    """The same ops, probabilities and ranges as torchvision v2 transforms."""
    from torchvision.transforms import v2

    jitter, gray, blur, sol = (op.config for op in ops)
    return v2.Compose(
        [
            v2.RandomApply(
                [v2.ColorJitter(jitter.brightness, jitter.contrast, jitter.saturation, jitter.hue)], p=jitter.p
            ),
            v2.RandomGrayscale(p=gray.p),
            v2.RandomApply([v2.GaussianBlur(blur.kernel_size, sigma=blur.sigma)], p=blur.p),
            v2.RandomSolarize(threshold=sol.threshold, p=sol.p),
        ]
    )


def _batched(ops, images: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    for op in ops:
        images = op.apply(images, op.sample(images.shape[0], g))
    return images


def _per_image(reference, images: torch.Tensor) -> torch.Tensor:
    return torch.stack([reference(img) for img in images])


def _best_s(fn, device: str, repeats: int) -> float:
    """Fastest of ``repeats`` timed calls after one warm-up (robust on a shared machine)."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return min(times) if repeats < 3 else statistics.median(sorted(times)[: (repeats + 1) // 2])


def run(device: str) -> list[dict]:
    ops = _pipeline()
    reference = _reference(ops)
    images = torch.rand(BATCH, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    name = f"IWM source pipeline {BATCH}x{SIZE}px"
    dev_images = images.to(device)
    with torch.random.fork_rng(devices=[]):  # the reference draws from the global RNG
        torch.manual_seed(0)
        batched = BATCH / _best_s(lambda: _batched(ops, dev_images, g), device, repeats=5)
        ref = BATCH / _best_s(lambda: _per_image(reference, dev_images), device, repeats=2)
        rows = [_row(name, batched, ref)]
        if torch.device(device).type != "cpu":
            cpu_ref = BATCH / _best_s(lambda: _per_image(reference, images), "cpu", repeats=2)
            rows.append(_row(f"{name}, {device} batch vs per-image CPU", batched, cpu_ref))
    return rows


def _row(name: str, value: float, reference: float) -> dict:
    return {
        "suite": "photometric",
        "name": name,
        "value": value,
        "unit": "img/s",
        "reference": reference,
        "ratio": value / reference,
    }
