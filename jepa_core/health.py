"""Training health: is the representation spreading out or collapsing?

A JEPA's loss is only a proxy: it falls when the target representation
collapses, too. So at every check (each log step by default) the monitor
embeds one fixed held-out batch (centre crops of the validation split) with
the target encoder and reports

* ``rankme``: RankMe (Garrido et al. 2023) of the target encoder's pooled
  embeddings, the exponential of the entropy of their normalised singular
  values: 1 for a collapsed (rank-one) set, near min(N, D) for isotropic ones;
* ``feature_std``: the per-dimension standard deviation of the l2-normalised
  pooled embeddings, averaged (lightly's collapse check): 0 at collapse, about
  1/sqrt(D) when spread out, so ``feature_std_ratio`` = ``feature_std * sqrt(D)``
  is 0 at collapse and near 1 when healthy;
* ``pred_target_cos``: the mean cosine between the predictor's outputs and the
  targets at target positions, read from the logged training step itself (free:
  a held-out forward through context encoder, predictor and target would cost
  as much as the rest of the check together).

Below ``health.rankme_min`` or ``health.feature_std_min`` (a ratio) the run
raises a collapse alarm. An optional online k-NN probe measures accuracy on a
small labelled subset every ``health.probe_every`` steps.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from jepa_core.data import build_eval_loader, mix_seed
from jepa_core.views import normalize
from jepa_core.registries.datasets import dataset_tasks, task_labels
from jepa_core.schema import HealthConfig

_PROBE = 0x70726F62  # seed domain of the probe's subsets


def rankme(embeddings: torch.Tensor, eps: float = 1e-7) -> float:
    """RankMe of (N, D) embeddings: exp(-sum p log p), p = singular values / their sum (+ eps).

    NaN when an embedding is not finite (diverged weights), where the SVD would raise.
    """
    if not torch.isfinite(embeddings).all():
        return math.nan
    s = torch.linalg.svdvals(embeddings.double())
    p = s / (s.sum() + eps) + eps
    return float(torch.exp(-(p * p.log()).sum()))


def feature_std(embeddings: torch.Tensor) -> float:
    """Mean over dimensions of the std of the l2-normalised (N, D) embeddings."""
    return float(F.normalize(embeddings.double(), dim=1).std(dim=0).mean())


def prediction_cosine(prediction: torch.Tensor, target: torch.Tensor) -> float:
    """Mean cosine between predicted and target features (last dimension)."""
    return float(F.cosine_similarity(prediction.float(), target.float(), dim=-1).mean())


def knn_accuracy(train: torch.Tensor, train_y: torch.Tensor, val: torch.Tensor, val_y: torch.Tensor,
                 k: int) -> float:
    """Top-1 of a cosine k-NN majority vote (ties to the nearest)."""
    sim = F.normalize(val, dim=1) @ F.normalize(train, dim=1).T
    k = min(k, train.shape[0])
    weights, idx = sim.topk(k, dim=1)
    votes = torch.zeros(val.shape[0], int(train_y.max()) + 1, dtype=torch.float64)
    rank_bonus = torch.linspace(1e-6, 0, k, dtype=torch.float64)  # breaks ties towards nearer neighbours
    votes.scatter_add_(1, train_y[idx], torch.ones_like(weights, dtype=torch.float64) + rank_bonus)
    return float((votes.argmax(dim=1) == val_y).double().mean())


def check_probe(dataset: Any, task: str | None) -> None:
    """ValueError unless ``dataset`` has the label the online probe asks for."""
    if task is None:
        if dataset.num_classes < 2:
            raise ValueError(f"dataset {type(dataset).__name__} has no labels for the online probe; "
                             "set health.probe_every to 0")
    elif task not in dataset_tasks(dataset):
        tasks = ", ".join(dataset_tasks(dataset)) or "none: it has a single label, use probe_task: null"
        raise ValueError(f"dataset {type(dataset).__name__} has no labelled task {task!r} for the online probe "
                         f"(its tasks: {tasks})")


def _crops(dataset: Any, indices: list[int], image_size: int) -> dict[str, torch.Tensor]:
    """uint8 centre crops of ``indices`` and their main labels, as the evaluators see them."""
    loader = build_eval_loader(torch.utils.data.Subset(dataset, indices), image_size=image_size,
                               batch_size=len(indices), num_workers=0)
    return next(iter(loader))


class HealthMonitor:
    """Health metrics of a run on fixed held-out data; see the module docstring."""

    def __init__(self, exp: Any, device: torch.device, dtype: torch.dtype | None):
        cfg = exp.config
        self.cfg, self.exp, self.device, self.dtype = cfg.health, exp, device, dtype
        val = exp.dataset("val")
        n = min(self.cfg.n_images, len(val))
        self.images = _crops(val, list(range(n)), cfg.data.image_size)["image"]
        self.probe = None
        if self.cfg.probe_every:
            self.probe = self._probe_data(exp, cfg.data.image_size)

    def _probe_data(self, exp: Any, image_size: int) -> dict[str, torch.Tensor]:
        data, task = {}, self.cfg.probe_task
        for split, size in (("train", self.cfg.probe_train), ("val", self.cfg.probe_val)):
            dataset = exp.dataset(split)
            check_probe(dataset, task)
            g = torch.Generator().manual_seed(mix_seed(exp.config.train.seed, _PROBE, len(split)))
            idx = sorted(torch.randperm(len(dataset), generator=g)[:size].tolist())
            crops = _crops(dataset, idx, image_size)
            data[split] = crops["image"]
            data[f"{split}_labels"] = torch.as_tensor(crops["label"]) if task is None else task_labels(dataset, task)[idx]
        return data

    def _embed(self, encoder: nn.Module, images: torch.Tensor) -> torch.Tensor:
        pixels = normalize(images.to(self.device).float().div_(255.0))
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
            return encoder(pixels).float().mean(dim=1)

    @torch.no_grad()
    def measure(self, step: int) -> dict[str, float]:
        """The held-out metrics now (and the probe's accuracy when due at ``step``)."""
        encoder = self.exp.target.target_encoder(self.exp.encoder)
        was_training = encoder.training
        encoder.eval()
        try:
            z = self._embed(encoder, self.images).cpu()
            out = {"rankme": rankme(z), "feature_std": feature_std(z)}
            out["feature_std_ratio"] = out["feature_std"] * math.sqrt(z.shape[1])
            if self.probe is not None and step % self.cfg.probe_every == 0:
                train = self._embed(encoder, self.probe["train"]).cpu()
                val = self._embed(encoder, self.probe["val"]).cpu()
                out["probe_knn"] = knn_accuracy(train, self.probe["train_labels"], val,
                                                self.probe["val_labels"], self.cfg.probe_k)
        finally:
            encoder.train(was_training)
        return out


def alarms(metrics: dict[str, float], cfg: HealthConfig) -> list[str]:
    """Why these monitor ``metrics`` look like collapse under ``cfg`` (``health``); empty when healthy."""
    reasons = []
    if not (math.isfinite(metrics["rankme"]) and math.isfinite(metrics["feature_std_ratio"])):
        reasons.append("the held-out embeddings are not finite (the weights diverged)")
    if metrics["rankme"] < cfg.rankme_min:
        reasons.append(f"rankme {metrics['rankme']:.2f} < health.rankme_min {cfg.rankme_min}")
    if metrics["feature_std_ratio"] < cfg.feature_std_min:
        reasons.append(f"feature_std*sqrt(D) {metrics['feature_std_ratio']:.3f} "
                       f"< health.feature_std_min {cfg.feature_std_min}")
    return reasons
