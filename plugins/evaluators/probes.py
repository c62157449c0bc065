"""Frozen-encoder probes: linear, attentive and k-NN classification (top-1 in [0, 1]).

Train images come from the ``train`` split and accuracy is measured on
``val``, both as deterministic centre crops, subsampled to ``max_train`` /
``max_val`` images (same subset for every probe of a run, so features are
extracted once and shared). Registered by plugins/evaluators/__init__.py.
"""

from __future__ import annotations

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from jepa_core.plugins.evaluators.features import encoder_of, features
from jepa_core.plugins.evaluators.fields import (
    batch_size_field, encoder_choice, max_train_field, max_val_field, task_field, workers_field,
)
from jepa_core.plugins.evaluators.heads import (
    AttentiveClassifier, accuracy, fit, pick_heads, predict_batches, standardise,
)
from jepa_core.plugins.evaluators.seeding import generator, seeded
from jepa_core.plugins.evaluators.subsets import num_classes, split, task_classes, task_of
from jepa_core.api import ComponentError, Evaluator, validators as v


@attrs.frozen
class ProbeConfig:
    """The parameters every probe shares: which frozen encoder, which images, which labels."""

    #: which encoder is probed: I-JEPA evaluates the EMA target encoder
    encoder: str = encoder_choice()
    max_train: int | None = max_train_field()
    max_val: int | None = max_val_field()
    batch_size: int = batch_size_field()
    num_workers: int | None = workers_field()
    task: str | None = task_field()


class _Probe(Evaluator):
    def label_tasks(self) -> tuple[str, ...]:
        return () if self.config.task is None else (self.config.task,)

    def _data(self, run, tokens: bool):
        cfg = self.config
        encoder = encoder_of(run, cfg.encoder)
        train = split(run, "train", cfg.max_train)
        val = split(run, "val", cfg.max_val)
        if cfg.task is not None:  # before any extraction: an unknown task fails at once
            task_train, task_val = task_of(train, cfg.task), task_of(val, cfg.task)
        xt, yt = features(run, encoder, train, tokens=tokens, batch_size=cfg.batch_size,
                            num_workers=cfg.num_workers)
        xv, yv = features(run, encoder, val, tokens=tokens, batch_size=cfg.batch_size,
                            num_workers=cfg.num_workers)
        if cfg.task is None:
            return xt, yt, xv, yv, num_classes(train, yt, yv)
        return xt, task_train, xv, task_val, task_classes(train.dataset, cfg.task, task_train, task_val)


class LinearProbe(_Probe):
    """Linear probe: standardised average-pooled frozen features, linear classifier (top-1)."""

    @attrs.frozen
    class Config(ProbeConfig):
        #: lbfgs: full-batch L-BFGS (epochs = iterations); adam: mini-batch AdamW, cosine decay
        optimizer: str = attrs.field(default="lbfgs", validator=v.one_of("lbfgs", "adam"))
        epochs: int = attrs.field(default=100, validator=v.positive_int)
        #: adam only (L-BFGS line-searches)
        lr: float = attrs.field(default=1e-2, validator=v.positive)
        weight_decay: float = attrs.field(default=1e-4, validator=v.non_negative)
        head_batch_size: int = attrs.field(default=256, validator=v.positive_int)

    def evaluate(self, run) -> dict[str, float]:
        cfg = self.config
        xt, yt, xv, yv, n_classes = self._data(run, tokens=False)
        xt, xv = standardise(xt, xv)
        device = run.device
        xt, yt, xv = xt.to(device), yt.to(device), xv.to(device)
        with seeded(run, "linear_probe", "init"):
            head = nn.Linear(xt.shape[1], n_classes).to(device)
            nn.init.trunc_normal_(head.weight, std=0.01)  # as MAE's linear probe: small, not nn.Linear's
            nn.init.zeros_(head.bias)
        if cfg.optimizer == "lbfgs":
            self._lbfgs(head, xt, yt)
        else:
            g = generator(run, "linear_probe", "order")
            fit([{"params": head.parameters(), "lr": cfg.lr}],
                  lambda idx: F.cross_entropy(head(xt[idx.to(device)]), yt[idx.to(device)]),
                  len(xt), epochs=cfg.epochs, batch_size=cfg.head_batch_size, g=g,
                  weight_decay=cfg.weight_decay)
        with torch.no_grad():
            predicted = head(xv).argmax(dim=1)
        return {"top1": accuracy(predicted, yv)}

    def _lbfgs(self, head: nn.Linear, x: torch.Tensor, y: torch.Tensor) -> None:
        cfg = self.config
        optimiser = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=cfg.epochs,
                                      history_size=20, line_search_fn="strong_wolfe")

        def closure():
            optimiser.zero_grad(set_to_none=True)
            loss = F.cross_entropy(head(x), y) + 0.5 * cfg.weight_decay * head.weight.pow(2).sum()
            loss.backward()
            return loss

        optimiser.step(closure)


class AttentiveProbe(_Probe):
    """Attentive probe: one learned query cross-attends to frozen patch tokens, then a linear head (top-1)."""

    @attrs.frozen
    class Config(ProbeConfig):
        epochs: int = attrs.field(default=10, validator=v.positive_int)
        lr: float = attrs.field(default=1e-3, validator=v.positive)
        weight_decay: float = attrs.field(default=0.05, validator=v.non_negative)
        head_batch_size: int = attrs.field(default=128, validator=v.positive_int)
        #: attention heads of the pooler (null: the encoder's, if they divide the width)
        heads: int | None = attrs.field(default=None, validator=attrs.validators.optional(v.positive_int))

    def evaluate(self, run) -> dict[str, float]:
        cfg = self.config
        xt, yt, xv, yv, n_classes = self._data(run, tokens=True)
        device = run.device
        dim = xt.shape[-1]
        heads = pick_heads(dim, cfg.heads, encoder_of(run, cfg.encoder).num_heads)
        with seeded(run, "attentive_probe", "init"):
            model = AttentiveClassifier(dim, heads, [n_classes]).to(device)
        g = generator(run, "attentive_probe", "order")

        def loss(idx):
            return F.cross_entropy(model(xt[idx].to(device))[0], yt[idx].to(device))

        fit([{"params": model.parameters(), "lr": cfg.lr}], loss, len(xt), epochs=cfg.epochs,
              batch_size=cfg.head_batch_size, g=g, weight_decay=cfg.weight_decay, train_modules=[model])
        (predicted,) = predict_batches(lambda idx: model(xv[idx].to(device)), len(xv), cfg.head_batch_size)
        return {"top1": accuracy(predicted, yv)}


def drop_top_components(xt: torch.Tensor, xv: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Both sets centred on the train mean, with the train set's first ``n`` principal directions removed."""
    mean = xt.mean(dim=0)
    xt, xv = xt - mean, xv - mean
    basis = torch.linalg.svd(xt, full_matrices=False).Vh[:n]  # (n, D), orthonormal rows
    return xt - xt @ basis.T @ basis, xv - xv @ basis.T @ basis


class KNN(_Probe):
    """k-NN classifier: cosine similarity, exp(sim / T)-weighted votes as in DINO (top-1 per k)."""

    @attrs.frozen
    class Config(ProbeConfig):
        k: tuple = attrs.field(default=(1, 5, 20), converter=v.as_pair, validator=v.positive_int_list)
        temperature: float = attrs.field(default=0.07, validator=v.positive)
        #: a diagnostic, not DINO's k-NN: centre and remove the train features' first N principal
        #: directions before the cosine (on motifs the first three are the image's mean colour)
        drop_components: int = attrs.field(default=0, validator=v.non_negative_int)

    def evaluate(self, run) -> dict[str, float]:
        cfg = self.config
        if cfg.drop_components:  # before any extraction
            rank = min(len(split(run, "train", cfg.max_train)), encoder_of(run, cfg.encoder).embed_dim)
            if cfg.drop_components >= rank:
                raise ComponentError(f"'drop_components' ({cfg.drop_components}) must be under the {rank} "
                                     "principal components of the train features (train images, feature width)",
                                     key="drop_components")
        xt, yt, xv, yv, n_classes = self._data(run, tokens=False)
        if cfg.drop_components:
            xt, xv = drop_top_components(xt, xv, cfg.drop_components)
        xt = F.normalize(xt.to(run.device), dim=1)
        xv = F.normalize(xv.to(run.device), dim=1)
        yt = yt.to(run.device)
        k_max = min(max(cfg.k), len(xt))
        correct = {k: 0 for k in cfg.k}
        for start in range(0, len(xv), 256):
            sims, nn_idx = (xv[start:start + 256] @ xt.T).topk(k_max, dim=1)
            weights = (sims / cfg.temperature).exp()
            votes = F.one_hot(yt[nn_idx], n_classes).float() * weights.unsqueeze(-1)  # (b, k, C)
            truth = yv[start:start + 256].to(run.device)
            for k in cfg.k:
                predicted = votes[:, :min(k, k_max)].sum(dim=1).argmax(dim=1)
                correct[k] += int((predicted == truth).sum())
        return {f"top1_k{k}": correct[k] / max(1, len(xv)) for k in cfg.k}
