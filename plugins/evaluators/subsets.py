"""Deterministic subsets of a split and their evaluation loader.

Centre crops from ``build_eval_loader``, never the training augmentations. The
datasets are kept in the run's cache so several evaluators load them once.
"""

from __future__ import annotations

from typing import Any

import attrs
import torch
from torch.utils.data import Subset

from jepa_core.api import build_eval_loader, dataset_tasks, task_labels
from jepa_core.plugins.evaluators.seeding import generator


@attrs.frozen
class Split:
    """A deterministic subset of a dataset split: the full split and the chosen indices (sorted)."""

    name: str
    dataset: Any  # the full split
    indices: tuple[int, ...]

    @property
    def subset(self) -> Subset:
        return Subset(self.dataset, list(self.indices))

    def __len__(self) -> int:
        return len(self.indices)


def split(run, name: str, max_n: int | None) -> Split:
    """Split ``name`` of the run's dataset, subsampled to ``max_n`` images without replacement.

    The subset depends only on (run seed, split, max_n), so evaluators asking
    for the same size see the same images (and share cached features).
    """
    store = run.cache
    key = ("dataset", name)
    if key not in store:
        store[key] = run.dataset(name)
    dataset = store[key]
    n = len(dataset)
    if max_n is None or max_n >= n:
        indices = tuple(range(n))
    else:
        g = generator(run, "subset", name, max_n)
        indices = tuple(sorted(torch.randperm(n, generator=g)[:max_n].tolist()))
    return Split(name, dataset, indices)


def loader(run, data: Split, batch_size: int, num_workers: int | None = None):
    workers = run.config.data.num_workers if num_workers is None else num_workers
    return build_eval_loader(data.subset, image_size=run.config.data.image_size,
                             batch_size=batch_size, num_workers=workers)


def to_pixels(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 (B, 3, S, S) -> float in [0, 1] on ``device``."""
    return images.to(device, non_blocking=True).float().div_(255.0)


def task_of(data: Split, task: str) -> torch.Tensor:
    """Labels of the subset for a named task (see :func:`task_labels`)."""
    return task_labels(data.dataset, task)[list(data.indices)]


def task_classes(ds, task: str, *label_sets: torch.Tensor) -> int:
    """Classes of ``task``: as many as the dataset names, or more if the labels say so."""
    seen = max(int(t.max()) for t in label_sets if t.numel()) + 1
    return max(len(dataset_tasks(ds)[task]), seen)


def num_classes(data: Split, *label_sets: torch.Tensor) -> int:
    """Classes of the main label: the dataset's ``num_classes``, or more if the labels say so."""
    seen = max(int(t.max()) for t in label_sets if t.numel()) + 1
    return max(int(data.dataset.num_classes), seen)
