"""The IWM source-view pipeline: batched transformations against torchvision per image.

Source view x of Image World Models: colour jitter (p 0.8; 0.4, 0.4, 0.2, 0.1),
grayscale (p 0.2), Gaussian blur (p 0.2), solarization (p 0.2). The reference
is what a data-loader worker does with ``torchvision.transforms.v2``: the same
ops composed and called image by image, each drawing its own parameters, so
each op runs only on the images that drew it. Both sides include parameter
sampling. The engine reaches the plugins through the plugin manager only.
"""

from __future__ import annotations

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


def _best_rates(fns: dict, device: str, rounds: int = 8) -> dict:
    """Images/s of each fn: fastest of ``rounds`` after a warm-up, the fns interleaved
    so a shared machine's load drifts over all of them alike."""
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    best = {}
    for r in range(rounds + 1):
        for key, fn in fns.items():
            sync()
            start = time.perf_counter()
            fn()
            sync()
            if r:  # round 0 warms up
                best[key] = min(best.get(key, float("inf")), time.perf_counter() - start)
    return {key: BATCH / seconds for key, seconds in best.items()}


def run(device: str) -> list[dict]:
    ops = _pipeline()
    reference = _reference(ops)
    images = torch.rand(BATCH, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    dev_images = images.to(device)
    g = torch.Generator().manual_seed(0)
    fns = {"batched": lambda: _batched(ops, dev_images, g), "reference": lambda: _per_image(reference, dev_images)}
    on_cpu = torch.device(device).type == "cpu"
    if not on_cpu:
        fns["cpu reference"] = lambda: _per_image(reference, images)
    with torch.random.fork_rng(devices=[]):  # the reference draws from the global RNG
        torch.manual_seed(0)
        rates = _best_rates(fns, device)
    name = f"IWM source pipeline {BATCH}x{SIZE}px"
    rows = [_row(f"{name}" if on_cpu else f"{name} on {device}", rates["batched"], rates["reference"])]
    if not on_cpu:
        rows.append(_row(f"{name}, batched on {device} vs per-image on CPU", rates["batched"], rates["cpu reference"]))
    return rows


def _row(name: str, value: float, reference: float) -> dict:
    return {
        "suite": "photometric",
        "name": name,
        "value": value,
        "unit": "img/s",
        "reference": reference,
        "ratio": value / reference,
        "target": ">= 3x on CPU",
    }
