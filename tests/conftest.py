"""Shared fixtures: a tiny experiment that trains in seconds on the CPU."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]

TINY = {
    "name": "tiny",
    "data": {
        "dataset": {"name": "shapes", "size": 48, "train_size": 256, "val_size": 64},
        "image_size": 48, "batch_size": 16, "num_workers": 0, "crop_scale": [0.5, 1.0],
    },
    "encoder": {"name": "vit_tiny_patch16_224", "patch_size": 8, "depth": 2},
    "views": {"masking": {"name": "multiblock", "min_keep": 4}},
    "predictor": {"name": "vit", "depth": 1, "width": 64, "heads": 2},
    "target": {"name": "ema", "momentum": [0.99, 1.0]},
    "optim": {"lr": 1.0e-3, "start_lr": 1.0e-4, "warmup_steps": 5},
    "train": {"steps": 30, "log_every": 1, "checkpoint_every": 10},
    # a check costs about as much as a tiny step: every 10th, not every logged step
    "health": {"every": 10},
}


@pytest.fixture
def tiny_config(tmp_path) -> Path:
    """A tiny I-JEPA config file (48 px, 6x6 patches, 2-layer encoder)."""
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY, sort_keys=False))
    return path


@pytest.fixture
def tiny_clip_config(tmp_path) -> Path:
    """A tiny clip run's config file: ac_vit on 3-frame moving_shapes clips, frozen encoder."""
    from jepa_core.testing.runs import TINY_CLIP_RUN

    path = tmp_path / "tiny_clip.yaml"
    path.write_text(yaml.safe_dump(TINY_CLIP_RUN, sort_keys=False))
    return path


@pytest.fixture
def write(tmp_path):
    """write("name.yaml", text) -> path, with the text dedented."""

    def _write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        return path

    return _write


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of tiny tensors: on a shared 2-core machine two OpenMP
    threads made MKL's eigh of a 192 x 192 matrix take 1.9 s instead of 2 ms."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
