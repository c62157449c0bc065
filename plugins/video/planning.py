"""Evaluators of action-conditioned world models: ``plan`` (CEM planning to goals) and ``rollout``.

``plan`` acts in an environment with the cross-entropy method, as V-JEPA 2-AC
does: sample action sequences, roll the predictor out from the current frame's
features, score each by the L1 distance between the last predicted frame and
the goal frame's features, refit the sampling distribution to the best
(``elites``), and take the first ``replan`` actions of the final mean. Random
and zero actions run on the same episodes, so success means something.

``rollout`` predicts every later frame of validation clips from the first
frame and the recorded actions, beside repeating the first frame.
"""

from __future__ import annotations

import attrs
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

from jepa_core.api import Evaluator, mix_seed, normalize, validators as v


def embed(run, frames: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> layer-normed target features (B, N, D), at the run's image size.

    Each frame goes in as a clip of one frame, which a frame-wise encoder of either kind encodes.
    """
    size = run.config.data.image_size
    if frames.shape[-1] != size:
        frames = TF.resize(frames, [size, size], antialias=True)
    features = run.target_encoder(normalize(frames[:, None].to(run.device).float().div_(255.0)))
    return F.layer_norm(features.float(), features.shape[-1:])


def project(actions: torch.Tensor, max_step: float) -> torch.Tensor:
    """Continuous actions cut to norm ``max_step``."""
    norm = actions.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return actions * (max_step / norm).clamp(max=1.0)


class Planner:
    """CEM over action sequences in the predictor's feature space."""

    def __init__(self, config, predictor, env, generator: torch.Generator):
        self.config, self.predictor, self.env, self.generator = config, predictor, env, generator

    def _sample(self, mean: torch.Tensor, spread: torch.Tensor) -> torch.Tensor:
        cfg, env = self.config, self.env
        if env.discrete:  # mean holds per-step probabilities of each one-hot action
            choice = torch.multinomial(mean.repeat(cfg.samples, 1), 1, generator=self.generator)
            return F.one_hot(choice.view(cfg.samples, cfg.horizon), env.action_dim).float()
        noise = torch.randn(cfg.samples, cfg.horizon, env.action_dim, generator=self.generator)
        return project(mean + spread * noise, env.max_step)

    def energies(self, z: torch.Tensor, goal: torch.Tensor, actions: torch.Tensor,
                 state: torch.Tensor | None) -> torch.Tensor:
        """L1 distance of each sequence's last predicted frame to the goal features."""
        n = actions.shape[0]
        states = None if state is None else state.view(1, 1, -1).expand(n, actions.shape[1], -1)
        predicted = self.predictor.rollout(z.expand(n, -1, -1, -1), actions, states, actions.shape[1])
        return (predicted[:, -1] - goal).abs().mean(dim=(1, 2))

    @torch.no_grad()
    def plan(self, z: torch.Tensor, goal: torch.Tensor, state: torch.Tensor | None) -> torch.Tensor:
        """(horizon, action_dim) actions from the current frame's features (1, 1, N, D) to the goal's (1, N, D)."""
        cfg, env = self.config, self.env
        if env.discrete:
            mean, spread = torch.full((cfg.horizon, env.action_dim), 1.0 / env.action_dim), None
        else:
            shape = (cfg.horizon, env.action_dim)
            mean, spread = torch.zeros(shape), torch.full(shape, env.max_step)
        for _ in range(cfg.iterations):
            actions = self._sample(mean, spread)
            energy = self.energies(z, goal, actions.to(z.device), state).cpu()
            elites = actions[energy.topk(cfg.elites, largest=False).indices]
            if env.discrete:  # refit the probabilities, keeping every action possible
                mean = 0.9 * elites.mean(dim=0) + 0.1 / env.action_dim
            else:
                mean, spread = elites.mean(dim=0), elites.std(dim=0).clamp_min(1e-3)
        if env.discrete:
            return F.one_hot(mean.argmax(dim=-1), env.action_dim).float()
        return project(mean, env.max_step)


class Plan(Evaluator):
    """Success rate of CEM planning to goal images, beside random and zero actions on the same episodes."""

    needs = frozenset({"world_model"})
    data = "clips"

    @attrs.frozen
    class Config:
        #: an environment name; its keys the run's dataset shares are taken from data.dataset
        environment: str = "moving_shapes"
        #: environment keys set here win over the dataset's
        environment_params: dict = attrs.field(factory=dict)
        episodes: int = attrs.field(default=30, validator=v.positive_int)
        #: actions taken per episode
        max_steps: int = attrs.field(default=10, validator=v.positive_int)
        horizon: int = attrs.field(default=2, validator=v.positive_int)
        samples: int = attrs.field(default=128, validator=v.positive_int)
        iterations: int = attrs.field(default=3, validator=v.positive_int)
        elites: int = attrs.field(default=16, validator=v.positive_int)
        #: actions taken from each plan before planning again
        replan: int = attrs.field(default=1, validator=v.positive_int)
        #: an episode succeeds when it ends this close to the goal state
        success_distance: float = attrs.field(default=0.1, validator=v.positive)
        seed: int = attrs.field(default=0, validator=v.non_negative)

        def __attrs_post_init__(self):
            if self.elites > self.samples:
                raise ValueError(f"'elites' ({self.elites}) must be at most 'samples' ({self.samples})",
                                 attrs.fields(type(self)).elites)
            if self.replan > self.horizon:
                raise ValueError(f"'replan' ({self.replan}) must be at most 'horizon' ({self.horizon})",
                                 attrs.fields(type(self)).replan)

    def evaluate(self, run) -> dict[str, float]:
        cfg = self.config
        env = run.environment(cfg.environment, **cfg.environment_params)
        out: dict[str, float] = {}
        for policy in ("plan", "random", "zero"):
            distances = [self._episode(run, env, policy, mix_seed(cfg.seed, episode))
                         for episode in range(cfg.episodes)]
            prefix = "" if policy == "plan" else f"{policy}_"
            out[f"{prefix}success"] = sum(d < cfg.success_distance for d in distances) / len(distances)
            out[f"{prefix}final_distance"] = sum(distances) / len(distances)
        return out

    def _episode(self, run, env, policy: str, seed: int) -> float:
        cfg = self.config
        episode = env.reset(seed)
        g = torch.Generator().manual_seed(seed)
        state = episode["state"]
        if policy == "plan":
            planner = Planner(cfg, run.predictor, env, g)
            goal = embed(run, episode["goal"][None])
            observation, taken, uses_state = episode["observation"], 0, run.predictor.state_dim > 0
            while taken < cfg.max_steps:
                z = embed(run, observation[None])[:, None]
                actions = planner.plan(z, goal, state.to(run.device) if uses_state else None)
                for action in actions[: min(cfg.replan, cfg.max_steps - taken)]:
                    step = env.step(action)
                    observation, state, taken = step["observation"], step["state"], taken + 1
        else:
            actions = env.random_actions(cfg.max_steps, g)
            if policy == "zero":
                actions = torch.zeros_like(actions)
                if env.discrete:
                    actions[:, 0] = 1.0  # the first one-hot action is "stay"
            for action in actions:
                state = env.step(action)["state"]
        return env.distance(state, episode["goal_state"])


class Rollout(Evaluator):
    """Multi-step prediction error from the first frame and the recorded actions, beside repeating that frame."""

    needs = frozenset({"world_model"})
    data = "clips"

    @attrs.frozen
    class Config:
        clips: int = attrs.field(default=64, validator=v.positive_int)
        batch_size: int = attrs.field(default=32, validator=v.positive_int)

    @torch.no_grad()
    def evaluate(self, run) -> dict[str, float]:
        dataset = run.dataset("val")
        n = min(self.config.clips, len(dataset))
        errors, copies = [], []
        for start in range(0, n, self.config.batch_size):
            items = [dataset[i][0] for i in range(start, min(start + self.config.batch_size, n))]
            frames = torch.stack([item["frames"] for item in items])
            actions = torch.stack([item["actions"] for item in items]).to(run.device)
            states = torch.stack([item["states"] for item in items]).to(run.device) if run.predictor.state_dim else None
            h = embed(run, frames.flatten(0, 1)).unflatten(0, frames.shape[:2])
            predicted = run.predictor.rollout(h[:, :1], actions, states, h.shape[1] - 1)
            errors.append((predicted - h[:, 1:]).abs().mean(dim=(2, 3)))
            copies.append((h[:, :1] - h[:, 1:]).abs().mean(dim=(2, 3)))
        error, copy = torch.cat(errors).mean(dim=0), torch.cat(copies).mean(dim=0)
        return {"error_first": error[0].item(), "error_last": error[-1].item(),
                "copy_error_first": copy[0].item(), "copy_error_last": copy[-1].item(),
                "ratio_last": (error[-1] / copy[-1]).item()}
