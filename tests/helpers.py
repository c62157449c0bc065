"""Small helpers the tests share (fixtures live in conftest.py)."""

from __future__ import annotations

import json
import pickle
import re
import struct
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def checksums(folder: Path, rank: int) -> list[str]:
    """The parameter hashes conftest.CHECKSUM_PLUGIN wrote for ``rank``, one a step."""
    path = Path(folder) / f"rank{rank}.txt"
    return path.read_text().split() if path.exists() else []


def saved_files(page: Path) -> dict[str, str]:
    """Each "Save as `FILE`" of a docs page, in order, with the code block that follows it."""
    return dict(re.findall(r"Save as `([^`]+)`.*?```\w*\n(.*?)```", page.read_text(), re.S))


# --------------------------------------------------------------------------- numerical comparisons
#
# For results that two computations reach in different orders (another batch split, another
# process count, another kernel or implementation); see tests/README.md, "Exact versus numerical
# comparisons". Results that are bitwise equal by design are compared with torch.equal instead.

#: one process with the whole batch against several with a share each (tests/test_baselines.py,
#: tests/test_distributed.py): the same sums in another order. Gradients and BatchNorm statistics
#: are judged at the scale of their module; the worst seen is 7e-6 of it (an encoder's final-norm
#: bias feeding a BatchNorm projector, true gradient zero), with AVX-512 and with AVX2 kernels.
#: A real mismatch (no all-reduce, a sum for a mean) is a large fraction of the scale.
DDP_RTOL = 1e-4


def assert_close_scaled(actual, expected, rtol: float, name: str, scale: float = 0.0) -> None:
    """Assert ``max |actual - expected| <= rtol * max(max |expected|, scale)``.

    Float round-off is relative to the magnitude of what was summed, not to each
    element: an entry that cancels to nearly zero (a bias right before a BatchNorm,
    whose true gradient is zero) carries the round-off of the large terms it was
    summed from. So every entry gets the same room, ``rtol`` times the tensor's
    largest entry, or ``scale`` when ``expected`` itself may be pure round-off
    (for gradients: the largest entry of the whole module's gradient, as
    ``assert_all_close_scaled`` passes). Take ``scale`` from the reference, never
    from ``actual``, so a wrong result cannot widen its own tolerance.
    """
    actual, expected = torch.as_tensor(actual).detach(), torch.as_tensor(expected).detach()
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)}, expected {tuple(expected.shape)}"
    assert torch.isfinite(actual).all(), f"{name}: non-finite values in the result"
    a, e = actual.cpu().double(), expected.cpu().double()
    largest = e.abs().max().item() if e.numel() else 0.0
    reference = max(largest, scale)
    diff = (a - e).abs()
    worst = diff.max().item() if diff.numel() else 0.0
    if worst <= rtol * reference:
        return
    flat = int(diff.argmax())
    where = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), diff.shape))
    raise AssertionError(
        f"{name}: max |actual - expected| = {worst:.3g} at {where} (actual {a.flatten()[flat].item():.7g}, "
        f"expected {e.flatten()[flat].item():.7g}) exceeds rtol {rtol:g} x {reference:.3g} = {rtol * reference:.3g}; "
        f"it is {worst / reference:.3g} of the scale (max |expected| {largest:.3g}, reference scale {scale:.3g})")


def module_scales(tensors: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Largest |entry| over each top-level module's tensors ("encoder.vit.norm.bias" counts for "encoder")."""
    scales: dict[str, float] = {}
    for key, value in tensors.items():
        module = key.split(".")[0]
        scales[module] = max(scales.get(module, 0.0), value.detach().abs().max().item() if value.numel() else 0.0)
    return scales


def assert_all_close_scaled(actual: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor],
                            rtol: float, what: str) -> None:
    """The same keys, and each tensor close to the reference's at the scale of its module (``module_scales``).

    For gradients and BatchNorm statistics of a model: a tensor whose true value is
    zero is judged against the module's largest gradient (statistic), not against
    its own round-off.
    """
    assert set(actual) == set(expected), f"{what}: keys differ: {sorted(set(actual) ^ set(expected))}"
    scales = module_scales(expected)
    for key, value in expected.items():
        assert_close_scaled(actual[key], value, rtol, f"{what} {key}", scale=scales[key.split(".")[0]])


# --------------------------------------------------------------------------- tiny dataset roots
#
# The real torchvision loaders run on these files; only torchvision's md5 check (which no
# fake file can pass) is skipped with verify_md5: false.


def fake_imagefolder(root: Path, classes=("cat", "dog"), splits=("train", "val")) -> None:
    """root/<split>/<class>/: two RGB PNGs of different sizes and a grey JPEG per class."""
    for split in splits:
        for c, name in enumerate(classes):
            d = root / split / name
            d.mkdir(parents=True)
            for k in range(2):
                Image.new("RGB", (20 + k, 16), (40 * c, 100, 7 * k)).save(d / f"{k}.png")
            Image.new("L", (12, 12), 128).save(d / "grey.JPEG")


def fake_videofolder(root: Path, classes=("walk", "wave"), splits=("train", "val"), frames: int = 5) -> None:
    """root/<split>/<class>/<video>/: two videos per class as folders of ``frames`` 16x16 PNG frames."""
    for split in splits:
        for c, name in enumerate(classes):
            for v in range(2):
                d = root / split / name / f"video{v}"
                d.mkdir(parents=True)
                for t in range(frames):
                    Image.new("RGB", (16, 16), (40 * c, 20 * t, 60 * v)).save(d / f"{t:04d}.png")


def _pickle(path: Path, obj) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def fake_cifar10(root: Path, n: int = 4) -> dict:
    """root/cifar-10-batches-py with ``n`` random images per batch; returns {batch: (data, labels)}."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (n, 3 * 32 * 32), dtype=np.uint8)
        labels = list(rng.integers(0, 10, n))
        _pickle(folder / name, {"data": data, "labels": [int(x) for x in labels]})
        batches[name] = (data, labels)
    _pickle(folder / "batches.meta", {"label_names": [f"c{i}" for i in range(10)]})
    return batches


def fake_cifar100(root: Path) -> None:
    """root/cifar-100-python: 5 train and 3 test images of constant grey, fine labels 0, 1, ..."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for name, n in (("train", 5), ("test", 3)):
        data = np.full((n, 3072), 7, dtype=np.uint8)
        _pickle(folder / name, {"data": data, "fine_labels": list(range(n)), "coarse_labels": [0] * n})
    _pickle(folder / "meta", {"fine_label_names": [f"f{i}" for i in range(100)]})


def fake_stl10(root: Path) -> dict:
    """root/stl10_binary: 3 train and 2 test images, labels 1, 2, ... on disk; returns {split: (N, C, row, col)}."""
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    images = {}
    for split, n in (("train", 3), ("test", 2)):
        imgs = rng.integers(0, 256, (n, 3, 96, 96), dtype=np.uint8)
        # STL-10 stores each channel column-major, i.e. as (N, C, col, row) in C order.
        imgs.transpose(0, 1, 3, 2).tofile(folder / f"{split}_X.bin")
        np.arange(1, n + 1, dtype=np.uint8).tofile(folder / f"{split}_y.bin")  # 1-based on disk
        images[split] = imgs
    return images


# --------------------------------------------------------------------------- tracker files


def tensorboard_events(logdir: Path):
    """A loaded EventAccumulator of ``logdir`` (every scalar, image and tensor kept)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


def wandb_offline_env(root: Path) -> dict[str, str]:
    """Environment for a quiet W&B offline run whose files stay under ``root``."""
    return {"WANDB_SILENT": "true", "WANDB_CONSOLE": "off", "WANDB_DISABLE_GIT": "true",
            "WANDB_X_DISABLE_STATS": "true", "WANDB_X_DISABLE_META": "true",
            "WANDB_CONFIG_DIR": str(root / "wandb-config"), "WANDB_CACHE_DIR": str(root / "wandb-cache"),
            "WANDB_DATA_DIR": str(root / "wandb-data")}


def _wandb_records(path: Path):
    """The records of a W&B offline run file (a LevelDB-style log of wandb_internal_pb2.Record)."""
    from wandb.proto import wandb_internal_pb2

    data, pos, block, pending = path.read_bytes(), 7, 32768, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last fragment of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def wandb_attempt(offline_dir: Path) -> dict:
    """One launch's W&B offline directory: its run record, history rows by step and summary."""
    (run_file,) = offline_dir.glob("run-*.wandb")
    out = {"run": None, "history": {}, "summary": {}}
    for record in _wandb_records(run_file):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out["run"] = record.run
        elif kind == "history":
            items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
            out["history"][items["_step"]] = items
        elif kind == "summary":
            out["summary"].update({i.key or "/".join(i.nested_key): i.value_json for i in record.summary.update})
    return out
