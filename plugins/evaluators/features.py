"""Frozen-encoder features (no grad, eval mode) and whole-image predictions.

Features are cached in the run's cache so that several evaluators on one run
extract once; the key holds the encoder's identity and parameter versions, so
weights changed in place invalidate it.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

from jepa_core.api import normalize
from jepa_core.plugins.evaluators.subsets import Split, loader, to_pixels


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
    store = run.cache
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
