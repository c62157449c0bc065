"""Shared machinery of the built-in evaluators (no hooks here: see plugins/evaluators.py).

* deterministic subsets of a split and their evaluation loader (centre crops
  from ``build_eval_loader``, never the training augmentations);
* frozen-encoder feature extraction (no grad, eval mode), cached per
  ``TrainedRun`` so that several evaluators on one run extract once; the cache
  is keyed by the encoder's identity and parameter versions, so weights changed
  in place invalidate it;
* an attentive pooler (one learned query per task, as V-JEPA's AttentivePooler)
  and a small seeded mini-batch trainer for heads on cached features.

Every random choice comes from a ``torch.Generator`` seeded with
``mix_seed(run.seed, tag, ...)``; module initialisations run under a forked
RNG seeded the same way, so an evaluator's metrics are a pure function of the
run and its seed.
"""

from __future__ import annotations

import contextlib
import math
import weakref
import zlib
from typing import Any, Callable, Iterator, Sequence

import attrs
import torch
from torch import nn
from torch.utils.data import Subset

from jepa_core.data import build_eval_loader, mix_seed
from jepa_core.views import normalize
from jepa_core.registries.datasets import task_labels
from jepa_core.registries.validators import one_of, positive_int

# --------------------------------------------------------------------------- config helpers


def optional_positive_int(instance: Any, attribute: Any, value: Any) -> None:
    if value is not None:
        positive_int(instance, attribute, value)


def non_negative_int(instance: Any, attribute: Any, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"'{attribute.name}' must be an integer >= 0, got {value!r}", attribute)


def encoder_choice():
    return attrs.field(default="target", validator=one_of("online", "target"))


def int_list(instance: Any, attribute: Any, value: Any) -> None:
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError(f"'{attribute.name}' must be a non-empty list of integers >= 1, got {value!r}", attribute)
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int) or item < 1:
            raise ValueError(f"'{attribute.name}' must be a list of integers >= 1, got {value!r}", attribute)


def tag(name: str) -> int:
    """A stable integer for a string, to separate the random streams of evaluators."""
    return zlib.crc32(name.encode())


def generator(run, *parts: int | str) -> torch.Generator:
    """A CPU generator seeded from the run's seed and ``parts``."""
    ints = [tag(p) if isinstance(p, str) else int(p) for p in parts]
    return torch.Generator().manual_seed(mix_seed(int(run.seed), *ints))


@contextlib.contextmanager
def seeded(run, *parts: int | str) -> Iterator[None]:
    """Run the block (module initialisation) with the global RNGs seeded, then restore them."""
    ints = [tag(p) if isinstance(p, str) else int(p) for p in parts]
    devices = [run.device] if run.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(mix_seed(int(run.seed), *ints))
        yield


@contextlib.contextmanager
def eval_mode(*modules: nn.Module) -> Iterator[None]:
    """Put ``modules`` in eval mode for the block and restore their training flags after."""
    flags = [[m.training for m in module.modules()] for module in modules]
    for module in modules:
        module.eval()
    try:
        yield
    finally:
        for module, saved in zip(modules, flags):
            for m, flag in zip(module.modules(), saved):
                m.training = flag


# --------------------------------------------------------------------------- data


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


_CACHE: dict[int, dict] = {}


def _split_cache(run) -> dict:
    """This run's cache (datasets, features); dropped when the run object is garbage-collected.

    Keyed by ``id(run)`` (a ``TrainedRun`` compares by value, so it is not
    hashable) with a finalizer so a later object reusing the id starts empty.
    """
    key = id(run)
    if key not in _CACHE:
        _CACHE[key] = {}
        weakref.finalize(run, _CACHE.pop, key, None)
    return _CACHE[key]


def split(run, name: str, max_n: int | None) -> Split:
    """Split ``name`` of the run's dataset, subsampled to ``max_n`` images without replacement.

    The subset depends only on (run seed, split, max_n), so evaluators asking
    for the same size see the same images (and share cached features).
    """
    store = _split_cache(run)
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
    """Classes of ``task``: its ``class_names`` when the dataset lists them, else the labels seen."""
    names = getattr(ds, "class_names", None)
    seen = max(int(t.max()) for t in label_sets if t.numel()) + 1
    if isinstance(names, dict) and task in names:
        return max(len(names[task]), seen)
    return seen


def num_classes(data: Split, *label_sets: torch.Tensor) -> int:
    known = getattr(data.dataset, "num_classes", None)
    seen = max(int(t.max()) for t in label_sets if t.numel()) + 1
    return max(int(known), seen) if isinstance(known, int) else seen


# --------------------------------------------------------------------------- features


def encoder_of(run, which: str) -> nn.Module:
    return run.target_encoder if which == "target" else run.encoder


def _fingerprint(module: nn.Module) -> tuple:
    return (id(module),) + tuple(t._version for t in list(module.parameters()) + list(module.buffers()))


#: tokens of a split are kept (to serve both token and pooled requests) up to this size
TOKEN_CACHE_BYTES = 1 << 30


@torch.no_grad()
def features(run, encoder: nn.Module, data: Split, *, tokens: bool, batch_size: int = 128,
             num_workers: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Frozen features and labels of every image of ``data``, on the CPU, in subset order.

    ``tokens``: (N, T, D) all patch tokens; otherwise (N, D) average-pooled.
    Labels are the loader's (the dataset's main label). Extracted once per run:
    the cache is keyed by the encoder's identity and parameter versions, the
    split and its indices; all tokens are kept when they fit in
    ``TOKEN_CACHE_BYTES`` so pooled and token requests share one extraction.
    """
    store = _split_cache(run)
    base = (_fingerprint(encoder), data.name, data.indices, run.config.data.image_size)
    if (base, True) in store:
        feats, labels = store[(base, True)]
        return (feats if tokens else feats.mean(dim=1)), labels
    if not tokens and (base, False) in store:
        return store[(base, False)]
    out, labels = [], []
    keep_tokens = tokens
    with eval_mode(encoder):
        for batch in loader(run, data, batch_size, num_workers):
            # pooled on the CPU either way, so a result never depends on which request came first
            feats = encoder(normalize(to_pixels(batch["image"], run.device))).float().cpu()
            if not out:  # decide once, from the first batch's size
                keep_tokens = tokens or feats[0].numel() * 4 * len(data) <= TOKEN_CACHE_BYTES
            out.append(feats if keep_tokens else feats.mean(dim=1))
            labels.append(torch.as_tensor(batch["label"], dtype=torch.long))
    result = (torch.cat(out), torch.cat(labels))
    store[(base, keep_tokens)] = result
    if keep_tokens and not tokens:
        return result[0].mean(dim=1), result[1]
    return result


def standardise(train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    mean = train.mean(dim=0, keepdim=True)
    std = train.std(dim=0, keepdim=True).clamp_min(1e-6)
    return [(t - mean) / std for t in (train, *others)]


def full_indices(grid_tokens: int, batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """context_idx (B, N) and target_idx (B, 1, N): every token as context and as one target block."""
    idx = torch.arange(grid_tokens, device=device)
    return idx.expand(batch, -1), idx.view(1, 1, -1).expand(batch, 1, -1)


def predict_all(run, predictor: nn.Module, tokens: torch.Tensor, action: torch.Tensor | None = None) -> torch.Tensor:
    """The predictor asked for every token of the image from every token: (B, N, D).

    ``action`` defaults to the views' null action (the untransformed image).
    """
    batch, n, _ = tokens.shape
    context_idx, target_idx = full_indices(n, batch, tokens.device)
    if action is None:
        action = run.views.null_action(batch, tokens.device)
    return predictor(tokens, context_idx, target_idx, action.to(tokens.device))[:, 0]


# --------------------------------------------------------------------------- heads


class AttentivePooler(nn.Module):
    """Cross-attention pooling (V-JEPA's AttentivePooler, one block): learned queries attend to the tokens.

    ``n_queries`` queries give (B, n_queries, D); the multi-task evaluator uses
    one query per task.
    """

    def __init__(self, dim: int, heads: int, n_queries: int = 1, mlp_ratio: float = 4.0):
        super().__init__()
        self.query = nn.Parameter(torch.zeros(1, n_queries, dim))
        self.norm_q = nn.LayerNorm(dim, eps=1e-6)
        self.norm_kv = nn.LayerNorm(dim, eps=1e-6)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm_mlp = nn.LayerNorm(dim, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        nn.init.trunc_normal_(self.query, std=0.02)
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        q = self.query.expand(tokens.shape[0], -1, -1)
        kv = self.norm_kv(tokens)
        q = q + self.attn(self.norm_q(q), kv, kv, need_weights=False)[0]
        return q + self.mlp(self.norm_mlp(q))


def pick_heads(dim: int, wanted: int | None, fallback: int) -> int:
    if wanted is not None:
        if dim % wanted:
            raise ValueError(f"'heads' ({wanted}) must divide the feature width {dim}")
        return wanted
    for h in (fallback, 8, 4, 2, 1):
        if h and dim % h == 0:
            return h
    return 1


class AttentiveClassifier(nn.Module):
    """Attentive pooler then one linear head per task: (B, T, D) -> list of logits."""

    def __init__(self, dim: int, heads: int, classes: Sequence[int]):
        super().__init__()
        self.pooler = AttentivePooler(dim, heads, n_queries=len(classes))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.heads = nn.ModuleList(nn.Linear(dim, c) for c in classes)
        for head in self.heads:
            nn.init.trunc_normal_(head.weight, std=0.02)
            nn.init.zeros_(head.bias)

    def forward(self, tokens: torch.Tensor) -> list[torch.Tensor]:
        pooled = self.norm(self.pooler(tokens))
        return [head(pooled[:, i]) for i, head in enumerate(self.heads)]


def fit(groups: list[dict], loss_fn: Callable[[torch.Tensor], torch.Tensor], n: int, *, epochs: int,
        batch_size: int, g: torch.Generator, weight_decay: float = 0.0,
        train_modules: Sequence[nn.Module] = ()) -> None:
    """Mini-batch AdamW over ``n`` samples, cosine lr decay; ``loss_fn(indices) -> loss``.

    The sample order of every epoch comes from ``g``; ``train_modules`` are in
    train mode while fitting and in eval mode after.
    """
    optimiser = torch.optim.AdamW(groups, weight_decay=weight_decay)
    for group in optimiser.param_groups:
        group["base_lr"] = group["lr"]
    steps_per_epoch = max(1, math.ceil(n / batch_size))
    total = epochs * steps_per_epoch
    step = 0
    for module in train_modules:
        module.train()
    for _ in range(epochs):
        order = torch.randperm(n, generator=g)
        for start in range(0, n, batch_size):
            scale = 0.5 * (1.0 + math.cos(math.pi * step / total))
            for group in optimiser.param_groups:
                group["lr"] = group["base_lr"] * scale
            loss = loss_fn(order[start:start + batch_size])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            step += 1
    for module in train_modules:
        module.eval()


@torch.no_grad()
def predict_batches(fn: Callable[[torch.Tensor], list[torch.Tensor] | torch.Tensor], n: int,
                    batch_size: int) -> list[torch.Tensor]:
    """Argmax predictions of ``fn(indices)`` (logits or a list of logits) over ``n`` samples."""
    outs: list[list[torch.Tensor]] = []
    for start in range(0, n, batch_size):
        logits = fn(torch.arange(start, min(n, start + batch_size)))
        logits = logits if isinstance(logits, list) else [logits]
        outs.append([lg.argmax(dim=-1).cpu() for lg in logits])
    return [torch.cat(parts) for parts in zip(*outs)]


def accuracy(predicted: torch.Tensor, labels: torch.Tensor) -> float:
    return float((predicted == labels.cpu()).float().mean()) if labels.numel() else float("nan")

