"""What docs/reliability.md promises: safe loading, one owner per run directory, and faults that lose nothing."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import ROOT, TINY
from helpers import read_metrics
from jepa_core import checkpoint, launch, runlock
from jepa_core.evaluate import main as evaluate_main
from jepa_core.rundir import RunDir

FAULTS = Path(__file__).with_name("fault_plugin.py")


def fault_config(tmp_path: Path, eval: tuple = (), **train) -> Path:
    """The tiny config with the fault plugin loaded (it only acts when asked through the environment)."""
    config = {**TINY, "plugins": [str(FAULTS)], "eval": list(eval),
              "train": {**TINY["train"], "steps": 20, "checkpoint_every": 5, **train}}
    path = tmp_path / "faults.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def launch_cmd(config: Path, run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "jepa_core.launch", str(config), "--output", str(run_dir)]


def run_launch(config: Path, run_dir: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(launch_cmd(config, run_dir), cwd=ROOT, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=300)


def tensors_equal(a, b, key: str = "") -> None:
    """Assert two checkpoint trees are equal, tensors bit for bit (same process kinds, same kernels)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), key
        for k in a:
            tensors_equal(a[k], b[k], f"{key}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), key
        for i, (x, y) in enumerate(zip(a, b)):
            tensors_equal(x, y, f"{key}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), key
    else:
        assert a == b, key


# ------------------------------------------------------------------ safe loading

class _RunsCode:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_that_would_run_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "code-ran"
    evil = _RunsCode()
    evil.marker = marker
    path = RunDir(tmp_path).checkpoint
    path.parent.mkdir(parents=True)
    torch.save({"step": 3, "encoder": evil}, path)
    with pytest.raises(checkpoint.CheckpointError) as info:
        checkpoint.load(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and "refused" in message
    assert not marker.exists()


def test_checkpoints_hold_only_what_weights_only_loading_accepts(tmp_path):
    path = checkpoint.save(tmp_path, {"step": 1, "encoder": {"w": torch.ones(2)}, "betas": (0.9, 0.95)})
    assert torch.load(path, weights_only=True)["encoder"]["w"].sum() == 2
    with pytest.raises(TypeError, match=r"state.extra is a PosixPath"):
        checkpoint.save(tmp_path, {"step": 2, "extra": Path("x")})
    assert checkpoint.load(path)["step"] == 1  # the refused save wrote nothing


# ------------------------------------------------------------------ one owner per run directory

def test_a_second_owner_is_refused_and_a_dead_owners_lock_is_taken_over(tmp_path):
    with runlock.RunLock(tmp_path):
        with pytest.raises(runlock.RunDirBusy, match=rf"pid {os.getpid()} on host "):
            runlock.RunLock(tmp_path).acquire()
    runlock.RunLock(tmp_path).acquire().release()  # released on exit of the with block
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from jepa_core.runlock import RunLock; "
        f"RunLock({str(tmp_path)!r}).acquire(); print('held', flush=True); time.sleep(300)")],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(runlock.RunDirBusy, match=rf"pid {holder.pid} "):
            runlock.check_free(tmp_path)
    finally:
        holder.kill()
        holder.wait()
    with runlock.RunLock(tmp_path):  # the killed holder's lock is gone with it
        pass


def _wait_for(path: Path, proc: subprocess.Popen, seconds: float = 240) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.2)


@pytest.mark.slow
def test_two_launches_into_one_run_directory_one_trains_and_a_relaunch_after_sigkill_resumes(tmp_path):
    config, run_dir, paused = fault_config(tmp_path), tmp_path / "run", tmp_path / "paused"
    first = subprocess.Popen(launch_cmd(config, run_dir), cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL,
                             env={**os.environ, "JEPA_TEST_PAUSE_AT": "7", "JEPA_TEST_PAUSED": str(paused)})
    try:
        _wait_for(paused, first)
        second = run_launch(config, run_dir)
        assert second.returncode == 2, second.stderr
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and f"pid {first.pid} on host " in lines[0] and str(run_dir) in lines[0]
        assert [m["step"] for m in read_metrics(run_dir)] == list(range(1, 8))  # the refused launch wrote nothing
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    third = run_launch(config, run_dir)
    assert third.returncode == 0, third.stderr
    assert [m["step"] for m in read_metrics(run_dir)] == list(range(1, 21))


def test_a_sweep_refuses_a_member_owned_by_a_live_process(tmp_path, write):
    sweep_file = write("sweep.yaml", f"""
        base: {fault_config(tmp_path)}
        sweep: {{grid: {{train.seed: [0, 1]}}}}
        """)
    sweep_dir = tmp_path / "sweep"
    members = launch.sweep.expand(str(sweep_file), str(sweep_dir), [])
    with runlock.RunLock(members[1].run_dir):
        assert launch.main([str(sweep_file), "--output", str(sweep_dir)]) == 2
    assert not any(sweep_dir.rglob("metrics.jsonl")) and not any(sweep_dir.rglob("config.yaml"))


# ------------------------------------------------------------------ faults

@pytest.mark.slow
def test_sigkill_between_checkpoints_then_relaunch_equals_an_uninterrupted_run(tmp_path):
    config = fault_config(tmp_path)
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert run_launch(config, whole).returncode == 0
    crash = run_launch(config, killed, JEPA_TEST_KILL_AT="8")
    assert crash.returncode == -signal.SIGKILL
    assert torch.load(RunDir(killed).checkpoint, weights_only=True)["step"] == 5
    with open(killed / "metrics.jsonl", "a") as f:  # what a crash mid-write would leave
        f.write('{"step": 9, "lo')
    again = run_launch(config, killed)
    assert again.returncode == 0, again.stderr
    steps = [m["step"] for m in read_metrics(killed)]
    assert steps == list(range(1, 21))
    tensors_equal(torch.load(RunDir(whole).checkpoint, weights_only=True),
                  torch.load(RunDir(killed).checkpoint, weights_only=True))


class _FullDisk:
    """Files opened for writing accept a few bytes, then fail with ENOSPC, as on a full disk."""

    def __init__(self, file):
        self._file, self._room = file, 16

    def write(self, data):
        if len(data) > self._room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._room -= len(data)
        return self._file.write(data)

    def __getattr__(self, name):
        return getattr(self._file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._file.close()


def fill_disk(monkeypatch) -> None:
    real = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda fd, *a, **k: _FullDisk(real(fd, *a, **k)))


def test_a_full_disk_while_checkpointing_keeps_the_previous_checkpoint(tmp_path, monkeypatch, capsys):
    config, run_dir = fault_config(tmp_path, steps=10), tmp_path / "run"
    real_save, saves = checkpoint.save, []

    def save(run_dir_, state):
        saves.append(state["step"])
        if len(saves) == 2:
            fill_disk(monkeypatch)
        return real_save(run_dir_, state)

    monkeypatch.setattr(checkpoint, "save", save)
    assert launch.main([str(config), "--output", str(run_dir)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    latest = run_dir / "checkpoints" / "latest.pt"
    assert len(err) == 1 and str(latest) in err[0] and "ENOSPC" in err[0], err
    assert checkpoint.load(latest)["step"] == 5
    assert sorted(p.name for p in latest.parent.iterdir()) == ["latest.pt"]  # no temporary file left


def test_a_full_disk_while_writing_eval_json_keeps_the_previous_one(tmp_path, monkeypatch, capsys):
    knn = {"name": "knn", "task": "colour", "max_train": 32, "max_val": 16}
    config, run_dir = fault_config(tmp_path, eval=(knn,), steps=5), tmp_path / "run"
    assert launch.main([str(config), "--output", str(run_dir)]) == 0
    before = (run_dir / "eval.json").read_bytes()
    capsys.readouterr()
    fill_disk(monkeypatch)
    assert evaluate_main([str(run_dir)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(run_dir / "eval.json") in err[0] and "ENOSPC" in err[0], err
    assert (run_dir / "eval.json").read_bytes() == before
    assert not list(run_dir.glob(".eval.json.*"))


def test_a_non_finite_loss_stops_the_run_at_that_step_and_keeps_the_last_good_checkpoint(
        tmp_path, monkeypatch, capsys):
    from jepa_core import train

    config, run_dir = fault_config(tmp_path, log_every=5), tmp_path / "run"
    real_step = train.Trainer.train_step

    def train_step(self, images, step, total, lr, wd, steps=None):
        loss = real_step(self, images, step, total, lr, wd, steps)
        return loss * float("nan") if step + 1 == 7 else loss  # the 7th step goes non-finite

    monkeypatch.setattr(train.Trainer, "train_step", train_step)
    assert launch.main([str(config), "--output", str(run_dir)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    latest = run_dir / "checkpoints" / "latest.pt"
    assert len(err) == 1 and "non-finite at step 7" in err[0] and f"{latest} (step 5)" in err[0], err
    assert checkpoint.load(latest)["step"] == 5
    assert [m["step"] for m in read_metrics(run_dir)] == [5]  # nothing logged from the bad step on


def test_a_data_loader_worker_that_dies_is_a_one_line_error_not_a_hang(tmp_path, write):
    plugin = write("dying.py", """
        import os, signal
        import torch
        from jepa_core import hookimpl

        class Dying(torch.utils.data.Dataset):
            num_classes = 1

            def __init__(self, config=None, split="train"):
                pass
            def __len__(self):
                return 64
            def __getitem__(self, i):
                if torch.utils.data.get_worker_info() is not None and i % 2:
                    os.kill(os.getpid(), signal.SIGKILL)
                return torch.zeros(3, 48, 48, dtype=torch.uint8), 0

        @hookimpl
        def jepa_register_datasets(registry):
            registry.register("dying", Dying)
        """)
    config = {**TINY, "plugins": [str(plugin)],
              "data": {**TINY["data"], "dataset": {"name": "dying"}, "num_workers": 1}}
    path = tmp_path / "dying.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    result = run_launch(path, tmp_path / "run")
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "DataLoader worker" in lines[0] and "num_workers" in lines[0], lines
