"""What the training-health monitors cost: one check against the log_every steps it covers.

For the CPU quickstart and the I-JEPA bench recipe: the check (RankMe and
feature spread of the held-out batch, the predictor-target cosine) and the
train step take turns, each the fastest of ``REPEATS``; the overhead is the
check's time over the time of the steps between two checks (``health.every``,
or ``train.log_every`` when that is null).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from jepa_core.bench.train_step import _timed, recipe_config

REPEATS = 5
QUICKSTART = Path(__file__).resolve().parents[2] / "experiments" / "quickstart.yaml"


def _configs(device: str) -> dict[str, object]:
    from jepa_core.config import load_config

    configs = {"I-JEPA bench recipe (224 px, batch 16)": recipe_config("ijepa", device)}
    if QUICKSTART.is_file():  # a source checkout
        configs["quickstart (64 px, batch 32)"] = load_config(
            QUICKSTART, [f"train.device={device}", "data.num_workers=0"])
    return configs


def overhead(loaded, device: str) -> tuple[float, float, int]:
    """(seconds per check, seconds per step, steps between checks) for a validated config."""
    from jepa_core.experiment import build_experiment
    from jepa_core.train import Trainer

    exp = build_experiment(loaded)
    trainer = Trainer(exp, tempfile.mkdtemp(prefix="jepa-bench-"))
    cfg = exp.config.data
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (cfg.batch_size, 3, cfg.image_size, cfg.image_size),
                           dtype=torch.uint8, generator=g).to(device)
    check, step = [], []
    for i in range(REPEATS + 1):
        step.append(_timed(lambda: trainer.train_step(images, i, 1000, 1e-4, 0.04), device))
        check.append(_timed(lambda: trainer._check_health(i), device))
    return min(check[1:]), min(step[1:]), trainer.health_every


def run(device: str) -> list[dict]:
    rows = []
    for name, loaded in _configs(device).items():
        check, step, every = overhead(loaded, device)
        rows.append({"suite": "health", "name": f"{name}: check every {every} steps ({check * 1e3:.0f} ms "
                                                f"against {step * 1e3:.0f} ms a step)",
                     "value": 100 * check / (every * step), "unit": "%", "target": "< 3% of training"})
    return rows
