"""Our I-JEPA step against a peer: the same step written as the official training loop writes it.

The peer (``OfficialStep``) has the official modules (``jepa_core.bench.official``:
plain attention), the same sizes as the bench recipe, and does what the
official ``train.py`` does per step: masks from a per-image, per-block Python
loop (``reference_multiblock``, the style of its ``MaskCollator``), the target
encoder on the whole image, layer norm, then one ``apply_masks`` gather per
target block concatenated mask-major; the context encoder on its gathered
tokens; the predictor on the context repeated once per target block; smooth L1;
plain ``torch.optim.AdamW``; and the EMA as a Python loop over parameters, in
fp32. Ours is the bench recipe's Trainer with ``train.precision: auto``. The
two take turns, each step index's faster run counting.
"""

from __future__ import annotations

import copy
import statistics

import torch
import torch.nn.functional as F

from jepa_core.bench.masking import reference_multiblock
from jepa_core.bench.official import VisionTransformer, VisionTransformerPredictor
from jepa_core.bench.train_step import BATCH, _images, take_turns, trainer
from jepa_core.views import normalize

REPEATS = 4


def _gather(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Upstream ``apply_masks`` for one mask: the tokens at ``idx`` (B, K) of x (B, N, D)."""
    return torch.gather(x, 1, idx.unsqueeze(-1).repeat(1, 1, x.size(-1)))


class OfficialStep:
    """One official-loop training step on the same model sizes and masking as ``ours``."""

    def __init__(self, ours):
        enc = ours.exp.encoder
        vit = enc.vit
        patch, depth, heads = vit.patch_embed.patch_size[0], len(vit.blocks), vit.blocks[0].attn.num_heads
        cfg = ours.exp.config.predictor.params
        self.grid, self.mask_config = enc.grid, ours.exp.views.masking.config
        self.encoder = VisionTransformer(enc.grid, patch, enc.embed_dim, depth, heads, seed=0)
        self.predictor = VisionTransformerPredictor(enc.grid, enc.embed_dim, cfg["width"], cfg["depth"],
                                                    cfg["heads"], seed=1)
        self.target = copy.deepcopy(self.encoder).requires_grad_(False)
        self.optimizer = torch.optim.AdamW(list(self.encoder.parameters()) + list(self.predictor.parameters()),
                                           lr=1e-4, weight_decay=0.04)
        self.momentum = 0.996

    def __call__(self, images: torch.Tensor, step: int) -> torch.Tensor:
        x = normalize(images.float().div_(255.0))
        masks = reference_multiblock(self.mask_config, self.grid, x.shape[0], torch.Generator().manual_seed(step))
        masks = masks.to(x.device, non_blocking=True)  # the collator's CPU masks, moved as train.py moves them
        masks_pred = list(masks.targets.unbind(1))
        with torch.no_grad():
            h = F.layer_norm(self.target(x), (self.target.norm.normalized_shape[0],))
            h = torch.cat([_gather(h, m) for m in masks_pred])  # mask-major
        z = self.encoder(x, masks.context)
        context = masks.context.repeat(len(masks_pred), 1)
        z = self.predictor(z.repeat(len(masks_pred), 1, 1), context, torch.cat(masks_pred))
        loss = F.smooth_l1_loss(z, h)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        with torch.no_grad():
            for param_q, param_k in zip(self.encoder.parameters(), self.target.parameters()):
                param_k.data.mul_(self.momentum).add_((1.0 - self.momentum) * param_q.detach().data)
        return loss


def run(device: str) -> list[dict]:
    ours = trainer("ijepa", device, precision="auto")
    peer = OfficialStep(ours)
    for module in (peer.encoder, peer.predictor, peer.target):
        module.to(device)
    images = _images(device)
    sides = {"ours": lambda step: ours.train_step(images, step, 1000, 1e-4, 0.04), "peer": lambda step: peer(images, step)}
    _, seconds = take_turns(sides, device, REPEATS)
    ours_s, peer_s = statistics.median(seconds["ours"]), statistics.median(seconds["peer"])
    bf16 = ours.precision.name == "bf16"
    return [{"suite": "peer", "name": f"ijepa step ViT-Ti/16 224px batch {BATCH}: ours ({ours.precision.name}) "
                                      "vs the official loop's (fp32)",
             "value": BATCH / ours_s, "unit": "img/s", "reference": BATCH / peer_s, "ratio": peer_s / ours_s,
             "target": ">= 2.5x on CPU (ours in bf16)" if bf16 else ">= 1.3x on CPU (fp32)"}]
