"""The checkpoint the official I-JEPA training loop saves, for the interop tests (modules: jepa_core.bench.official)."""

from __future__ import annotations

import torch



def official_checkpoint(encoder, predictor, target_encoder) -> dict:
    """The dict the official training loop saves (under DDP, hence ``module.``)."""
    parts = (("encoder", encoder), ("predictor", predictor), ("target_encoder", target_encoder))
    prefixed = {name: {f"module.{k}": v for k, v in m.state_dict().items()} for name, m in parts}
    return {**prefixed, "opt": torch.optim.AdamW(encoder.parameters()).state_dict(), "scaler": None,
            "epoch": 300, "loss": 0.1, "batch_size": 128, "world_size": 16, "lr": 1e-6}
