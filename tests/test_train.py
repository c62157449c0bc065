"""Training: the loss goes down, resume repeats the run, checkpoints survive crashes."""

import pytest
import torch

from jepa_core import checkpoint, rundir
from jepa_core.config import load_config
from jepa_core.experiment import build_experiment
from jepa_core.launch import main as launch
from jepa_core.rundir import RunDir
from jepa_core.schedules import cosine, warmup_cosine
from jepa_core.train import param_groups
from helpers import read_metrics

STOP_PLUGIN = """
import os
from jepa_core import hookimpl

@hookimpl
def jepa_after_step(step, metrics):
    if step == 15 and os.environ.get("STOP_AT_15"):
        raise KeyboardInterrupt("stopped at step 15")
"""


def test_thirty_cpu_steps_reduce_the_loss(tiny_config, tmp_path):
    run_dir = tmp_path / "run"
    assert launch([str(tiny_config), "--output", str(run_dir)]) == 0
    losses = [m["loss"] for m in read_metrics(run_dir)]
    assert [m["step"] for m in read_metrics(run_dir)] == list(range(1, 31))
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5, losses
    state = checkpoint.load(RunDir(run_dir).checkpoint)
    assert state["step"] == 30
    assert (run_dir / "config.yaml").exists()


def test_resume_after_a_stop_matches_the_uninterrupted_run(tiny_config, tmp_path, write, monkeypatch):
    stopper = write("stopper.py", STOP_PLUGIN)
    common = ["--set", "train.checkpoint_every=5", "--set", f"plugins=[{stopper}]"]
    full, stopped = tmp_path / "full", tmp_path / "stopped"
    assert launch([str(tiny_config), "--output", str(full)] + common) == 0
    monkeypatch.setenv("STOP_AT_15", "1")
    with pytest.raises(KeyboardInterrupt, match="stopped at step 15"):
        launch([str(tiny_config), "--output", str(stopped)] + common)
    # the crash came after step 15 was logged but before its checkpoint: resume redoes 11..15
    assert checkpoint.load(RunDir(stopped).checkpoint)["step"] == 10
    assert read_metrics(stopped)[-1]["step"] == 15
    monkeypatch.delenv("STOP_AT_15")
    assert launch([str(tiny_config), "--output", str(stopped)] + common) == 0
    losses = lambda d: [(m["step"], m["loss"]) for m in read_metrics(d)]  # noqa: E731
    assert losses(stopped) == losses(full)
    a, b = (checkpoint.load(RunDir(d).checkpoint) for d in (full, stopped))
    for name in ("encoder", "predictor", "target"):
        for key, value in a[name].items():
            assert torch.equal(value, b[name][key]), (name, key)


def test_crash_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    checkpoint.save(tmp_path, {"step": 1, "weights": torch.arange(4)})

    def broken_write(path, write, mode="wb"):
        with open(path.parent / f".{path.name}.partial", "wb") as f:
            f.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(rundir, "atomic_write", broken_write)
    with pytest.raises(OSError):
        checkpoint.save(tmp_path, {"step": 2, "weights": torch.arange(8)})
    state = checkpoint.load(RunDir(tmp_path).checkpoint)
    assert state["step"] == 1 and torch.equal(state["weights"], torch.arange(4))


def test_atomic_write_leaves_no_temporary_on_failure(tmp_path):
    def fail(f):
        f.write(b"partial")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        rundir.atomic_write(tmp_path / "latest.pt", fail)
    assert list(tmp_path.iterdir()) == []


def test_cut_short_checkpoint_is_a_one_line_error(tmp_path):
    path = checkpoint.save(tmp_path, {"step": 3, "weights": torch.zeros(1000)})
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(checkpoint.CheckpointError, match="cut short or corrupt"):
        checkpoint.load(path)


def test_schedules_are_pure_functions_of_the_step():
    kw = dict(warmup=10, total=100, start=2e-4, peak=1e-3, final=1e-6)
    assert warmup_cosine(0, **kw) == pytest.approx(2e-4)
    assert warmup_cosine(10, **kw) == pytest.approx(1e-3)
    assert warmup_cosine(100, **kw) == pytest.approx(1e-6)
    assert warmup_cosine(55, **kw) == warmup_cosine(55, **kw)
    assert cosine(0, total=100, start=0.04, final=0.4) == pytest.approx(0.04)
    assert cosine(100, total=100, start=0.04, final=0.4) == pytest.approx(0.4)


def test_no_weight_decay_on_biases_and_1d_parameters(tiny_config):
    exp = build_experiment(load_config(tiny_config))
    decay, no_decay = param_groups([exp.encoder, exp.predictor])
    assert all(p.ndim >= 2 for p in decay["params"])
    assert all(p.ndim <= 1 for p in no_decay["params"]) and no_decay["weight_decay"] == 0.0
    assert len(no_decay["params"]) > 0


def test_compiled_step_trains_like_the_eager_step(tiny_config, tmp_path):
    """train.compile: torch.compile on the CPU gives the eager run's losses (same seed, same batches)."""
    from torch._dynamo.utils import counters

    counters.clear()
    losses = {}
    for flag in ("false", "true"):
        run_dir = tmp_path / f"compile_{flag}"
        argv = [str(tiny_config), "--output", str(run_dir), "--set", "train.steps=6", "--set", f"train.compile={flag}"]
        assert launch(argv) == 0
        losses[flag] = [m["loss"] for m in read_metrics(run_dir)]
    # it did compile (not fall back to eager), once per block width and grad mode (the health
    # monitors' held-out forward is one more no-grad graph), not once per step
    assert 1 <= counters["stats"]["unique_graphs"] <= 5
    assert len(losses["true"]) == 6
    assert losses["true"] == pytest.approx(losses["false"], rel=1e-4)


def test_the_train_step_never_picks_cudnn_attention(tiny_config, tmp_path, monkeypatch):
    """cuDNN attention plans each new sequence length: with masks changing them every step it ran an
    H200 step at a third of flash attention's speed (docs/performance.md, "On a GPU")."""
    import torch.nn.functional as F

    from jepa_core.train import Trainer

    seen = []
    attention = F.scaled_dot_product_attention

    def recording(*args, **kwargs):
        seen.append(torch.backends.cuda.cudnn_sdp_enabled())
        return attention(*args, **kwargs)

    trainer = Trainer(build_experiment(load_config(tiny_config)), tmp_path / "run")
    images = torch.randint(0, 256, (4, 3, 48, 48), dtype=torch.uint8)
    monkeypatch.setattr(F, "scaled_dot_product_attention", recording)
    trainer.train_step(images, 0, 10, 1e-3, 0.04)
    assert seen and not any(seen)
    assert torch.backends.cuda.cudnn_sdp_enabled()  # only inside the step
