"""The contract of datasets: labelled images the loaders and the evaluators read."""

from __future__ import annotations

import numbers
from typing import Any, Callable

import torch
from PIL import Image

from jepa_core.api import SPLITS, LabelledDataset, build_eval_loader, dataset_tasks, is_clip_dataset, task_labels
from jepa_core.testing._core import Subject, create

#: the side of the evaluation crops the check loads
CROP = 16


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    return isinstance(b, Image.Image) and a.mode == b.mode and a.tobytes() == b.tobytes()


def check_dataset(name: str, factory: Callable[..., Any], /, **params: Any) -> None:
    """Check a dataset built for each split as the engine builds it (``Cls(config, split)``).

    It is a LabelledDataset of (image, label) items, image a PIL image or a
    uint8 (3, H, W) tensor, label in [0, num_classes), the same item every
    time it is read; every named task labels every image within its classes;
    the evaluation loader crops it; a split other than train or val is a
    ValueError. A clip dataset (``frames`` declared) yields uint8 frames
    (T, 3, H, W) with the actions and states it declares instead of an image.
    ContractError names the first broken contract.
    """
    it = Subject("dataset", name)
    for split in SPLITS:
        data = create("datasets", name, factory, split, **params)
        it.expect(isinstance(data, LabelledDataset) and isinstance(data.num_classes, int) and data.num_classes > 0,
                  f"the {split} split is not a LabelledDataset with num_classes >= 1")
        n = len(data)
        it.expect(n > 0, f"the {split} split is empty")
        for index in sorted({0, n - 1}):
            item = data[index]
            it.expect(isinstance(item, tuple) and len(item) == 2, f"{split}[{index}] is not an (image, label) pair")
            if is_clip_dataset(data):
                _check_clip(it, data, index, f"{split}[{index}]")
                continue
            image, label = item
            it.expect(isinstance(image, Image.Image) or (isinstance(image, torch.Tensor) and image.dtype == torch.uint8
                                                         and image.dim() == 3 and image.shape[0] == 3),
                      f"{split}[{index}]'s image is a {type(image).__name__}, not a PIL image or a uint8 (3, H, W) tensor")
            it.expect(isinstance(label, numbers.Integral) and 0 <= int(label) < data.num_classes,
                      f"{split}[{index}]'s label {label!r} is not an integer in [0, {data.num_classes})")
            again = data[index]
            it.expect(_same(image, again[0]) and again[1] == label, f"{split}[{index}] changes when read again")
        for task, classes in dataset_tasks(data).items():
            labels = task_labels(data, task)
            it.expect(labels.shape == (n,) and bool(((labels >= 0) & (labels < len(classes))).all()),
                      f"labels({task!r}) of the {split} split are not {n} labels in [0, {len(classes)})")
        batch = next(iter(build_eval_loader(data, image_size=CROP, batch_size=2, num_workers=0)))
        frames = (data.frames,) if is_clip_dataset(data) else ()
        it.expect(tuple(batch["image"].shape) == (min(2, n), *frames, 3, CROP, CROP),
                  f"the evaluation loader made {tuple(batch['image'].shape)} crops of the {split} split")
    try:
        create("datasets", name, factory, "test", **params)
    except ValueError:
        return
    it.fail(f"accepts split 'test'; a dataset must refuse splits other than {', '.join(SPLITS)} (check_split)")


def _check_clip(it: Subject, data: Any, index: int, where: str) -> None:
    """A clip dataset's item: uint8 frames (T, 3, H, W) and the actions and states it declares, the same when read again."""
    clip, label = data[index]
    it.expect(isinstance(clip, dict) and isinstance(clip.get("frames"), torch.Tensor),
              f"{where} is a clip dataset's item without a 'frames' tensor (a dict of frames, actions, states)")
    frames = clip["frames"]
    it.expect(frames.dtype == torch.uint8 and frames.dim() == 4 and tuple(frames.shape[:2]) == (data.frames, 3),
              f"{where}'s frames are {frames.dtype} {tuple(frames.shape)}, not uint8 ({data.frames}, 3, H, W)")
    for key, dim, steps in (("actions", data.action_dim, data.frames - 1), ("states", data.state_dim, data.frames)):
        if dim:
            value = clip.get(key)
            it.expect(isinstance(value, torch.Tensor) and tuple(value.shape) == (steps, dim),
                      f"{where}'s {key} are not ({steps}, {dim}) as the dataset declares ({key[:-1]}_dim {dim})")
    it.expect(isinstance(label, numbers.Integral) and 0 <= int(label) < data.num_classes,
              f"{where}'s label {label!r} is not an integer in [0, {data.num_classes})")
    again, _ = data[index]
    it.expect(all(torch.equal(v, again[k]) for k, v in clip.items()), f"{where} changes when read again")
