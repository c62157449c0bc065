"""The built-in datasets plugin, on procedural data and tiny fake files made here."""

from __future__ import annotations

import attrs
import numpy as np
import pytest
import torch

from helpers import fake_cifar10, fake_cifar100, fake_imagefolder, fake_stl10
from jepa_core.plugins.data import jepa_register_datasets
from jepa_core.plugins.data import synthetic as P
from jepa_core.registries import ComponentError, Registry
from jepa_core.registries.datasets import MissingDataError, task_labels


@pytest.fixture(scope="module")
def registry():
    reg = Registry("datasets")
    jepa_register_datasets(reg)
    return reg


def test_registration_lists_every_dataset_with_a_description(registry):
    assert registry.names() == ["cifar10", "cifar100", "imagefolder", "motifs", "shapes", "stl10"]
    for entry in registry.entries():
        assert entry.description and entry.config is not None
    with pytest.raises(ComponentError, match="did you mean 'size'"):
        registry.create("shapes", "train", sizee=32)
    with pytest.raises(ComponentError, match="n_shapes"):
        registry.create("shapes", "train", n_shapes=99)
    with pytest.raises(ComponentError, match="needs parameter 'root'"):
        registry.create("cifar10", "train")


# --------------------------------------------------------------------------- shapes


def test_shapes_deterministic_and_varied(registry):
    ds = registry.create("shapes", "train", train_size=16)
    again = registry.create("shapes", "train", train_size=16)
    img, label = ds[3]
    assert img.dtype == torch.uint8 and img.shape == (3, 64, 64)
    assert torch.equal(img, ds[3][0]) and torch.equal(img, again[3][0]) and label == again[3][1]
    images = [ds[i][0] for i in range(8)]
    assert all(not torch.equal(images[i], images[j]) for i in range(8) for j in range(i))
    other_seed = registry.create("shapes", "train", train_size=16, seed=1)
    assert not torch.equal(img, other_seed[3][0])


def test_shapes_labels_in_range_and_consistent():
    ds = P.Shapes(P.Shapes.Config(train_size=200, n_shapes=8, n_colours=5), "train")
    assert ds.num_classes == 8 and list(ds.tasks) == ["shape", "colour"]
    shape, colour = ds.labels("shape"), ds.labels("colour")
    assert shape.dtype == torch.long and shape.shape == (200,)
    assert set(shape.tolist()) == set(range(8)) and set(colour.tolist()) == set(range(5))
    assert [ds[i][1] for i in range(10)] == shape[:10].tolist()
    assert torch.equal(task_labels(ds, "colour"), colour)
    assert ds.tasks["shape"][:3] == ["circle", "square", "triangle"] and len(ds.tasks["colour"]) == 5
    with pytest.raises(ValueError, match="unknown task"):
        ds.labels("size")


def test_shapes_train_val_disjoint():
    cfg = P.Shapes.Config(train_size=300, val_size=300)
    train, val = P.Shapes(cfg, "train"), P.Shapes(cfg, "val")
    assert len(train) == 300 and len(val) == 300
    seeds_train = {train.index_seed(i) for i in range(300)}
    seeds_val = {val.index_seed(i) for i in range(300)}
    assert len(seeds_train) == len(seeds_val) == 300 and not seeds_train & seeds_val
    assert not torch.equal(train[0][0], val[0][0])
    with pytest.raises(IndexError):
        train[300]


@pytest.mark.parametrize("size", [32, 96])
def test_shapes_any_size(size):
    ds = P.Shapes(P.Shapes.Config(size=size, train_size=4), "train")
    img, _ = ds[0]
    assert img.shape == (3, size, size) and img.dtype == torch.uint8
    assert img.float().std() > 5  # not blank


def test_shapes_same_scene_at_two_sizes():
    """The size only changes the sampling grid: a downscaled 128px image looks like the 32px one."""
    small = P.Shapes(P.Shapes.Config(size=32, train_size=4), "train")[1][0].float()
    big = P.Shapes(P.Shapes.Config(size=128, train_size=4), "train")[1][0].float()
    down = torch.nn.functional.avg_pool2d(big[None], 4)[0]
    assert (down - small).abs().mean() < 12


# --------------------------------------------------------------------------- motifs


def _count_renders(ds, monkeypatch) -> list[int]:
    """The indices ``ds`` renders from now on, in order."""
    calls, render = [], ds.render
    monkeypatch.setattr(ds, "render", lambda i, p=None: calls.append(i) or render(i, p))
    return calls


@pytest.mark.parametrize("name", ["shapes", "motifs"])
def test_an_image_is_rendered_once_and_a_caller_writing_into_it_spares_the_next(registry, monkeypatch, name):
    ds = registry.create(name, "train", train_size=4)
    fresh = ds.render(1)
    calls = _count_renders(ds, monkeypatch)
    first, label = ds[1]
    first.zero_()
    for _ in range(3):  # later epochs
        again, again_label = ds[1]
        assert torch.equal(again, fresh) and again_label == label
    assert calls == [1]


def test_a_split_larger_than_the_cache_is_rendered_every_time(registry, monkeypatch):
    monkeypatch.setattr(P, "CACHE_BYTES", 3 * 16 * 16 * 3)  # three 16-px images; the split has four
    ds = registry.create("shapes", "train", train_size=4, size=16)
    calls = _count_renders(ds, monkeypatch)
    assert torch.equal(ds[0][0], ds[0][0]) and calls == [0, 0]


def test_motifs_grid_of_copies_inside_their_cells():
    ds = P.Motifs(P.Motifs.Config(train_size=60, grid=[2, 4]), "train")
    assert list(ds.tasks) == ["shape", "colour", "grid"] and ds.tasks["grid"] == [2, 3, 4]
    assert set(ds.labels("grid").tolist()) == {0, 1, 2}
    for i in range(60):
        p = ds.params(i)
        g = ds.config.grid[0] + p["grid"]
        assert len(p["copies"]) == g * g and p["shape"] == ds[i][1] == ds.labels("shape")[i]
        assert {c["colour"] for c in p["copies"]} == {p["colour"]} == {int(ds.labels("colour")[i])}
        for k, copy in enumerate(p["copies"]):
            row, col = divmod(k, g)  # the copy's circumscribed disc stays in its cell: no overlaps
            (y, x), r = copy["centre"], copy["radius"]
            assert row / g - 1e-9 <= y - r and y + r <= (row + 1) / g + 1e-9
            assert col / g - 1e-9 <= x - r and x + r <= (col + 1) / g + 1e-9
    assert set(ds.labels("colour").tolist()) == set(range(len(P.PALETTE)))
    img = ds[0][0]
    assert img.shape == (3, 64, 64) and torch.equal(img, P.Motifs(ds.config, "train")[0][0])
    assert not torch.equal(img, P.Motifs(ds.config, "val")[0][0])


def test_motifs_switches_take_away_what_the_patches_share():
    cfg = P.Motifs.Config(size=32, train_size=40, grid=[3, 3], colour_per="copy", background="grey", rotation=0)
    ds = P.Motifs(cfg, "train")
    assert list(ds.tasks) == ["shape", "grid"]  # no one colour per image to name
    params = [ds.params(i) for i in range(40)]
    assert all(c["angle"] == 0.0 for p in params for c in p["copies"])
    assert max(len({c["colour"] for c in p["copies"]}) for p in params) > 3
    corners = torch.stack([ds[i][0][:, 0, 0] for i in range(40)])  # cell corners: background only
    assert (corners == corners[0]).all()
    textured = P.Motifs(attrs.evolve(cfg, background="flat"), "train")
    flat = torch.stack([textured[i][0][:, 0, 0] for i in range(40)])
    assert len({tuple(c.tolist()) for c in flat}) > 30
    assert torch.equal(textured[0][0][:, 0, 0], textured[0][0][:, -1, -1])  # one colour within an image


def test_motifs_switches_refuse_unknown_values():
    reg = Registry("datasets")
    jepa_register_datasets(reg)
    with pytest.raises(ComponentError, match="'background' must be one of"):
        reg.create("motifs", "train", background="stripes")
    with pytest.raises(ComponentError, match="'colour_per' must be one of"):
        reg.create("motifs", "train", colour_per="shape")
    with pytest.raises(ComponentError, match="'rotation' must be in"):
        reg.create("motifs", "train", rotation=720)


def test_motifs_class_is_not_in_the_colour_statistics():
    """Mean and spread of each channel, nearest class mean: chance, so colour does not give the class away."""
    cfg = P.Motifs.Config(size=32, train_size=480, val_size=240)

    def stats(split):
        ds = P.Motifs(cfg, split)
        images = torch.stack([ds[i][0] for i in range(len(ds))]).float().flatten(2)
        return torch.cat([images.mean(2), images.std(2)], 1), ds.labels()

    (xt, yt), (xv, yv) = stats("train"), stats("val")
    mu, sd = xt.mean(0), xt.std(0)
    xt, xv = (xt - mu) / sd, (xv - mu) / sd
    centroids = torch.stack([xt[yt == c].mean(0) for c in range(cfg.n_shapes)])
    accuracy = (torch.cdist(xv, centroids).argmin(1) == yv).float().mean().item()
    assert accuracy < 1 / cfg.n_shapes + 0.1, accuracy


def test_motifs_grid_must_be_an_integer_range():
    reg = Registry("datasets")
    jepa_register_datasets(reg)
    with pytest.raises(ComponentError, match="grid"):
        reg.create("motifs", "train", grid=[3, 2])
    with pytest.raises(ComponentError, match="grid"):
        reg.create("motifs", "train", grid=[1.5, 2])


# --------------------------------------------------------------------------- imagefolder


def test_imagefolder_reads_both_splits(registry, tmp_path):
    fake_imagefolder(tmp_path)
    for split in ("train", "val"):
        ds = registry.create("imagefolder", split, root=str(tmp_path))
        assert len(ds) == 6 and ds.num_classes == 2 and ds.classes == ["cat", "dog"]
        img, label = ds[5]
        assert img.mode == "RGB" and label == 1


def test_imagefolder_missing_and_inconsistent(registry, tmp_path):
    with pytest.raises(MissingDataError, match=rf"{tmp_path}/train does not exist.*{tmp_path}/train/<class>/<image>\.JPEG"):
        registry.create("imagefolder", "train", root=str(tmp_path))
    (tmp_path / "val" / "cat").mkdir(parents=True)
    with pytest.raises(MissingDataError, match=f"no usable images in {tmp_path}/val"):
        registry.create("imagefolder", "val", root=str(tmp_path))
    (tmp_path / "val").rename(tmp_path / "old")
    fake_imagefolder(tmp_path, splits=("train",))
    fake_imagefolder(tmp_path, classes=("cat", "emu"), splits=("val",))
    with pytest.raises(ValueError, match="same class folders"):
        registry.create("imagefolder", "train", root=str(tmp_path))


# --------------------------------------------------------------------------- cifar / stl
# The real torchvision loaders run on these files; only torchvision's md5 check
# (which no fake file can pass) is skipped with verify_md5=False, and a separate
# test shows verify_md5=True rejects them.


def test_cifar10_loads_fake_batches(registry, tmp_path):
    batches = fake_cifar10(tmp_path)
    train = registry.create("cifar10", "train", root=str(tmp_path), verify_md5=False)
    val = registry.create("cifar10", "val", root=str(tmp_path), verify_md5=False)
    assert len(train) == 20 and len(val) == 4 and train.num_classes == 10
    img, label = val[2]
    data, labels = batches["test_batch"]
    expected = torch.from_numpy(data[2].reshape(3, 32, 32))
    assert torch.equal(torch.from_numpy(np.array(img)).permute(2, 0, 1), expected) and label == labels[2]
    with pytest.raises(MissingDataError, match="do not match the official md5.*verify_md5: false"):
        registry.create("cifar10", "train", root=str(tmp_path))


def test_cifar100_loads_fake_files(registry, tmp_path):
    fake_cifar100(tmp_path)
    ds = registry.create("cifar100", "val", root=str(tmp_path), verify_md5=False)
    assert len(ds) == 3 and ds.num_classes == 100 and ds[2][1] == 2


def test_cifar_missing_files_name_the_path(registry, tmp_path):
    with pytest.raises(MissingDataError, match=f"{tmp_path}/cifar-10-batches-py must hold .*missing: data_batch_1"):
        registry.create("cifar10", "train", root=str(tmp_path))
    with pytest.raises(MissingDataError, match=f"{tmp_path}/cifar-100-python must hold"):
        registry.create("cifar100", "val", root=str(tmp_path), verify_md5=False)


def test_stl10_loads_fake_binaries_column_major(registry, tmp_path):
    images = fake_stl10(tmp_path)  # (N, C, row, col), stored column-major
    train = registry.create("stl10", "train", root=str(tmp_path), verify_md5=False)
    val = registry.create("stl10", "val", root=str(tmp_path), verify_md5=False)
    assert len(train) == 3 and len(val) == 2 and val.num_classes == 10
    img, label = val[1]
    assert torch.equal(torch.from_numpy(np.array(img)).permute(2, 0, 1), torch.from_numpy(images["test"][1]))
    assert label == 1
    # with md5 checks on, torchvision also wants unlabeled_X.bin: the error says so
    with pytest.raises(MissingDataError, match=f"{tmp_path}/stl10_binary must hold .*missing: unlabeled_X.bin"):
        registry.create("stl10", "train", root=str(tmp_path))


def test_stl10_missing_root(registry, tmp_path):
    with pytest.raises(MissingDataError, match=f"{tmp_path}/stl10_binary must hold .*missing: test_X.bin, test_y.bin"):
        registry.create("stl10", "val", root=str(tmp_path), verify_md5=False)
