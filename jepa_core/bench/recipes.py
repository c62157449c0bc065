"""The train step at the papers' recipe shapes: each experiment file's model, masking and per-GPU batch.

The other suites time a ViT-Tiny step that a 2-core CPU can take; this one
times what a cluster job runs: by default I-JEPA ViT-H/14 (``experiments/ijepa.yaml``,
predictor 12x384), I-JEPA ViT-B/16 (``experiments/ijepa_vitb16.yaml``, predictor
6x384) and IWM-Inv ViT-B/16 (``experiments/iwm_inv.yaml``, predictor 12x384),
each at its per-GPU batch of 128 and its own ``train.precision`` (``auto``: bf16
on a GPU that has it). Random images replace the dataset; everything else is
the file's. Each file runs in a fresh process, so one model's memory never
counts in another's peak: CUDA's max allocated, or the process's ``VmHWM`` on
the CPU. MFU is the counted model FLOPs of each timed step over its time,
against the matmul peak of the precision the step ran in, measured in the
same run. Meant for ``--device cuda``: on a 2-core CPU a ViT-H/14 step at
batch 128 takes minutes (``--batch`` sets a smaller one).
"""

from __future__ import annotations

import json
import statistics
import tempfile
from pathlib import Path

import torch

from jepa_core.bench.flops import count_flops
from jepa_core.bench.memory import child_json, peak_rss_bytes
from jepa_core.bench.train_step import _timed, matmul_peak
from jepa_core.errors import UserError

DEFAULT_FILES = ("experiments/ijepa.yaml", "experiments/ijepa_vitb16.yaml", "experiments/iwm_inv.yaml")
WARMUP = 2
REPEATS = 6
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def step_figures(path: str, device: str, batch: int | None) -> dict:
    """Time ``REPEATS`` train steps of the experiment at ``path`` on random images (run in a child process)."""
    from jepa_core.config import load_config
    from jepa_core.experiment import build_experiment
    from jepa_core.train import Trainer

    loaded = load_config(path)
    data = loaded.config.data
    batch = batch or data.batch_size
    synthetic = json.dumps({"name": "shapes", "size": data.image_size, "train_size": 16, "val_size": 16})
    loaded = load_config(path, [f"data.dataset={synthetic}", f"data.batch_size={batch}", "data.num_workers=0",
                                f"train.device={device}"])
    exp = build_experiment(loaded)
    trainer = Trainer(exp, tempfile.mkdtemp(prefix="jepa-bench-"))
    shape = (batch, 3, data.image_size, data.image_size)
    images = torch.randint(0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0)).to(device)

    def step(index: int):
        return lambda: trainer.train_step(images, index, 1000, 1e-4, 0.04).item()

    for index in range(WARMUP):
        step(index)()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    indices = range(WARMUP, WARMUP + REPEATS)
    seconds = [_timed(step(index), device) for index in indices]
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else peak_rss_bytes()
    flops = [count_flops(step(index))[0] for index in indices]
    return {"name": f"{exp.config.name}: {exp.config.encoder.name}, predictor "
                    f"{exp.config.predictor.params.get('depth')}x{exp.config.predictor.params.get('width')}, "
                    f"batch {batch}, {trainer.precision.name}",
            "batch": batch, "precision": trainer.precision.name,
            "seconds": statistics.median(seconds), "peak_bytes": peak,
            "flops_per_s": statistics.median(f / t for f, t in zip(flops, seconds))}


CHILD = ("import json, sys; from jepa_core.bench.recipes import step_figures; "
         "print(json.dumps(step_figures(sys.argv[1], sys.argv[2], int(sys.argv[3]) or None)))")


def run(device: str, files: list[str] | None = None, batch: int | None = None) -> list[dict]:
    files = files or list(DEFAULT_FILES)
    for path in files:
        if not Path(path).is_file():
            raise UserError(f"--experiment {path}: no such file (the recipes suite times an experiment YAML; "
                            "run from the repository root or pass --experiment PATH)")
    figures = [child_json(CHILD, path, device, str(batch or 0)) for path in files]
    peaks = {name: matmul_peak(device, DTYPES[name], seconds=0.5) for name in {f["precision"] for f in figures}}
    rows = [{"suite": "recipes", "name": f"matmul peak {name} (best square size)", "value": peak / 1e9,
             "unit": "GFLOP/s"} for name, peak in sorted(peaks.items())]
    memory = "max allocated" if device == "cuda" else "peak RSS"
    for f in figures:
        rows += [
            {"suite": "recipes", "name": f["name"], "value": f["batch"] / f["seconds"], "unit": "img/s"},
            {"suite": "recipes", "name": f"  MFU ({f['flops_per_s'] / 1e12:.3g} TFLOP/s of the {f['precision']} peak)",
             "value": 100 * f["flops_per_s"] / peaks[f["precision"]], "unit": "%"},
            {"suite": "recipes", "name": f"  {memory}", "value": f["peak_bytes"] / 2**30, "unit": "GiB"},
        ]
    return rows
