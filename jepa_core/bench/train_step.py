"""Train-step throughput and model FLOPs utilisation (MFU) for the I-JEPA and IWM recipes.

Small configuration: ViT-Tiny/16 at 224 px, predictor depth 6 (width 384),
4 target blocks, 16 images per step. MFU = counted model FLOPs per second
(``torch.utils.flop_counter`` over one step: forward and backward of the
trained modules, forward of the target encoder) divided by the same device's
matmul peak measured in the same run (fp32 on CPU, bf16 on CUDA).
"""

from __future__ import annotations

import functools
import statistics
import tempfile
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

BATCH = 16
SIZE = 224
COMMON = {
    "data": {"dataset": {"name": "shapes", "size": SIZE, "train_size": 64, "val_size": 16},
             "image_size": SIZE, "batch_size": BATCH, "num_workers": 0},
    "encoder": {"name": "vit_tiny_patch16_224"},
    "views": {"masking": {"name": "multiblock", "n_targets": 4}},
    "predictor": {"name": "vit", "depth": 6, "width": 384, "heads": 12},
    "train": {"steps": 1000},
}
JITTER = {"name": "color_jitter", "p": 0.8}
RECIPES = {
    "ijepa": {"conditioning": "none", "target": {"name": "ema", "loss": "smooth_l1"}},
    "iwm": {"conditioning": "feature", "target": {"name": "ema", "loss": "l2"},
            "views": {"target": [JITTER], "source": [JITTER, {"name": "grayscale"}, {"name": "gaussian_blur"},
                                                     {"name": "solarize"}]}},
}


def recipe_config(recipe: str, device: str, **train: object):
    """The validated config of a benchmark recipe."""
    from jepa_core.config import merge, resolve

    data = merge(COMMON, RECIPES[recipe])
    data = merge(data, {"train": {"device": device, **train}})
    return resolve(data, {}, f"<bench {recipe}>")


def matmul_peak(device: str, seconds: float = 2.0) -> float:
    """Measured matmul FLOP/s: fp32 on CPU, bf16 on CUDA."""
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    n = 8192 if device == "cuda" else 2048
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        _sync(device)
        start = time.perf_counter()
        a @ b
        _sync(device)
        best = max(best, 2 * n**3 / (time.perf_counter() - start))
    return best


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _trainer(recipe: str, device: str, compile: bool = False):
    from jepa_core.experiment import build_experiment
    from jepa_core.train import Trainer

    exp = build_experiment(recipe_config(recipe, device, compile=compile))
    return Trainer(exp, tempfile.mkdtemp(prefix="jepa-bench-"))


def _images(device: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (BATCH, 3, SIZE, SIZE), dtype=torch.uint8, generator=g).to(device)


@functools.lru_cache(maxsize=None)
def step_figures(recipe: str, device: str, compile: bool = False, repeats: int = 5) -> dict[str, float]:
    """Seconds per step (median after warm-up), counted FLOPs per step, seconds of the first step.

    Cached: the data-loading suite compares against the same measurement in one bench run.
    The FLOPs are counted on the eager step (the compiled step runs the same model).
    """
    trainer = _trainer(recipe, device, compile)
    images = _images(device)
    start = time.perf_counter()
    if compile:
        trainer.train_step(images, 0, 1000, 1e-4, 0.04)
        flops = step_figures(recipe, device)["flops"]
    else:
        with FlopCounterMode(display=False) as counter:
            trainer.train_step(images, 0, 1000, 1e-4, 0.04)
        flops = counter.get_total_flops()
    _sync(device)
    first = time.perf_counter() - start
    times = []
    for step in range(1, repeats + 2):
        _sync(device)
        start = time.perf_counter()
        loss = trainer.train_step(images, step, 1000, 1e-4, 0.04)
        _sync(device)
        times.append(time.perf_counter() - start)
    loss.item()
    return {"seconds": statistics.median(times[1:]), "flops": float(flops), "first_step": first}


def run(device: str) -> list[dict]:
    peak = matmul_peak(device)
    rows = [{"suite": "train_step", "name": f"matmul peak ({'bf16' if device == 'cuda' else 'fp32'})",
             "value": peak / 1e9, "unit": "GFLOP/s"}]
    for recipe in RECIPES:
        fig = step_figures(recipe, device)
        rows += [
            {"suite": "train_step", "name": f"{recipe} ViT-Ti/16 224px pred 6x384, batch {BATCH}",
             "value": BATCH / fig["seconds"], "unit": "img/s"},
            {"suite": "train_step", "name": f"{recipe} counted model FLOPs per step",
             "value": fig["flops"] / 1e9, "unit": "GFLOP"},
            _mfu_row(recipe, fig, peak),
        ]
    for recipe in RECIPES:  # train.compile: true, against the eager step above
        eager, fig = step_figures(recipe, device), step_figures(recipe, device, compile=True)
        rows += [
            {"suite": "train_step", "name": f"{recipe} compiled, img/s (first step {fig['first_step']:.0f} s)",
             "value": BATCH / fig["seconds"], "unit": "img/s", "reference": BATCH / eager["seconds"],
             "ratio": eager["seconds"] / fig["seconds"]},
            _mfu_row(f"{recipe} compiled", fig, peak),
        ]
    return rows


def _mfu_row(label: str, fig: dict[str, float], peak: float) -> dict:
    achieved = fig["flops"] / fig["seconds"]
    return {"suite": "train_step", "name": f"{label} MFU ({achieved / 1e9:.1f} GFLOP/s of the peak)",
            "value": 100 * achieved / peak, "unit": "%", "target": ">= 75% on CPU"}
