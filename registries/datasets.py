"""Datasets: labelled images from a local root (never downloaded).

Built as ``factory(config, split)`` with split "train" or "val". The result is
a :class:`LabelledDataset`: a ``torch.utils.data.Dataset`` of ``(image, label)``
where image is a PIL image or a uint8 (3, H, W) tensor. Crops and flips are the
loader's job, not the dataset's. A dataset with several labels per image (for
multi-task evaluation) also declares ``tasks`` and ``labels(task)``; the engine
and the evaluators read them only through :func:`dataset_tasks` and
:func:`task_labels`.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch

SPLITS = ("train", "val")


class MissingDataError(FileNotFoundError):
    """The files are not where the config says; the message says where they must be."""


@runtime_checkable
class LabelledDataset(Protocol):
    """What a dataset factory returns. ``tasks`` and ``labels`` are optional (single-label datasets omit them)."""

    #: classes of the main label (the second item of ``dataset[i]``)
    num_classes: int

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[Any, int]: ...

    # Optional, for datasets with several labels per image:
    #   tasks: dict[str, list]          task name -> class names, in label order
    #   def labels(self, task) -> LongTensor   every image's label for ``task``


def dataset_tasks(ds: Any) -> dict[str, list]:
    """The dataset's named label tasks and their class names; empty for a single-label dataset."""
    return dict(getattr(ds, "tasks", {}))


def task_labels(ds: Any, task: str) -> torch.Tensor:
    """Every image's label for ``task``, as a long tensor; a one-line error names the tasks there are."""
    tasks = dataset_tasks(ds)
    if task not in tasks:
        raise ValueError(
            f"dataset {type(ds).__name__} has no labelled task {task!r}; "
            f"its tasks: {', '.join(map(repr, tasks)) if tasks else '(none: it has a single label)'}"
        )
    return torch.as_tensor(ds.labels(task), dtype=torch.long)


def check_split(split: str) -> None:
    """A dataset factory's first check: ``split`` is one the engine asks for."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
