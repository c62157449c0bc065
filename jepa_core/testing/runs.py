"""Contracts checked on a trained run: evaluators through ``python -m jepa_core.evaluate``, loggers across a resume."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

import yaml

from jepa_core import evaluate, hookimpl, launch
from jepa_core.config import load_config
from jepa_core.experiment import build_experiment
from jepa_core.run import execute
from jepa_core.rundir import RunDir
from jepa_core.testing._core import Subject

#: a world model small enough to train in about a second on a CPU: IWM views (so the world-model
#: evaluators have actions), feature conditioning, a one-block ViT-Tiny at 32 px (4x4 patches)
TINY_RUN = {
    "name": "tiny-contract",
    "data": {"dataset": {"name": "shapes", "size": 32, "train_size": 32, "val_size": 8},
             "image_size": 32, "batch_size": 8, "num_workers": 0},
    "encoder": {"name": "vit_tiny_patch16_224", "patch_size": 8, "depth": 1},
    "views": {"target": [{"name": "color_jitter"}],
              "source": [{"name": "color_jitter"}, {"name": "grayscale"}],
              "masking": {"name": "multiblock", "min_keep": 2}},
    "conditioning": {"name": "feature"},
    "predictor": {"name": "vit", "depth": 1, "width": 32, "heads": 2},
    "target": {"name": "ema"},
    "train": {"steps": 2, "log_every": 1, "checkpoint_every": 2, "precision": "fp32"},
    "health": {"every": 0},
    "eval": [],
}
#: the clip runs' counterpart: an action-conditioned predictor on moving_shapes clips, frozen encoder
TINY_CLIP_RUN = {
    "name": "tiny-clip-contract",
    "data": {"dataset": {"name": "moving_shapes", "size": 32, "frames": 3, "train_size": 32, "val_size": 8},
             "image_size": 32, "batch_size": 8, "num_workers": 0, "crop_scale": [1.0, 1.0], "flip_p": 0.0},
    "encoder": {"name": "vit_tiny_patch16_224", "patch_size": 8, "depth": 1},
    "views": {"masking": {"name": "full"}},
    "conditioning": {"name": "none"},
    "predictor": {"name": "ac_vit", "action_dim": 2, "depth": 1, "width": 32, "heads": 2, "frames": 4},
    "target": {"name": "frozen"},
    "train": {"steps": 2, "log_every": 1, "checkpoint_every": 2, "precision": "fp32"},
    "health": {"every": 0},
    "eval": [],
}
#: resumed_run: checkpoints every CHECKPOINT steps, stops after logging STOP, relaunched to STEPS
CHECKPOINT, STOP, STEPS = 4, 5, 6


def _sets(overrides: Iterable[str]) -> list[str]:
    return [arg for override in overrides for arg in ("--set", override)]


def _config(run_dir: Path, plugins: Iterable[str], clips: bool = False) -> Path:
    """TINY_RUN (TINY_CLIP_RUN with ``clips``) with ``plugins``, written beside the run directory."""
    config = run_dir.parent / f"{run_dir.name}.yaml"
    files = [str(Path(p).resolve()) if p.endswith(".py") else p for p in plugins]
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(yaml.safe_dump({**(TINY_CLIP_RUN if clips else TINY_RUN), "plugins": files}, sort_keys=False))
    return config


def tiny_run(run_dir: str | Path, *overrides: str, plugins: Iterable[str] = (), clips: bool = False) -> Path:
    """Train ``TINY_RUN`` into ``run_dir`` with ``python -m jepa_core.launch``; its config file is written beside it.

    ``overrides`` are ``--set`` values (``"train.steps=4"``); ``plugins`` are
    modules or .py files the run loads, as YAML ``plugins:`` (an evaluator or
    logger under check must be found there when it is not installed). ``clips``:
    ``TINY_CLIP_RUN`` instead, for evaluators of clip runs (``data = "clips"``).
    """
    run_dir = Path(run_dir).resolve()
    status = launch.main([str(_config(run_dir, plugins, clips)), "--output", str(run_dir), *_sets(overrides)])
    if status:
        raise RuntimeError(f"the tiny run {run_dir} did not train: python -m jepa_core.launch exited with "
                           f"status {status} (its error is printed above)")
    return run_dir


def _files(run_dir: Path) -> dict[str, int]:
    return {str(p.relative_to(run_dir)): p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()}


@contextlib.contextmanager
def _working_directory(path: str):
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def _evaluate(it: Subject, run_dir: Path, spec: str) -> dict[str, float]:
    """One ``python -m jepa_core.evaluate RUN --set eval=[SPEC]``, from an empty working directory."""
    before, err = _files(run_dir), io.StringIO()
    with tempfile.TemporaryDirectory() as cwd, _working_directory(cwd):
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                status = evaluate.main([str(run_dir), "--set", f"eval=[{spec}]"])
        except Exception as exc:
            it.fail(f"raised {type(exc).__name__}: {exc} (python -m jepa_core.evaluate {run_dir})")
        stray = sorted(os.listdir(cwd))
    it.expect(status == 0, f"python -m jepa_core.evaluate exited with status {status}: {err.getvalue().strip()}")
    it.expect(not stray, f"wrote {stray} into the working directory instead of the run directory")
    new = [f for f, mtime in _files(run_dir).items() if before.get(f) != mtime]
    temporary = [f for f in new if Path(f).name.startswith(".") or f.endswith((".tmp", "~"))]
    it.expect(not temporary, f"left temporary file(s) {temporary} in the run directory: write with atomic_write")
    return json.loads(RunDir(run_dir).eval.read_text())[it.name]


def check_evaluator(run_dir: str | Path, name: str, /, **params: Any) -> dict[str, float]:
    """Check an evaluator on a trained run (``tiny_run``) through ``python -m jepa_core.evaluate``; return its metrics.

    It exits 0 with a flat dict of finite numbers, gives the same metrics when
    run again (same run, same seed), and writes files only into the run
    directory, with no temporary file left. ContractError names the contract.
    """
    it = Subject("evaluator", name)
    run_dir = Path(run_dir).resolve()
    spec = json.dumps({"name": name, **params})
    first = _evaluate(it, run_dir, spec)
    it.expect(bool(first) and all(isinstance(k, str) and isinstance(v, float) for k, v in first.items()),
              f"returned {first!r}, not a flat dict of metric names to numbers")
    bad = [k for k, v in first.items() if not math.isfinite(v)]
    it.expect(not bad, f"metric(s) {', '.join(bad)} are not finite: {first}")
    second = _evaluate(it, run_dir, spec)
    changed = [k for k in first if first[k] != second.get(k)]
    it.expect(not changed and set(first) == set(second),
              f"is not deterministic: evaluated twice on the same run and seed, {', '.join(changed) or 'its keys'} "
              f"changed ({first} then {second})")
    return first


class _Stop(Exception):
    """Raised by the hook below: the run stops as a crash would stop it."""


class _StopAfter:
    @hookimpl
    def jepa_after_step(self, step, metrics):
        if step == STOP:
            raise _Stop(step)


def resumed_run(run_dir: str | Path, loggers: list[dict], plugins: Iterable[str] = ()) -> Path:
    """A tiny run with ``loggers`` (YAML specs: ``[{"name": "csv"}]``) that crashes and is relaunched.

    It checkpoints at step 4, stops with an error after logging step 5 and is
    launched again, as a user relaunches: the relaunch resumes from step 4
    and logs steps 5 and 6. The health monitors run at step 3 and 6 only, so
    steps log different keys. Read each logger's sink and pass its steps to
    :func:`check_logger`.
    """
    run_dir = Path(run_dir).resolve()
    overrides = [f"train.steps={STEPS}", f"train.checkpoint_every={CHECKPOINT}", "health.every=3",
                 f"loggers={json.dumps(list(loggers))}"]
    exp = build_experiment(load_config(_config(run_dir, plugins), overrides))
    exp.pm.register(_StopAfter(), name="jepa_core.testing:stop")
    try:
        execute(exp, run_dir)  # what launch runs once the experiment is built
    except _Stop:
        # relaunch in a later second, as a user would: W&B names an offline directory by the
        # second it starts in, and a relaunch within the crash's second writes into its directory
        time.sleep(1.0 - time.time() % 1.0 + 0.05)
        return tiny_run(run_dir, *overrides, plugins=plugins)
    raise RuntimeError(f"the tiny run {run_dir} was to stop after step {STOP} but finished")


def check_logger(run_dir: str | Path, name: str, steps: Iterable[int]) -> None:
    """Check a logger of a :func:`resumed_run` got every logged step once; ``steps``: the steps its sink holds."""
    it = Subject("logger", name)
    logged = [json.loads(line)["step"] for line in RunDir(run_dir).metrics.read_text().splitlines()]
    counts = Counter(steps)
    for step in logged:
        it.expect(counts[step] > 0, f"step {step} never arrived in its sink")
        it.expect(counts[step] == 1, f"step {step} arrived {counts[step]} times; a resumed run logs the steps after "
                                     "its checkpoint again, and the logger must keep them once")
    extra = sorted(set(counts) - set(logged))
    it.expect(not extra, f"step(s) {extra} arrived but the run logged no such step")
