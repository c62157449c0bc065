"""``ac_vit``: V-JEPA 2-AC's action-conditioned predictor, a frame-causal ViT over frame features.

Every time step contributes an action token, a state token (when the data has
states) and the frame's patch tokens. A block-causal mask lets every token of
step t attend to all tokens of steps <= t and none later, so output t predicts
frame t + 1 from the past alone and one pass trains every step (teacher
forcing). The action and state tokens are dropped at the output, and the
outputs are layer-normed like the targets they are compared with.

Deviation: V-JEPA 2-AC places tokens with 3-D RoPE; here the frame tokens get
fixed 3-D sin-cos positions (time, row, col) and the action and state tokens the
1-D sin-cos of their step, so the predictor reuses timm's ``Block`` unchanged.
"""

from __future__ import annotations

from functools import partial

import attrs
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import nn

from jepa_core.api import ActionConditionedPredictor, init_vit_weights, sincos_1d, sincos, validators as v


def block_causal_mask(steps: int, tokens_per_step: int) -> torch.Tensor:
    """(L, L) bool, True where attention is allowed: token i sees token j iff step(j) <= step(i)."""
    step = torch.arange(steps * tokens_per_step) // tokens_per_step
    return step[:, None] >= step[None, :]


class ACPredictor(ActionConditionedPredictor):
    """Frame-causal ViT predictor with per-step action and state tokens (see the module docstring)."""

    @attrs.frozen
    class Config:
        #: entries of each action (moving_shapes: 2 continuous, 5 discrete)
        action_dim: int = attrs.field(validator=v.positive_int)
        #: entries of each state; 0: no state tokens
        state_dim: int = attrs.field(default=0, validator=v.non_negative)
        depth: int = attrs.field(default=4, validator=v.positive_int)
        width: int = attrs.field(default=192, validator=v.positive_int)
        heads: int = attrs.field(default=4, validator=v.positive_int)
        mlp_ratio: float = attrs.field(default=4.0, validator=v.positive)
        #: the longest clip (context plus predicted frames) it positions
        frames: int = attrs.field(default=16, validator=v.positive_int)
        #: steps of the rollout loss (V-JEPA 2-AC: 2)
        auto_steps: int = attrs.field(default=2, validator=v.positive_int)
        #: predict the change from the current frame's features (true) or the next frame's (false: V-JEPA 2-AC)
        residual: bool = False

        def __attrs_post_init__(self):
            if self.width % self.heads or self.width % 8:
                raise ValueError(f"'width' ({self.width}) must be divisible by 'heads' ({self.heads}) and by 8",
                                 attrs.fields(type(self)).width)

    def __init__(self, config: Config, embed_dim: int, grid: tuple[int, ...], conditioner):
        super().__init__()
        if len(grid) == 3 and grid[0] == 1:  # a one-tubelet video encoder: frame by frame too
            grid = grid[1:]
        if len(grid) != 2:
            raise ValueError("ac_vit predicts frame features: use an encoder that encodes a clip frame by frame "
                             "(encoder.frames unset, or equal to encoder.tubelet)")
        if conditioner.uses_action:
            raise ValueError("ac_vit conditions on the clips' own actions; set conditioning to none")
        self.config = config
        self.action_dim, self.state_dim, self.auto_steps = config.action_dim, config.state_dim, config.auto_steps
        width = config.width
        self.tokens_per_frame = grid[0] * grid[1]
        self.extra_tokens = 1 + (config.state_dim > 0)
        self.embed = nn.Linear(embed_dim, width)
        self.action_embed = nn.Linear(config.action_dim, width)
        self.state_embed = nn.Linear(config.state_dim, width) if config.state_dim else None
        self.register_buffer("frame_pos", sincos(width, (config.frames, *grid)).view(
            config.frames, self.tokens_per_frame, width), persistent=False)
        self.register_buffer("step_pos", sincos_1d(width, torch.arange(config.frames)), persistent=False)
        self.blocks = nn.ModuleList([
            Block(width, config.heads, config.mlp_ratio, qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6))
            for _ in range(config.depth)
        ])
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.proj = nn.Linear(width, embed_dim)
        init_vit_weights(self, self.blocks)

    @classmethod
    def conditioning_width(cls, config: Config, embed_dim: int) -> int:
        return config.width

    def forward(self, frames, actions, states):
        batch, steps, n, _ = frames.shape
        if steps > self.config.frames:
            raise ValueError(f"ac_vit was built for clips of up to {self.config.frames} frames "
                             f"(predictor.frames), got {steps}")
        step_pos = self.step_pos[:steps, None]
        parts = [self.action_embed(actions[:, :steps, None].to(frames.dtype)) + step_pos]
        if self.state_embed is not None:
            parts.append(self.state_embed(states[:, :steps, None].to(frames.dtype)) + step_pos)
        parts.append(self.embed(frames) + self.frame_pos[:steps])
        x = torch.cat(parts, dim=2).flatten(1, 2)  # step-major: [a_0, s_0, frame_0, a_1, ...]
        mask = block_causal_mask(steps, self.extra_tokens + n).to(x.device)
        for block in self.blocks:
            x = block(x, attn_mask=mask)
        x = x.view(batch, steps, self.extra_tokens + n, -1)[:, :, self.extra_tokens:]
        out = self.proj(self.norm(x))
        if self.config.residual:
            out = out + frames
        return F.layer_norm(out, out.shape[-1:])
