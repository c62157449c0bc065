"""``moving_shapes``: an agent shape moved by actions on a textured canvas, as clips and as an environment.

The world is the ``shapes`` renderer's: a muted background of smooth noise,
stripes or checks, here with a red square agent (larger than a patch: a
sub-patch agent left planning at 0.13 success in a feasibility run) and
optional distractor shapes that drift on their own, whatever the actions.

* Actions are the agent's displacement in image units (the image is the unit
  square): ``continuous`` draws them uniformly from the disc of radius
  ``max_step``; ``discrete`` takes one of stay, up, down, left, right (a one-hot
  of 5) and moves ``max_step``. The agent stays inside the image (the state is
  clamped, the recorded action is the one taken).
* States are the agent's centre (y, x).

Clip i of a split is drawn from a generator seeded with a mix of (seed, split,
i), so it never changes and costs no disk. The environment renders the same
world from ``reset(seed)``, so a planner trained on the clips is tested on it.
"""

from __future__ import annotations

import math

import attrs
import torch

from jepa_core.api import SPLITS, check_split, splitmix64, validators as v
from jepa_core.plugins.data.synthetic import PALETTE, SHAPES, Rendered, Shapes
from jepa_core.plugins.video.planning import project

#: discrete actions, in one-hot order: (dy, dx) directions
MOVES = ((0.0, 0.0), (-1.0, 0.0), (1.0, 0.0), (0.0, -1.0), (0.0, 1.0))
_AGENT = {"shape": SHAPES.index("square"), "colour": list(PALETTE).index("red"), "angle": math.pi / 4}
_DISTRACTOR_COLOURS = [list(PALETTE).index(c) for c in ("cyan", "yellow", "magenta", "green")]


def _int_in(low: int, high: int):
    return attrs.validators.and_(attrs.validators.instance_of(int), v.in_range(low, high))


@attrs.frozen
class WorldConfig:
    """The keys the clips and the environment share (their world)."""

    size: int = attrs.field(default=32, validator=_int_in(8, 4096))
    #: the agent's side, in image sides (keep it above one patch)
    agent_size: float = attrs.field(default=0.35, validator=v.in_range(0.05, 0.9))
    #: the largest displacement one action makes, in image sides
    max_step: float = attrs.field(default=0.15, validator=v.in_range(0.0, 1.0))
    actions: str = attrs.field(default="continuous", validator=v.one_of("continuous", "discrete"))
    #: shapes that drift on their own; the actions do not move them
    distractors: int = attrs.field(default=0, validator=_int_in(0, 4))


class World:
    """Draws and renders episodes of the moving-shapes world."""

    def __init__(self, config: WorldConfig):
        self.config = config
        self._painter = Shapes(Shapes.Config(size=config.size))
        self.radius = config.agent_size / math.sqrt(2)  # the square's circumscribed radius
        self.action_dim = 2 if config.actions == "continuous" else len(MOVES)

    def scene(self, g: torch.Generator) -> dict:
        """A painted background (``canvas``: it never moves) and distractors (position, velocity, shape,
        colour), drawn from ``g``."""
        u = torch.rand(32 + 8 * self.config.distractors, generator=g).tolist()
        background = {"background": min(int(u[0] * 3), 2), "bg_colours": [0.12 + 0.6 * x for x in u[1:7]],
                      "bg_angle": u[7] * math.pi, "bg_freq": 2 + 6 * u[8], "bg_phase": u[9] * 2 * math.pi,
                      "noise": u[16:32]}
        distractors = []
        for k in range(self.config.distractors):
            a = u[32 + 8 * k: 40 + 8 * k]
            distractors.append({
                "shape": (SHAPES.index("circle"), SHAPES.index("triangle"), SHAPES.index("cross"))[int(a[0] * 3) % 3],
                "colour": _DISTRACTOR_COLOURS[k % len(_DISTRACTOR_COLOURS)],
                "radius": 0.12, "angle": a[1] * 2 * math.pi,
                "centre": (0.12 + 0.76 * a[2], 0.12 + 0.76 * a[3]),
                "velocity": (self.config.max_step * (2 * a[4] - 1), self.config.max_step * (2 * a[5] - 1)),
            })
        return {"canvas": self._painter._background(background), "distractors": distractors}

    def start(self, g: torch.Generator) -> torch.Tensor:
        """A uniform agent position (y, x) inside the image."""
        return self.radius + (1 - 2 * self.radius) * torch.rand(2, generator=g)

    def random_actions(self, n: int, g: torch.Generator) -> torch.Tensor:
        """(n, action_dim) actions: uniform in the disc of radius max_step, or uniform discrete moves."""
        if self.config.actions == "discrete":
            return torch.nn.functional.one_hot(torch.randint(len(MOVES), (n,), generator=g), len(MOVES)).float()
        angle = 2 * math.pi * torch.rand(n, generator=g)
        norm = self.config.max_step * torch.rand(n, generator=g).sqrt()
        return torch.stack([norm * torch.sin(angle), norm * torch.cos(angle)], dim=1)

    def displacement(self, action: torch.Tensor) -> torch.Tensor:
        """(.., 2) displacement of (.., action_dim) actions; continuous ones are cut to norm max_step."""
        if self.config.actions == "discrete":
            return self.config.max_step * action.float() @ torch.tensor(MOVES)
        return project(action, self.config.max_step)

    def move(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return (state + self.displacement(action)).clamp(self.radius, 1 - self.radius)

    def drift(self, scene: dict) -> None:
        """Move the distractors one step, bouncing off the edges."""
        for d in scene["distractors"]:
            (y, x), (vy, vx) = d["centre"], d["velocity"]
            y, vy = _bounce(y + vy, vy, d["radius"])
            x, vx = _bounce(x + vx, vx, d["radius"])
            d["centre"], d["velocity"] = (y, x), (vy, vx)

    def render(self, scene: dict, state: torch.Tensor) -> torch.Tensor:
        """uint8 (3, size, size): background, distractors, then the agent on top."""
        painter = self._painter
        img = scene["canvas"].clone()
        for d in scene["distractors"]:
            img = painter._draw(img, d)
        img = painter._draw(img, {**_AGENT, "radius": self.radius, "centre": tuple(state.tolist())})
        return img.mul_(255).round_().clamp_(0, 255).to(torch.uint8)


def _bounce(position: float, velocity: float, radius: float) -> tuple[float, float]:
    if position < radius or position > 1 - radius:
        velocity = -velocity
        position = min(max(position, radius), 1 - radius)
    return position, velocity


class MovingShapes(torch.utils.data.Dataset):
    """Clips of the moving-shapes world with the actions taken and the agent's states (see the module docstring)."""

    @attrs.frozen
    class Config(WorldConfig):
        frames: int = attrs.field(default=4, validator=_int_in(2, 256))
        train_size: int = attrs.field(default=4096, validator=v.positive_int)
        val_size: int = attrs.field(default=512, validator=v.positive_int)
        seed: int = attrs.field(default=0, validator=_int_in(0, 2**31 - 1))

    num_classes = 1  # no label: clips are for world models and planning

    def __init__(self, config: Config | None = None, split: str = "train"):
        check_split(split)
        self.config = config or self.Config()
        self.split = split
        self.world = World(self.config)
        self.frames = self.config.frames
        self.action_dim = self.world.action_dim
        self.state_dim = 2
        self.length = self.config.train_size if split == "train" else self.config.val_size
        self._rendered = Rendered(self.length, self.frames * 3 * self.config.size**2)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[dict[str, torch.Tensor], int]:
        return self._rendered.get(index, self._clip)

    def _clip(self, index: int) -> tuple[dict[str, torch.Tensor], int]:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.split} split of {self.length}")
        seed = splitmix64(((self.config.seed * 2 + SPLITS.index(self.split)) << 32) + index)
        g = torch.Generator().manual_seed(seed)
        world = self.world
        scene, state = world.scene(g), world.start(g)
        actions = world.random_actions(self.frames - 1, g)
        frames, states = [world.render(scene, state)], [state]
        for action in actions:
            state = world.move(state, action)
            world.drift(scene)
            frames.append(world.render(scene, state))
            states.append(state)
        return {"frames": torch.stack(frames), "actions": actions, "states": torch.stack(states)}, 0


class MovingShapesEnv:
    """The moving-shapes world as an environment: reach the goal image's agent position."""

    @attrs.frozen
    class Config(WorldConfig):
        #: the goal is at least this far from the start (image sides)
        min_goal_distance: float = attrs.field(default=0.25, validator=v.in_range(0.0, 1.4))

    def __init__(self, config: Config | None = None):
        self.config = config or self.Config()
        self.world = World(self.config)
        self.action_dim = self.world.action_dim
        self.discrete = self.config.actions == "discrete"
        self.max_step = self.config.max_step
        self._scene: dict | None = None
        self.state = torch.zeros(2)

    def reset(self, seed: int) -> dict[str, torch.Tensor]:
        """A new episode: observation, goal observation, state and goal state."""
        g = torch.Generator().manual_seed(splitmix64(seed))
        world = self.world
        self._scene = world.scene(g)
        self.state = world.start(g)
        goal = world.start(g)
        for _ in range(100):  # far enough that doing nothing does not reach it
            if (goal - self.state).norm() >= self.config.min_goal_distance:
                break
            goal = world.start(g)
        return {"observation": world.render(self._scene, self.state), "goal": world.render(self._scene, goal),
                "state": self.state.clone(), "goal_state": goal}

    def step(self, action: torch.Tensor) -> dict[str, torch.Tensor]:
        if self._scene is None:
            raise RuntimeError("call reset(seed) before step(action)")
        self.state = self.world.move(self.state, action.detach().cpu().float())
        self.world.drift(self._scene)
        return {"observation": self.world.render(self._scene, self.state), "state": self.state.clone()}

    def distance(self, state: torch.Tensor, goal_state: torch.Tensor) -> float:
        """Euclidean distance between agent positions, in image sides."""
        return float((state - goal_state).norm())

    def random_actions(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return self.world.random_actions(n, generator)
