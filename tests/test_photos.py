"""The natural-photo set (python -m jepa_core.photos) and a minute of I-JEPA on it against random init."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from jepa_core.launch import main as launch
from jepa_core.photos import SKIMAGE_PHOTOS, _regions, build, main as photos_main, shipped_photos
from jepa_core.rundir import RunDir


def _photo(path, width, height, seed):
    g = torch.Generator().manual_seed(seed)
    Image.fromarray(torch.randint(0, 256, (height, width, 3), generator=g, dtype=torch.uint8).numpy()).save(path)
    return path


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    _photo(folder / "wide.png", 120, 80, 0)
    _photo(folder / "tall.jpg", 70, 100, 1)
    (folder / "notes.txt").write_text("not a photo")
    return folder


def _files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.png"))


def test_the_set_is_imagenet_layout_one_class_per_photo_and_deterministic(tmp_path, photos, capsys):
    assert photos_main([str(tmp_path / "a"), "--photos", str(photos), "--train-per-class", "5",
                        "--val-per-class", "3", "--size", "16"]) == 0
    assert "2 classes, 10 train and 6 val crops of 16 px" in capsys.readouterr().out
    a = tmp_path / "a"
    assert sorted(p.name for p in (a / "train").iterdir()) == sorted(p.name for p in (a / "val").iterdir()) == ["tall", "wide"]
    assert len(list((a / "val" / "tall").iterdir())) == 3
    assert Image.open(next((a / "train" / "wide").iterdir())).size == (16, 16)
    assert photos_main([str(tmp_path / "b"), "--photos", str(photos), "--train-per-class", "5",
                        "--val-per-class", "3", "--size", "16"]) == 0
    b = tmp_path / "b"
    assert _files(a) == _files(b)
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in _files(a))


def test_val_crops_come_from_a_part_of_the_photo_no_train_crop_touches():
    for width, height in ((451, 300), (300, 451), (512, 512)):
        regions = _regions(width, height, 0.3)
        (l1, t1, r1, b1), (l2, t2, r2, b2) = regions["train"], regions["val"]
        assert min(r1, r2) <= max(l1, l2) or min(b1, b2) <= max(t1, t2)  # disjoint boxes
        assert (r1 - l1) * (b1 - t1) + (r2 - l2) * (b2 - t2) == width * height


def test_crops_permute_the_colour_channels_so_the_palette_does_not_name_the_photo(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name, colour in (("red", (200, 10, 10)), ("green", (10, 200, 10))):
        Image.new("RGB", (64, 64), colour).save(folder / f"{name}.png")
    build(tmp_path / "set", sorted(folder.iterdir()), train_per_class=30, val_per_class=1, size=8)
    dominant = {int(torch.tensor(list(Image.open(p).getpixel((4, 4)))).argmax())
                for p in (tmp_path / "set" / "train" / "red").iterdir()}
    assert dominant == {0, 1, 2}


@pytest.mark.parametrize("argv, message", [
    (["--photos", "MISSING"], "is not a directory"),
    (["--photos", "ONE"], "need at least 2 photos, got 1"),
    (["--size", "0"], "--size: must be a positive integer, got 0"),
    (["--photos", "TWINS"], "photos share a file name, which is their class name: a; rename them"),
])
def test_bad_input_is_one_line_with_status_2_and_nothing_written(tmp_path, photos, capsys, argv, message):
    one = tmp_path / "one"
    one.mkdir()
    _photo(one / "only.png", 40, 40, 2)
    twins = tmp_path / "twins"
    twins.mkdir()
    for name in ("a.png", "a.jpg", "b.png"):
        _photo(twins / name, 40, 40, 3)
    argv = [a.replace("MISSING", str(tmp_path / "nope")).replace("ONE", str(one)).replace("TWINS", str(twins))
            for a in argv]
    assert photos_main([str(tmp_path / "out"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_an_existing_output_is_refused_and_left_as_it_was(tmp_path, photos, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert photos_main([str(out), "--photos", str(photos)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_the_default_photos_are_the_ones_scikit_image_and_matplotlib_ship():
    pytest.importorskip("skimage")
    found = shipped_photos()
    assert [p.name for p in found] == ["grace_hopper.jpg", *SKIMAGE_PHOTOS]
    assert all(p.is_file() for p in found)


@pytest.mark.slow
def test_a_minute_of_ijepa_beats_random_init_on_natural_photos(tmp_path):
    """experiments/photos/ijepa.yaml on the shipped photos: trained target encoder vs untrained, same probes."""
    from conftest import ROOT

    pytest.importorskip("skimage")
    assert photos_main([str(tmp_path / "photos")]) == 0
    run_dir = tmp_path / "run"
    assert launch([str(ROOT / "experiments" / "photos" / "ijepa.yaml"), "--output", str(run_dir),
                   "--set", f"data.dataset.root={tmp_path / 'photos'}"]) == 0
    trained = json.loads(RunDir(run_dir).eval.read_text())
    random = json.loads(RunDir(run_dir).eval_random_init.read_text())
    assert trained["linear_probe"]["top1"] > random["linear_probe"]["top1"] + 0.03, (trained, random)
    assert trained["knn"]["top1_k20"] > random["knn"]["top1_k20"] + 0.03, (trained, random)
