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


#: a test-only plugin: after every optimizer step (on every rank, unlike the runtime
#: hooks, which run on rank 0 only) append a hash of all parameters to rank<R>.txt
CHECKSUM_PLUGIN = '''
import hashlib, os
import torch.distributed as dist
from torch.optim.optimizer import register_optimizer_step_post_hook

def _after_step(optimizer, args, kwargs):
    out = os.environ.get("JEPA_TEST_CHECKSUMS")
    if not out:
        return
    rank = dist.get_rank() if dist.is_initialized() else 0
    digest = hashlib.sha1()
    for group in optimizer.param_groups:
        for p in group["params"]:
            digest.update(p.detach().cpu().contiguous().numpy().tobytes())
    with open(os.path.join(out, f"rank{rank}.txt"), "a") as f:
        f.write(digest.hexdigest() + "\\n")

register_optimizer_step_post_hook(_after_step)
'''


@pytest.fixture
def checksum_plugin(write, tmp_path, monkeypatch):
    """(plugin file, folder its per-rank checksum files go to); the env var reaches children and jobs."""
    out = tmp_path / "checksums"
    out.mkdir()
    monkeypatch.setenv("JEPA_TEST_CHECKSUMS", str(out))
    return write("checksum_plugin.py", CHECKSUM_PLUGIN), out


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
