"""Predictor finetuning (IWM): classify from the predictor's output on the frozen target encoder.

The EMA target encoder stays frozen; its patch tokens of the untransformed
image (centre crop) are cached once. The predictor is asked for every token:
context = all N tokens, one target block of all N tokens, the null action of
the run's views. An attentive head (one learned query, linear classifier)
classifies its output while the predictor is finetuned at
``predictor_lr_scale`` times the head's learning rate. The baseline is a
randomly initialised predictor of the same architecture (built from the
run's own config and registries) trained at the full learning rate.
Registered by plugins/evaluators/__init__.py.
"""

from __future__ import annotations

import copy

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from jepa_core.plugins.evaluators.features import features, predict_all
from jepa_core.plugins.evaluators.fields import batch_size_field, task_field, workers_field
from jepa_core.plugins.evaluators.heads import AttentiveClassifier, accuracy, fit, pick_heads, predict_batches
from jepa_core.plugins.evaluators.seeding import generator, seeded
from jepa_core.plugins.evaluators.subsets import num_classes, split, task_classes, task_of
from jepa_core.api import Evaluator, validators as v


def _tasks(instance, attribute, value) -> None:
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(t, str) and t for t in value):
        raise ValueError(f"'{attribute.name}' must be a non-empty list of task names, got {value!r}", attribute)
    if len(set(value)) != len(value):
        raise ValueError(f"'{attribute.name}' names a task twice: {list(value)!r}", attribute)


class _PredictorTuning(Evaluator):
    needs = frozenset({"predictor"})

    def _tokens(self, run):
        cfg = self.config
        train = split(run, "train", cfg.max_train)
        val = split(run, "val", cfg.max_val)
        xt, yt = features(run, run.target_encoder, train, tokens=True, batch_size=cfg.batch_size,
                            num_workers=cfg.num_workers)
        xv, yv = features(run, run.target_encoder, val, tokens=True, batch_size=cfg.batch_size,
                            num_workers=cfg.num_workers)
        return train, val, xt, yt, xv, yv

    def _tune(self, run, name: str, predictor: nn.Module, predictor_lr: float, xt, xv,
              train_labels: list[torch.Tensor], classes: list[int]) -> list[torch.Tensor]:
        """Finetune ``predictor`` + an attentive classifier (one query and head per task); val predictions."""
        cfg = self.config
        device = run.device
        predictor = predictor.to(device)
        predictor.requires_grad_(True)
        dim = xt.shape[-1]
        heads = pick_heads(dim, cfg.heads, run.target_encoder.num_heads)
        with seeded(run, name, "head"):
            model = AttentiveClassifier(dim, heads, classes).to(device)
        labels = [y.to(device) for y in train_labels]
        g = generator(run, name, "order")  # same sample order for every predictor of one evaluator

        def loss(idx):
            logits = model(predict_all(run, predictor, xt[idx].to(device)))
            idx = idx.to(device)
            return torch.stack([F.cross_entropy(lg, y[idx]) for lg, y in zip(logits, labels)]).mean()

        groups = [{"params": model.parameters(), "lr": cfg.lr},
                  {"params": predictor.parameters(), "lr": predictor_lr}]
        fit(groups, loss, len(xt), epochs=cfg.epochs, batch_size=cfg.head_batch_size, g=g,
              weight_decay=cfg.weight_decay, train_modules=[model, predictor])
        return predict_batches(lambda idx: model(predict_all(run, predictor, xv[idx].to(device))),
                                 len(xv), cfg.head_batch_size)


@attrs.frozen
class TuningConfig:
    """The parameters predictor tuning shares: which images, and how the head and predictor learn."""

    max_train: int | None = attrs.field(default=512, validator=attrs.validators.optional(v.positive_int))
    max_val: int | None = attrs.field(default=256, validator=attrs.validators.optional(v.positive_int))
    batch_size: int = batch_size_field()
    num_workers: int | None = workers_field()
    epochs: int = attrs.field(default=10, validator=v.positive_int)
    #: learning rate of the head (and of a random predictor)
    lr: float = attrs.field(default=3e-3, validator=v.positive)
    #: the pretrained predictor learns at lr * predictor_lr_scale (IWM: 1/10)
    predictor_lr_scale: float = attrs.field(default=0.1, validator=v.non_negative)
    weight_decay: float = attrs.field(default=0.05, validator=v.non_negative)
    head_batch_size: int = attrs.field(default=32, validator=v.positive_int)
    heads: int | None = attrs.field(default=None, validator=attrs.validators.optional(v.positive_int))


class PredictorFinetune(_PredictorTuning):
    """Predictor finetuning: frozen target encoder, pretrained predictor + attentive head vs a random predictor."""

    @attrs.frozen
    class Config(TuningConfig):
        #: also train a randomly initialised predictor at the full lr (top1_random_predictor, gain)
        random_baseline: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool))
        task: str | None = task_field()

    def label_tasks(self) -> tuple[str, ...]:
        return () if self.config.task is None else (self.config.task,)

    def evaluate(self, run) -> dict[str, float]:
        cfg = self.config
        train, val, xt, yt, xv, yv = self._tokens(run)
        if cfg.task is None:
            classes = [num_classes(train, yt, yv)]
        else:
            yt, yv = task_of(train, cfg.task), task_of(val, cfg.task)
            classes = [task_classes(train.dataset, cfg.task, yt, yv)]
        pretrained = copy.deepcopy(run.predictor)
        (predicted,) = self._tune(run, "predictor_finetune", pretrained, cfg.lr * cfg.predictor_lr_scale,
                                  xt, xv, [yt], classes)
        out = {"top1": accuracy(predicted, yv)}
        if cfg.random_baseline:
            with seeded(run, "predictor_finetune", "random_predictor"):
                fresh = run.new_predictor()
            (predicted,) = self._tune(run, "predictor_finetune", fresh, cfg.lr, xt, xv, [yt], classes)
            out["top1_random_predictor"] = accuracy(predicted, yv)
            out["gain"] = out["top1"] - out["top1_random_predictor"]
        return out


class MultitaskPredictor(_PredictorTuning):
    """Multi-task predictor tuning: one finetuned predictor, a learned query and head per task (top-1 per task)."""

    @attrs.frozen
    class Config(TuningConfig):
        #: labelled tasks of the dataset (``labels(task)`` or ``label_names``), e.g. shapes: shape, colour
        tasks: tuple = attrs.field(default=("shape", "colour"), converter=v.as_pair, validator=_tasks)

    def label_tasks(self) -> tuple[str, ...]:
        return tuple(self.config.tasks)

    def evaluate(self, run) -> dict[str, float]:
        cfg = self.config
        train = split(run, "train", cfg.max_train)
        val = split(run, "val", cfg.max_val)
        try:  # before any extraction: a dataset without the tasks fails at once
            train_labels = [task_of(train, t) for t in cfg.tasks]
            val_labels = [task_of(val, t) for t in cfg.tasks]
        except ValueError as exc:
            raise ValueError(f"multitask_predictor: {exc} (set the evaluator's 'tasks')") from None
        _, _, xt, _, xv, _ = self._tokens(run)
        classes = [task_classes(train.dataset, t, yt, yv) for t, yt, yv in zip(cfg.tasks, train_labels, val_labels)]
        predictions = self._tune(run, "multitask_predictor", copy.deepcopy(run.predictor),
                                 cfg.lr * cfg.predictor_lr_scale, xt, xv, train_labels, classes)
        out = {f"top1_{t}": accuracy(p, y) for t, p, y in zip(cfg.tasks, predictions, val_labels)}
        out["top1_mean"] = sum(out.values()) / len(cfg.tasks)
        return out
