"""Train-step throughput and model FLOPs utilisation (MFU) for the I-JEPA and IWM recipes.

Small configuration: ViT-Tiny/16 at 224 px, predictor depth 6 (width 384),
4 target blocks, 16 images per step. MFU = counted model FLOPs per second
(``jepa_core.bench.flops`` over each timed step: forward and backward of the
trained modules, forward of the target encoder, attention included; the median
over the steps) divided by the same device's matmul peak measured in the same
run (fp32 on CPU, bf16 on CUDA).
The predictor has the encoder's 3 heads, as the official I-JEPA builder gives it.
"""

from __future__ import annotations

import statistics
import tempfile
import time

import torch

from jepa_core.bench.flops import count_flops

BATCH = 16
REPEATS = 8  # timed steps per figure
SIZE = 224
COMMON = {
    "data": {"dataset": {"name": "shapes", "size": SIZE, "train_size": 64, "val_size": 16},
             "image_size": SIZE, "batch_size": BATCH, "num_workers": 0},
    "encoder": {"name": "vit_tiny_patch16_224"},
    "views": {"masking": {"name": "multiblock", "n_targets": 4}},
    "predictor": {"name": "vit", "depth": 6, "width": 384, "heads": 3},
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


def matmul_peak(device: str, dtype: torch.dtype | None = None, seconds: float = 1.0) -> float:
    """Measured matmul FLOP/s in ``dtype`` (default: fp32 on CPU, bf16 on CUDA): the best of square sizes.

    The best size differs by device and cache (on a 2-core EPYC, 512 reaches about
    207 GFLOP/s and 2048 185-200), so every size is tried for ``seconds`` and the
    fastest counts: a peak picked at one size would flatter MFU by the difference.
    A size whose one call takes longer than ``seconds`` ends the search (bf16 on
    an AVX2 CPU: about 0.4 s at 512, 25 s at 2048).
    """
    dtype = dtype or (torch.bfloat16 if device == "cuda" else torch.float32)
    sizes = (2048, 4096, 8192) if device == "cuda" else (512, 1024, 2048)
    best = 0.0
    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            took = _timed(lambda: a @ b, device)
            best = max(best, 2 * n**3 / took)
            if took > seconds:
                return best
    return best


def take_turns(steps: dict, device: str, repeats: int) -> tuple[dict, dict]:
    """Time ``steps[key](index)`` for every key, the keys taking turns.

    Index 0 runs once per key (its time is the first step's, which warms up);
    then each index 1..``repeats`` runs twice per key and its faster time
    counts, so slow spells of a shared machine fall on every key alike.
    Returns (first-step seconds, per-index seconds) by key.
    """
    first = {key: _timed(lambda: fn(0), device) for key, fn in steps.items()}
    seconds: dict = {key: [] for key in steps}
    for index in range(1, repeats + 1):
        runs = [{key: _timed(lambda: fn(index), device) for key, fn in steps.items()} for _ in range(2)]
        for key in steps:
            seconds[key].append(min(run[key] for run in runs))
    return first, seconds


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def trainer(recipe: str, device: str, **train: object):
    """A Trainer of a benchmark recipe in a scratch directory; ``train`` overrides train keys."""
    from jepa_core.experiment import build_experiment
    from jepa_core.train import Trainer

    exp = build_experiment(recipe_config(recipe, device, **train))
    return Trainer(exp, tempfile.mkdtemp(prefix="jepa-bench-"))


def _images(device: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (BATCH, 3, SIZE, SIZE), dtype=torch.uint8, generator=g).to(device)


def _timed(fn, device: str) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def step_figures(device: str) -> dict[str, dict[str, dict[str, float]]]:
    """Per recipe and mode ("eager", and "compiled" for ``train.compile: true``):
    median seconds and median FLOP/s over ``REPEATS`` step indices, and the first
    step's seconds.

    Each step index runs twice on every (recipe, mode), all four taking turns,
    and its faster time counts: the peak is the fastest matmul, so on a shared
    machine both sides of MFU are best cases, and slow spells fall on recipes
    and modes alike. A step's masks are a function of its index, so its FLOPs
    change from step to step: each index is replayed under the FLOP counter
    afterwards (eager; the compiled step runs the same model) and set against
    its own time.
    """
    modes = {"eager": False, "compiled": True}
    precision = "bf16" if device == "cuda" else "fp32"  # the peak's precision (the precision suite has both)
    trainers = {(recipe, mode): trainer(recipe, device, compile=compiled, precision=precision)
                for recipe in RECIPES for mode, compiled in modes.items()}
    images = _images(device)
    steps = range(1, REPEATS + 1)

    def step_of(key: tuple[str, str], step: int):
        return lambda: trainers[key].train_step(images, step, 1000, 1e-4, 0.04)

    first, seconds = take_turns({key: lambda step, key=key: step_of(key, step)() for key in trainers}, device, REPEATS)
    figures: dict[str, dict[str, dict[str, float]]] = {recipe: {} for recipe in RECIPES}
    for recipe in RECIPES:
        flops = [count_flops(step_of((recipe, "eager"), step))[0] for step in steps]
        for mode in modes:
            times = seconds[recipe, mode]
            figures[recipe][mode] = {
                "seconds": statistics.median(times), "first_step": first[recipe, mode],
                "flops": statistics.mean(flops), "flop_rate": statistics.median(f / t for f, t in zip(flops, times)),
            }
    return figures


def run(device: str) -> list[dict]:
    peak = matmul_peak(device)
    rows = [{"suite": "train_step", "name": f"matmul peak ({'bf16' if device == 'cuda' else 'fp32'}, best square size)",
             "value": peak / 1e9, "unit": "GFLOP/s"}]
    for recipe, figures in step_figures(device).items():
        eager, compiled = figures["eager"], figures["compiled"]
        rows += [
            {"suite": "train_step", "name": f"{recipe} ViT-Ti/16 224px pred 6x384 (3 heads), batch {BATCH}",
             "value": BATCH / eager["seconds"], "unit": "img/s"},
            {"suite": "train_step", "name": f"{recipe} counted model FLOPs per step (mean)",
             "value": eager["flops"] / 1e9, "unit": "GFLOP"},
            _mfu_row(recipe, eager, peak),
            {"suite": "train_step", "name": f"{recipe} compiled, img/s (first step {compiled['first_step']:.0f} s)",
             "value": BATCH / compiled["seconds"], "unit": "img/s", "reference": BATCH / eager["seconds"],
             "ratio": eager["seconds"] / compiled["seconds"]},
            _mfu_row(f"{recipe} compiled", compiled, peak),
        ]
    return rows


def _mfu_row(label: str, fig: dict[str, float], peak: float) -> dict:
    achieved = fig["flop_rate"]
    return {"suite": "train_step", "name": f"{label} MFU ({achieved / 1e9:.1f} GFLOP/s of the peak)",
            "value": 100 * achieved / peak, "unit": "%", "target": ">= 75% on CPU"}
