"""The csv, tensorboard and wandb loggers (docs/tracking.md): what they log, and across a resume."""

from __future__ import annotations

import csv
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml
from conftest import TINY
from helpers import read_metrics, tensorboard_events, wandb_attempt, wandb_offline_env

from jepa_core import launch

# A plugin for the runs below: stops the run with an error after logging step
# $JEPA_TEST_RAISE_AT (checkpoints are every 10 steps, so a relaunch redoes the steps
# after 10), and an evaluator that writes a picture into the run directory.
CRASH_PLUGIN = textwrap.dedent('''
    import os

    from PIL import Image

    from jepa_core import hookimpl
    from jepa_core.registries.evaluators import Evaluator


    @hookimpl
    def jepa_after_step(step, metrics):
        if os.environ.get("JEPA_TEST_RAISE_AT") == str(step):
            raise RuntimeError(f"stopped at step {step}")


    class Picture(Evaluator):

        def evaluate(self, run):
            Image.new("RGB", (12, 8), (200, 30, 30)).save(run.run_dir / "picture.png")
            return {"value": 0.5}


    @hookimpl
    def jepa_register_evaluators(registry):
        registry.register("picture", Picture)
''')


def _config(tmp_path: Path, logger: dict) -> Path:
    (tmp_path / "crash_plugin.py").write_text(CRASH_PLUGIN)
    # 20 steps of 8 images, checkpoints at 10 and 20; the health monitors (more metrics) every fifth step
    config = {**TINY, "data": {**TINY["data"], "batch_size": 8}, "train": {**TINY["train"], "steps": 20},
              "health": {"every": 5},
              "plugins": [str(tmp_path / "crash_plugin.py")], "eval": [{"name": "picture"}], "loggers": [logger]}
    path = tmp_path / "tracked.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _crash_and_resume(tmp_path: Path, logger: dict, monkeypatch, between=None) -> Path:
    """Run to step 15, fail, relaunch: the relaunch resumes from the step-10 checkpoint."""
    config, run_dir = _config(tmp_path, logger), tmp_path / "run"
    monkeypatch.setenv("JEPA_TEST_RAISE_AT", "15")
    with pytest.raises(RuntimeError, match="stopped at step 15"):
        launch.main([str(config), "--output", str(run_dir)])
    assert read_metrics(run_dir)[-1]["step"] == 15
    if between:
        between(run_dir)
    monkeypatch.delenv("JEPA_TEST_RAISE_AT")
    assert launch.main([str(config), "--output", str(run_dir)]) == 0
    return run_dir


@pytest.mark.parametrize("crash_at", [15, 5], ids=["resumed", "restarted_before_a_checkpoint"])
def test_csv_holds_every_logged_metric_once_across_a_relaunch(tmp_path, monkeypatch, crash_at):
    """Health metrics first appear at step 5, after the header was written; a relaunch keeps each step once."""
    config, run_dir = _config(tmp_path, {"name": "csv"}), tmp_path / "run"
    monkeypatch.setenv("JEPA_TEST_RAISE_AT", str(crash_at))
    with pytest.raises(RuntimeError, match=f"stopped at step {crash_at}"):
        launch.main([str(config), "--output", str(run_dir)])
    monkeypatch.delenv("JEPA_TEST_RAISE_AT")
    assert launch.main([str(config), "--output", str(run_dir)]) == 0
    with open(run_dir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    logged = read_metrics(run_dir)
    assert [int(row["step"]) for row in rows] == [m["step"] for m in logged] == list(range(1, 21))
    assert {key for m in logged for key in m} <= set(rows[0])  # health_* columns included
    for row, metrics in zip(rows, logged):
        assert all(float(row[key]) == pytest.approx(value) for key, value in metrics.items()
                   if isinstance(value, (int, float))), metrics["step"]


def _expected_steps(run_dir: Path) -> dict[str, list[int]]:
    """metrics.jsonl's steps for each scalar key (each step once: the engine truncates it on resume)."""
    steps: dict[str, list[int]] = {}
    for row in read_metrics(run_dir):
        for key, value in row.items():
            if key != "step" and isinstance(value, (int, float)):
                steps.setdefault(key, []).append(row["step"])
    return steps


# --------------------------------------------------------------------------- tensorboard
def test_tensorboard_holds_every_metric_once_across_a_resume(tmp_path, monkeypatch):
    before = {}

    def look(run_dir):  # the failed attempt logged (and flushed) steps 11-15, which the relaunch redoes
        acc = tensorboard_events(run_dir / "tensorboard")
        before["steps"] = [e.step for e in acc.Scalars("train/loss")]

    run_dir = _crash_and_resume(tmp_path, {"name": "tensorboard"}, monkeypatch, between=look)
    assert before["steps"] == list(range(1, 16))

    expected = _expected_steps(run_dir)
    assert expected["loss"] == list(range(1, 21))
    assert {"loss", "lr", "wd", "momentum", "images_per_s"} <= set(expected)
    assert expected["rankme"] == [5, 10, 15, 20]  # a key some steps have
    acc = tensorboard_events(run_dir / "tensorboard")
    assert set(acc.Tags()["scalars"]) == {f"train/{key}" for key in expected}
    for key, steps in expected.items():
        logged = [e.step for e in acc.Scalars(f"train/{key}")]
        assert logged == steps, f"train/{key}: steps {logged}, metrics.jsonl has {steps}"
    loss = {e.step: e.value for e in acc.Scalars("train/loss")}
    for row in read_metrics(run_dir):  # the redone steps' values, not the failed attempt's
        assert loss[row["step"]] == pytest.approx(row["loss"], rel=1e-6)
    config = acc.Tensors("config/text_summary")
    assert len(config) == 1 and "vit_tiny_patch16_224" in config[0].tensor_proto.string_val[0].decode()

    evaluation = tensorboard_events(run_dir / "tensorboard" / "eval")
    assert [(e.step, e.value) for e in evaluation.Scalars("eval/picture/value")] == [(20, 0.5)]
    image = evaluation.Images("eval/picture")
    assert [(e.step, e.width, e.height) for e in image] == [(20, 12, 8)]


# --------------------------------------------------------------------------- wandb
@pytest.fixture
def wandb_env(tmp_path, monkeypatch):
    for var, value in wandb_offline_env(tmp_path).items():
        monkeypatch.setenv(var, value)
    monkeypatch.delenv("WANDB_MODE", raising=False)


def test_wandb_offline_continues_the_same_run_after_a_resume(tmp_path, monkeypatch, wandb_env):
    ids = []
    logger = {"name": "wandb", "mode": "offline", "project": "tests", "tags": ["tiny"]}
    def between(run_dir: Path) -> None:
        ids.append((run_dir / "wandb_id.txt").read_text())
        # W&B names an offline directory by the second it starts in: a relaunch within the
        # same second as the crash would write into the first attempt's directory
        time.sleep(1.0 - time.time() % 1.0 + 0.05)

    run_dir = _crash_and_resume(tmp_path, logger, monkeypatch, between=between)
    run_id = (run_dir / "wandb_id.txt").read_text().strip()
    assert ids == [run_id + "\n"] and run_id

    attempts = sorted((run_dir / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(attempts) == 2, attempts  # one offline directory per launch, both the same W&B run
    first, second = (wandb_attempt(a) for a in attempts)
    for attempt in (first, second):
        assert attempt["run"].run_id == run_id and attempt["run"].project == "tests"
        assert list(attempt["run"].tags) == ["tiny"] and attempt["run"].display_name == "run"
        assert {u.key for u in attempt["run"].config.update} >= {"encoder", "train", "loggers"}
    expected = _expected_steps(run_dir)
    assert sorted(first["history"]) == list(range(1, 16))
    assert sorted(second["history"]) == list(range(11, 21))  # offline, the relaunch cannot know what W&B has
    for attempt in (first, second):
        for step, row in attempt["history"].items():
            assert {k for k in row if k.startswith("train/")} == {
                f"train/{key}" for key, steps in expected.items() if step in steps}
    assert second["history"][20]["eval/picture/value"] == 0.5
    assert second["history"][20]["eval/picture/_type"] == "image-file"  # W&B flattens the image's fields
    assert second["summary"]["eval/picture/value"] == "0.5"


def test_wandb_groups_sweep_members_by_their_sweep_directory(tmp_path, wandb_env):
    from jepa_core.rundir import SweepDir
    from jepa_core.plugins.loggers import WandbLogger

    (tmp_path / "sweep" / "member").mkdir(parents=True)
    SweepDir(tmp_path / "sweep").manifest.write_text("{}")
    alone = WandbLogger(WandbLogger.Config(mode="disabled"), str(tmp_path / "run"))
    member = WandbLogger(WandbLogger.Config(mode="disabled"), str(tmp_path / "sweep" / "member"))
    named = WandbLogger(WandbLogger.Config(group="mine"), str(tmp_path / "sweep" / "member"))
    assert (alone.group(), member.group(), named.group()) == (None, "sweep", "mine")


# --------------------------------------------------------------------------- missing packages
@pytest.mark.parametrize("logger", ["tensorboard", "wandb"])
def test_a_logger_without_its_package_is_a_one_line_config_error(logger, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, logger, None)  # what `import tensorboard` / `import wandb` meets when absent
    config = tmp_path / "tracked.yaml"
    config.write_text(yaml.safe_dump({**TINY, "loggers": [{"name": logger}]}, sort_keys=False))
    assert launch.main([str(config), "--output", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"error: {config}") and "loggers.0" in err[0], err[0]
    assert f"pip install 'jepa-core[{logger}]'" in err[0], err[0]
    assert not (tmp_path / "run").exists()
