"""Loader side: recorded crops and flips, and a sample order that resumes exactly."""

from __future__ import annotations

import itertools

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image

from jepa_core.data import CropFlip, ResumableSampler, build_eval_loader, build_loader, mix_seed
from jepa_core.plugins.data import Shapes


@pytest.fixture(scope="module")
def shapes():
    return Shapes(Shapes.Config(size=48, train_size=40, val_size=10), "train")


class _Rect(torch.utils.data.Dataset):
    """Non-square PIL images (some grey) to exercise conversion and crop geometry."""

    def __len__(self):
        return 6

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        arr = torch.randint(0, 256, (30, 50, 3), generator=g, dtype=torch.uint8).numpy()
        img = Image.fromarray(arr)
        return (img.convert("L") if i % 2 else img), i


def test_cropflip_output_and_determinism(shapes):
    view = CropFlip(shapes, 32, crop_scale=(0.2, 1.0), flip_p=0.5)
    out = view[(3, 1234)]
    assert out["image"].shape == (3, 32, 32) and out["image"].dtype == torch.uint8
    assert out["label"] == shapes[3][1]
    assert out["crop"].dtype == torch.float32 and out["crop"].shape == (4,) and out["flip"].dtype == torch.bool
    again = view[(3, 1234)]
    assert all(torch.equal(out[k], again[k]) for k in ("image", "crop", "flip"))
    other = view[(3, 99)]
    assert not torch.equal(out["crop"], other["crop"])
    flips = [bool(view[(0, s)]["flip"]) for s in range(40)]
    assert 5 < sum(flips) < 35


def test_cropflip_records_the_geometry():
    ds = _Rect()
    plain, flipped = CropFlip(ds, 24, flip_p=0.0), CropFlip(ds, 24, flip_p=1.0)
    for i in range(len(ds)):
        a, b = plain[(i, 7 + i)], flipped[(i, 7 + i)]
        assert a["image"].shape == (3, 24, 24) and a["label"] == i
        assert not a["flip"] and b["flip"]
        assert torch.equal(a["crop"], b["crop"])
        assert torch.equal(b["image"], TF.horizontal_flip(a["image"]))
        top, left, h, w = a["crop"].tolist()
        assert 0 <= top and 0 <= left and top + h <= 1 + 1e-6 and left + w <= 1 + 1e-6
        # the recorded box, in pixels, reproduces the view from the source image
        src = TF.pil_to_tensor(ds[i][0].convert("RGB"))
        box = [round(top * 30), round(left * 50), round(h * 30), round(w * 50)]
        assert torch.equal(TF.resized_crop(src, *box, [24, 24], antialias=True), a["image"])


def _take(sampler, n):
    return list(itertools.islice(iter(sampler), n))


def test_sampler_order_is_a_function_of_seed():
    a, b, c = ResumableSampler(20, 4, seed=1), ResumableSampler(20, 4, seed=1), ResumableSampler(20, 4, seed=2)
    assert _take(a, 60) == _take(b, 60) and _take(a, 20) != _take(c, 20)
    first = _take(a, 40)
    epoch0, epoch1 = [i for i, _ in first[:20]], [i for i, _ in first[20:]]
    assert sorted(epoch0) == sorted(epoch1) == list(range(20)) and epoch0 != epoch1
    seeds = {s for _, s in first}
    assert len(seeds) == 40  # the same index gets new draws in a new epoch
    assert first[0][1] == a.draw_seed(0, first[0][0]) != mix_seed(1, 0, first[0][0])


def test_sampler_ranks_disjoint_and_covering():
    n, world, bs = 31, 3, 2
    samplers = [ResumableSampler(n, bs, seed=5, rank=r, world_size=world) for r in range(world)]
    assert all(s.steps_per_epoch == 5 for s in samplers)  # 31 // 3 = 10 per rank, 5 batches
    per_rank = [[i for i, _ in _take(s, 10)] for s in samplers]
    flat = sum(per_rank, [])
    assert len(set(flat)) == 30  # disjoint; one sample of 31 dropped this epoch
    even = [ResumableSampler(12, 2, seed=5, rank=r, world_size=3) for r in range(3)]
    assert sorted(i for s in even for i, _ in _take(s, 4)) == list(range(12))
    with pytest.raises(ValueError, match="too small"):
        ResumableSampler(5, 4, seed=0, world_size=2)


@pytest.mark.parametrize("step", [0, 3, 5, 6, 13])
def test_set_position_continues_the_uninterrupted_sequence(step):
    bs = 3
    ref = ResumableSampler(17, bs, seed=9)  # 5 steps per epoch, 2 samples left out per epoch
    assert ref.steps_per_epoch == 5
    full = _take(ref, 60)
    resumed = ResumableSampler(17, bs, seed=9)
    resumed.set_position(step)
    assert _take(resumed, 60 - step * bs) == full[step * bs :]  # crosses epoch boundaries


def _batches(loader, n):
    return list(itertools.islice(iter(loader), n))


def _same(xs, ys):
    return len(xs) == len(ys) and all(torch.equal(x[k], y[k]) for x, y in zip(xs, ys) for k in x)


def test_loader_independent_of_workers_and_resumable(shapes):
    kw = dict(image_size=32, batch_size=4, crop_scale=(0.3, 1.0), flip_p=0.5, seed=3)
    serial, sampler = build_loader(shapes, num_workers=0, **kw)
    assert sampler.steps_per_epoch == 10
    ref = _batches(serial, 13)  # crosses the epoch boundary at step 10
    b = ref[0]
    assert b["image"].shape == (4, 3, 32, 32) and b["image"].dtype == torch.uint8
    assert b["label"].dtype == torch.int64 and b["crop"].shape == (4, 4) and b["flip"].shape == (4,)
    parallel, _ = build_loader(shapes, num_workers=2, **kw)
    assert _same(_batches(parallel, 13), ref)
    del parallel
    resumed, _ = build_loader(shapes, num_workers=0, start_step=8, **kw)
    assert _same(_batches(resumed, 5), ref[8:])
    sharded = [build_loader(shapes, num_workers=0, rank=r, world_size=2, **kw)[0] for r in range(2)]
    assert [len(_batches(s, 1)[0]["label"]) for s in sharded] == [4, 4]


def test_eval_loader_is_ordered_and_deterministic():
    ds = _Rect()
    loader = build_eval_loader(ds, image_size=20, batch_size=4, num_workers=0)
    batches = list(loader)
    assert [len(b["label"]) for b in batches] == [4, 2]
    assert torch.cat([b["label"] for b in batches]).tolist() == list(range(6))
    b = batches[0]
    assert b["image"].shape == (4, 3, 20, 20) and b["image"].dtype == torch.uint8
    assert torch.equal(b["crop"], torch.tensor([[0.0, 0.0, 1.0, 1.0]] * 4)) and not b["flip"].any()
    again = next(iter(loader))
    assert torch.equal(again["image"], b["image"])
    # shorter side (30) -> 20, then centre crop of the 33-wide resize
    src = TF.pil_to_tensor(ds[0][0])
    expected = TF.center_crop(TF.resize(src, [20], antialias=True), [20, 20])
    assert torch.equal(b["image"][0], expected)
