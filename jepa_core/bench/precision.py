"""The precision story: the I-JEPA bench step in fp32 and bf16, each against its own peak.

For each precision: the best square matmul throughput (the peak) and the
I-JEPA bench recipe's step (ViT-Ti/16 at 224 px, predictor 6x384, batch 16),
the two steps taking turns, each index's faster run counting. MFU is the
counted model FLOPs per second over that precision's peak. A bf16 whose peak
is under a tenth of fp32's (an AVX2 CPU: hundreds of times slower) is not
stepped: one step would take minutes, and the row says so. The last row is
what ``train.precision: auto`` picks here, with the probe's figures.
"""

from __future__ import annotations

import functools
import statistics

import torch

from jepa_core.bench.flops import count_flops
from jepa_core.bench.train_step import BATCH, _images, matmul_peak, take_turns, trainer

REPEATS = 4
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}


def _steps(device: str, names: list[str]) -> dict[str, tuple[float, float]]:
    """(median seconds, median FLOP/s) per precision, the precisions taking turns."""
    trainers = {name: trainer("ijepa", device, precision=name) for name in names}
    images = _images(device)

    def step_of(name: str, step: int):
        return lambda: trainers[name].train_step(images, step, 1000, 1e-4, 0.04)

    _, seconds = take_turns({name: lambda step, name=name: step_of(name, step)() for name in names}, device, REPEATS)
    flops = [count_flops(step_of(names[0], step))[0] for step in range(1, REPEATS + 1)]
    return {name: (statistics.median(seconds[name]), statistics.median(f / t for f, t in zip(flops, seconds[name])))
            for name in names}


@functools.lru_cache(maxsize=None)
def measured(device: str) -> tuple[dict[str, float], dict[str, tuple[float, float]]]:
    """(peak FLOP/s per precision, (median seconds, median FLOP/s) per stepped precision).

    Cached: the data-loading suite compares against the fastest of these steps.
    """
    peaks = {name: matmul_peak(device, dtype, seconds=0.5) for name, dtype in PRECISIONS.items()}
    return peaks, _steps(device, [name for name in PRECISIONS if peaks[name] >= peaks["fp32"] / 10])


def run(device: str) -> list[dict]:
    peaks, figures = measured(device)
    rows = [{"suite": "precision", "name": f"matmul peak {name} (best square size)", "value": p / 1e9,
             "unit": "GFLOP/s"} for name, p in peaks.items()]
    for name in PRECISIONS:
        if name not in figures:
            rows.append({"suite": "precision", "name": f"ijepa step {name}: not run (peak under a tenth of fp32's)",
                         "value": peaks[name] / peaks["fp32"], "unit": "x fp32 peak"})
            continue
        seconds, rate = figures[name]
        fp32_seconds = figures["fp32"][0]
        rows += [
            {"suite": "precision", "name": f"ijepa ViT-Ti/16 224px batch {BATCH}, {name}", "value": BATCH / seconds,
             "unit": "img/s", "reference": BATCH / fp32_seconds, "ratio": fp32_seconds / seconds},
            {"suite": "precision", "name": f"ijepa {name} MFU ({rate / 1e9:.1f} GFLOP/s of the {name} peak)",
             "value": 100 * rate / peaks[name], "unit": "%"},
        ]
    choice = trainer("ijepa", device, precision="auto").precision
    rows.append({"suite": "precision", "name": f"train.precision auto picks {choice.name} ({choice.reason})",
                 "value": (choice.bf16_gflops or 0) / (choice.fp32_gflops or 1) if device == "cpu" else 1.0,
                 "unit": "x (bf16/fp32 probe)"})
    return rows
