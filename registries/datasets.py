"""Datasets: labelled images from a local root (never downloaded).

Built as ``factory(config, split)`` with split "train" or "val". The result is
a :class:`LabelledDataset`: a ``torch.utils.data.Dataset`` of ``(image, label)``
where image is a PIL image or a uint8 (3, H, W) tensor. Crops and flips are the
loader's job, not the dataset's. A dataset with several labels per image (for
multi-task evaluation) also declares ``tasks`` and ``labels(task)``; the engine
and the evaluators read them only through :func:`dataset_tasks` and
:func:`task_labels`.

A clip dataset (:class:`ClipDataset`) yields ``(clip, label)`` where ``clip``
is a dict: ``"frames"`` uint8 (T, 3, H, W), and when the data records them
``"actions"`` float32 (T-1, A) (the action taken between frame t and t+1) and
``"states"`` float32 (T, S). It declares ``frames``, ``action_dim`` and
``state_dim`` (0 when it has none) so that a run is checked before training.
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


@runtime_checkable
class ClipDataset(Protocol):
    """What a clip dataset factory returns: ``dataset[i]`` is ``({"frames", "actions"?, "states"?}, label)``."""

    num_classes: int
    #: frames per clip (T)
    frames: int
    #: entries of each per-step action, 0 without actions
    action_dim: int
    #: entries of each per-frame state, 0 without states
    state_dim: int

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[dict[str, torch.Tensor], int]: ...


def is_clip_dataset(ds: Any) -> bool:
    """True for a dataset of clips (it declares ``frames``), False for one of images."""
    return isinstance(getattr(ds, "frames", None), int) and not isinstance(getattr(ds, "frames"), bool)


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
