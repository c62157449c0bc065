"""Clips, the video encoder, the action-conditioned predictor and the checks a clip run gets before training."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from jepa_core.config import ConfigError, load_config
from jepa_core.encoder import Encoder, sincos_3d
from jepa_core.experiment import build_experiment
from jepa_core.plugins.video.ac_predictor import ACPredictor, block_causal_mask
from jepa_core.plugins.video.moving_shapes import MovingShapes, MovingShapesEnv
from jepa_core.registries.conditioning import Conditioner

pytestmark = pytest.mark.usefixtures("one_thread")

AC = "experiments/moving_shapes_ac.yaml"
SMALL_RUN = ["data.dataset.train_size=32", "data.dataset.val_size=8", "data.num_workers=0", "data.batch_size=8"]


def upstream_mask(T: int, H: int, W: int, add_tokens: int) -> torch.Tensor:
    """V-JEPA 2-AC's build_action_block_causal_attention_mask, written out as its loop."""
    n_t = add_tokens + H * W
    mask = torch.zeros(T * n_t, T * n_t, dtype=torch.bool)
    for t1 in range(T):
        for t2 in range(0, t1 + 1):
            mask[t1 * n_t:(t1 + 1) * n_t, t2 * n_t:(t2 + 1) * n_t] = True
    return mask


@pytest.mark.parametrize("steps, extra", [(1, 1), (3, 1), (4, 2)])
def test_block_causal_mask_is_v_jepa_2_acs(steps, extra):
    assert torch.equal(block_causal_mask(steps, extra + 2 * 3), upstream_mask(steps, 2, 3, extra))


def _predictor(state_dim: int = 0, auto_steps: int = 2) -> ACPredictor:
    torch.manual_seed(0)
    config = ACPredictor.Config(action_dim=2, state_dim=state_dim, depth=2, width=32, heads=2, frames=6,
                                auto_steps=auto_steps)
    return ACPredictor(config, 24, (2, 3), Conditioner(None, 0, 32))


@pytest.mark.parametrize("state_dim", [0, 2])
def test_a_later_frame_leaves_earlier_predictions_unchanged(state_dim):
    predictor = _predictor(state_dim).eval()
    g = torch.Generator().manual_seed(1)
    frames, actions = torch.randn(2, 4, 6, 24, generator=g), torch.randn(2, 4, 2, generator=g)
    states = torch.randn(2, 4, 2, generator=g) if state_dim else None
    before = predictor(frames, actions, states)
    changed = frames.clone()
    changed[:, 2] += 1.0
    other_actions = actions.clone()
    other_actions[:, 2] += 1.0
    after = predictor(changed, other_actions, states)
    assert torch.allclose(before[:, :2], after[:, :2], atol=1e-6)
    assert not torch.allclose(before[:, 2:], after[:, 2:], atol=1e-3)  # and it does read frame 2


def test_rollout_feeds_back_its_own_predictions():
    predictor = _predictor().eval()
    g = torch.Generator().manual_seed(2)
    frames, actions = torch.randn(2, 1, 6, 24, generator=g), torch.randn(2, 3, 2, generator=g)
    rolled = predictor.rollout(frames, actions, None, 3)
    assert rolled.shape == (2, 3, 6, 24)
    first = predictor(frames, actions[:, :1], None)[:, -1]
    second = predictor(torch.cat([frames, first[:, None]], 1), actions[:, :2], None)[:, -1]
    assert torch.allclose(rolled[:, 0], first, atol=1e-6) and torch.allclose(rolled[:, 1], second, atol=1e-5)


def _experiment(*overrides: str):
    return build_experiment(load_config(AC, [*SMALL_RUN, *overrides]))


def test_with_one_auto_step_the_rollout_loss_is_the_teacher_forcing_loss():
    """On two-frame clips both terms predict frame 1 from frame 0: the loss is twice the teacher-forcing loss."""
    from jepa_core.train import Trainer

    exp = _experiment("data.dataset.frames=2", "predictor.auto_steps=1")
    trainer = Trainer(exp, "unused")
    item = exp.dataset("train")[0][0]
    clips = (item["frames"][None].float() / 255).repeat(2, 1, 1, 1, 1)
    actions = item["actions"][None].repeat(2, 1, 1)
    loss = trainer._world_model_loss(clips, actions, None)
    teacher, target = trainer._fit
    assert torch.allclose(loss, 2 * exp.target.loss(teacher.float(), target), atol=1e-6)


def test_moving_shapes_records_the_actions_that_move_the_agent():
    config = MovingShapes.Config(size=32, frames=6, distractors=2)
    data = MovingShapes(config, "train")
    clip, label = data[3]
    clip["frames"].zero_()  # the caller's copy: the next epoch still gets the rendered clip
    again, _ = MovingShapes(config, "train")[3]
    clip, label = data[3]
    assert torch.equal(clip["frames"], again["frames"]) and label == 0
    assert clip["frames"].shape == (6, 3, 32, 32) and clip["frames"].dtype == torch.uint8
    assert clip["actions"].shape == (5, 2) and clip["states"].shape == (6, 2)
    assert bool((clip["actions"].norm(dim=1) <= 0.15 + 1e-6).all())
    expected = (clip["states"][:-1] + clip["actions"]).clamp(data.world.radius, 1 - data.world.radius)
    assert torch.allclose(clip["states"][1:], expected)
    assert not torch.equal(data[4][0]["frames"], clip["frames"])


def test_moving_shapes_discrete_actions_are_one_hot_moves():
    clip, _ = MovingShapes(MovingShapes.Config(actions="discrete", frames=5), "val")[0]
    assert clip["actions"].shape == (4, 5) and torch.equal(clip["actions"].sum(dim=1), torch.ones(4))


def test_the_agent_is_where_the_state_says():
    """The red agent's pixels centre on its state, so a planner can read its position from the frame."""
    data = MovingShapes(MovingShapes.Config(size=64, frames=2), "train")
    clip, _ = data[0]
    img = clip["frames"][0].float() / 255
    red = (img[0] > 0.8) & (img[1] < 0.3) & (img[2] < 0.3)
    ys, xs = red.nonzero(as_tuple=True)
    centre = torch.stack([ys.float().mean(), xs.float().mean()]) / 64 + 0.5 / 64
    assert torch.allclose(centre, clip["states"][0], atol=0.03)
    assert red.float().mean() > 0.35 ** 2 * 0.8  # larger than an 8-px patch at 32 px (0.25)


def test_the_environment_episode_is_a_function_of_its_seed():
    env = MovingShapesEnv()
    first, second = env.reset(7), MovingShapesEnv().reset(7)
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert env.distance(first["state"], first["goal_state"]) >= env.config.min_goal_distance
    towards = first["goal_state"] - first["state"]
    moved = env.step(towards)
    assert (moved["state"] - first["state"]).norm() == pytest.approx(env.max_step, abs=1e-5)
    assert env.distance(moved["state"], first["goal_state"]) < env.distance(first["state"], first["goal_state"])


def test_video_encoder_tokens_are_tubelets_with_v_jepa_positions():
    encoder = Encoder("vit_tiny_patch16_224", 32, depth=1, patch_size=8, frames=4, tubelet=2)
    assert encoder.grid == (2, 4, 4) and encoder(torch.randn(1, 4, 3, 32, 32)).shape == (1, 32, 192)
    with pytest.raises(ValueError, match="clips of 4 frames"):
        encoder(torch.randn(1, 6, 3, 32, 32))


def _upstream_3d_sincos(dim: int, size: int, depth: int, uniform_power: bool) -> np.ndarray:
    """V-JEPA's get_3d_sincos_pos_embed, from its description (numpy)."""
    def one(d, pos):
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=float) / (d / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    h, d, w = np.meshgrid(np.arange(size, dtype=float), np.arange(depth, dtype=float), np.arange(size, dtype=float))
    widths = (int(np.ceil(dim / 6) * 2),) * 3 if uniform_power else (dim // 2, dim // 4, dim // 4)
    return np.concatenate([one(widths[0], d), one(widths[1], h), one(widths[2], w)], axis=1)[:, :dim]


@pytest.mark.parametrize("uniform_power", [True, False])
def test_3d_positions_match_v_jepa(uniform_power):
    ours = sincos_3d(64, (3, 4, 4), uniform_power).numpy()
    assert np.allclose(ours, _upstream_3d_sincos(64, 4, 3, uniform_power), atol=1e-6)


@pytest.mark.parametrize("overrides, key, words", [
    (["predictor.action_dim=5"], "predictor.action_dim", "records actions of 2 entries"),
    (["predictor.state_dim=3"], "predictor.state_dim", "states of 2 entries"),
    (["data.flip_p=0.5"], "data.flip_p", "set data.flip_p: 0"),
    (["target={name: ema}"], "target.name", "use target 'frozen'"),
    (["data.dataset={name: shapes, size: 32, train_size: 32, val_size: 8}"], "data.dataset.name",
     "needs clips with actions"),
    (["encoder.frames=4"], "predictor", "use an encoder that encodes a clip frame by frame"),
    (["eval=[{name: knn}]"], "eval.0.name", "reads images; dataset 'moving_shapes' gives clips"),
])
def test_a_clip_run_that_cannot_work_is_refused_before_training(overrides, key, words):
    with pytest.raises(ConfigError) as err:
        _experiment(*overrides)
    message = str(err.value)
    assert f"{key}:" in message and words in message and "\n" not in message


def test_a_video_encoder_needs_clips_of_its_length():
    with pytest.raises(ConfigError, match="encoder.frames: the video encoder takes clips of 8 frames; dataset "
                                          "'moving_shapes' gives clips of 4 frames"):
        build_experiment(load_config("experiments/tiny/vjepa.yaml", [*SMALL_RUN, "encoder.frames=8"]))
    with pytest.raises(ConfigError, match="gives images"):
        build_experiment(load_config("experiments/tiny/vjepa.yaml", [
            *SMALL_RUN, "data.dataset={name: shapes, size: 32, train_size: 32, val_size: 8}"]))


def test_planning_on_an_image_run_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="eval.0.name: evaluator 'plan' needs world_model"):
        build_experiment(load_config("experiments/tiny/iwm.yaml", ["eval=[{name: plan}]"]))


VJEPA = "experiments/tiny/vjepa.yaml"


def test_each_masking_of_a_list_trains_its_own_mask_token():
    """V-JEPA's pair: one step predicts both samplers' targets, each through its own mask token."""
    from jepa_core.train import Trainer

    exp = build_experiment(load_config(VJEPA, SMALL_RUN))
    assert len(exp.views.maskings) == 2
    trainer = Trainer(exp, "unused")
    clips = torch.stack([exp.dataset("train")[i][0]["frames"] for i in range(4)])
    views = exp.views(clips, torch.Generator().manual_seed(0))
    assert len(views.more_masks) == 1
    loss = trainer._forward_loss(views)
    loss.backward()
    predictor = exp.predictor
    assert math.isfinite(loss.item())
    assert predictor.mask_token.grad.abs().sum() > 0 and predictor.more_mask_tokens.grad.abs().sum() > 0


def test_more_maskings_than_mask_tokens_is_refused():
    with pytest.raises(ConfigError, match="views.masking: lists 2 mask samplers, each with its own mask token; "
                                          "predictor 'vit' has 1: set predictor.mask_tokens to 2"):
        build_experiment(load_config(VJEPA, [*SMALL_RUN, "predictor.mask_tokens=1"]))


def test_an_image_masking_on_a_video_grid_is_refused():
    with pytest.raises(ConfigError, match="views.masking.name: 'multiblock' masks an image token grid, but the "
                                          "encoder's is 2x4x4; use 'tubes' or 'full'"):
        build_experiment(load_config(VJEPA, [*SMALL_RUN, "views.masking={name: multiblock}"]))


def test_a_video_shorter_than_a_clip_is_one_line_before_training(tmp_path, capsys):
    from helpers import fake_videofolder
    from jepa_core import launch

    fake_videofolder(tmp_path / "videos", frames=5)
    config = tmp_path / "exp.yaml"
    config.write_text(f"base: {Path(VJEPA).resolve()}\n"
                      f"data:\n  dataset: {{name: videofolder, root: {tmp_path / 'videos'}, frames: 4, frame_step: 2}}\n")
    assert launch.main([str(config), "--output", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {config}: data.dataset: videofolder: ") and "has 5 frames" in err and "needs 7" in err
    assert "\n" not in err and not (tmp_path / "run").exists()


def test_a_one_tubelet_video_encoder_encodes_clips_frame_by_frame():
    """V-JEPA 2-AC's encoding: each frame repeated over the tubelet, so frame t's features never see frame t+1."""
    encoder = Encoder("vit_tiny_patch16_224", 32, depth=1, patch_size=8, frames=2, tubelet=2).eval()
    clips = torch.randn(2, 3, 3, 32, 32)
    with torch.no_grad():
        out = encoder(clips)
        second = encoder._encode(clips[:, 1:2].expand(-1, 2, -1, -1, -1))
    assert encoder.framewise and out.shape == (2, 3 * 16, 192)
    assert torch.allclose(out[:, 16:32], second, atol=1e-6)


def test_encoder_init_starts_from_another_runs_target_encoder(tmp_path):
    """A V-JEPA run's encoder under an action-conditioned predictor: its weights, this run's positions."""
    from jepa_core import launch

    vjepa = tmp_path / "vjepa"
    assert launch.main([VJEPA, "--output", str(vjepa), "--set", "train.steps=2", "--set", "health.every=0",
                        *[a for s in SMALL_RUN for a in ("--set", s)]]) == 0
    frozen = ["encoder.frames=2", "encoder.tubelet=2", "encoder.depth=2"]
    exp = _experiment(*frozen, f"encoder.init={vjepa}")
    from jepa_core.evaluate import load_run

    source = load_run(vjepa)
    theirs = source.target.target_encoder(source.encoder).state_dict()
    assert all(torch.equal(value, theirs[key]) for key, value in exp.encoder.state_dict().items())
    assert exp.encoder.grid == (1, 4, 4) and source.encoder.grid == (2, 4, 4)
    with pytest.raises(ConfigError, match="encoder.init: .* does not fit this encoder"):
        _experiment("encoder.frames=2", "encoder.tubelet=2", "encoder.depth=1", f"encoder.init={vjepa}")
    with pytest.raises(ConfigError, match="encoder.init: .*not a run directory"):
        _experiment(*frozen, f"encoder.init={tmp_path / 'nowhere'}")


def test_a_sweep_over_clip_runs_gives_the_ablation_table(tmp_path):
    """Sweeps and ablate treat clip runs as image runs: one member a grid value, one row each."""
    import csv

    import yaml

    from jepa_core.ablate import main as ablate
    from jepa_core.launch import main as launch
    from jepa_core.testing.runs import TINY_CLIP_RUN

    spec = tmp_path / "sweep.yaml"
    spec.write_text(yaml.safe_dump({**TINY_CLIP_RUN, "eval": [{"name": "rollout", "clips": 8}],
                                    "sweep": {"grid": {"predictor.auto_steps": [1, 2]}}}))
    out = tmp_path / "sweep"
    assert launch([str(spec), "--output", str(out)]) == 0
    assert ablate([str(out)]) == 0
    with open(out / "ablation.csv") as f:
        rows = {row["predictor.auto_steps"]: row for row in csv.DictReader(f)}
    assert set(rows) == {"1", "2"}
    assert all(float(row["rollout.copy_error_last"]) > 0 for row in rows.values())
