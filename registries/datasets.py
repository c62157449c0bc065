"""Datasets: labelled images from a local root (never downloaded).

Built as ``factory(config, split)`` with split "train" or "val". The result
is a ``torch.utils.data.Dataset`` of ``(image, label)`` where image is a PIL
image or a uint8 (3, H, W) tensor, with an integer ``num_classes`` attribute.
Crops and flips are the loader's job, not the dataset's. A dataset may carry
``label_names: dict[str, list]`` of extra per-index label arrays for
multi-task evaluation.
"""

from typing import Any

import torch

SPLITS = ("train", "val")


class MissingDataError(FileNotFoundError):
    """The files are not where the config says; the message says where they must be."""


def dataset_tasks(ds: Any) -> list[str]:
    """The named label tasks of a dataset (``label_names`` keys or ``tasks``); empty for one label."""
    names = getattr(ds, "label_names", None)
    if isinstance(names, dict):
        return list(names)
    return list(getattr(ds, "tasks", ()))


def task_labels(ds: Any, task: str) -> torch.Tensor:
    """Every image's label for ``task`` (``labels(task)`` or the ``label_names`` contract)."""
    if hasattr(ds, "labels") and callable(ds.labels) and task in getattr(ds, "tasks", ()):
        return torch.as_tensor(ds.labels(task), dtype=torch.long)
    names = getattr(ds, "label_names", None)
    if isinstance(names, dict) and task in names:
        return torch.as_tensor(names[task], dtype=torch.long)
    tasks = dataset_tasks(ds)
    raise ValueError(
        f"dataset {type(ds).__name__} has no labelled task {task!r}; "
        f"its tasks: {', '.join(map(repr, tasks)) if tasks else '(none: it has a single label)'}"
    )
