"""Slurm: submission, DDP jobs, preemption and time limits, arrays, bad input.

Tests marked ``slurm`` run against a real one-node cluster that the session
fixture starts with tests/slurm/start_cluster.sh (idempotent, ~1 s when it is
already up). Where it cannot be started they are skipped, with the reason;
JEPA_CORE_REQUIRE_SLURM=1 (set by .ci/run) turns that skip into a failure.
The cluster has no accounting database, so tests/slurm/bin (a ``sacct``
stand-in answering from ``scontrol``) goes first on PATH.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import submitit
import torch
import yaml

from jepa_core import checkpoint, distributed, slurm
from jepa_core.config import ConfigError, load_config
from jepa_core.experiment import build_experiment
from jepa_core.launch import main as launch
from jepa_core.run import execute
from jepa_core.rundir import RunDir, SweepDir
from helpers import checksums, read_metrics

ROOT = Path(__file__).resolve().parents[1]
START = ROOT / "tests" / "slurm" / "start_cluster.sh"
SHIMS = ROOT / "tests" / "slurm" / "bin"

#: slows the FIRST attempt of a job (SLURM_RESTART_COUNT unset or 0) so that a signal
#: surely arrives mid-training; numerics are untouched, the requeued attempt runs at full speed
SLOW_PLUGIN = """
import os, time
from jepa_core import hookimpl

@hookimpl
def jepa_after_step(step, metrics):
    if os.environ.get("SLURM_RESTART_COUNT", "0") == "0":
        time.sleep(float(os.environ.get("JEPA_TEST_SLOW_S", "0.5")))
"""

FAIL_PLUGIN = """
from jepa_core import hookimpl

@hookimpl
def jepa_after_step(step, metrics):
    if step == 2:
        raise ValueError("a real bug at step 2")
"""


# ---------------------------------------------------------------------- fixtures

def _start_cluster() -> str | None:
    """Start the test cluster; the reason it cannot be, or None."""
    if not START.is_file():
        return f"{START} is missing"
    if os.geteuid() != 0:
        return "starting the test cluster needs root (tests/slurm/start_cluster.sh)"
    if shutil.which("apt-get") is None and shutil.which("slurmctld") is None:
        return "no Slurm and no apt-get to install it"
    try:
        proc = subprocess.run(["bash", str(START)], capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        return "tests/slurm/start_cluster.sh did not finish in 900 s"
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines() or ["(no output)"]
        return f"tests/slurm/start_cluster.sh failed: {lines[-1]}"
    return None


@pytest.fixture(scope="session")
def slurm_cluster():
    """A running one-node Slurm cluster (partition debug, 2 CPUs), or a skip (a failure if required)."""
    reason = _start_cluster()
    if reason:
        if os.environ.get("JEPA_CORE_REQUIRE_SLURM") == "1":
            pytest.fail(f"JEPA_CORE_REQUIRE_SLURM=1 but Slurm is unavailable: {reason}", pytrace=False)
        pytest.skip(reason)
    return True


class Cluster:
    """Submissions of one test; jobs still queued when it ends are cancelled."""

    def __init__(self, tmp_path: Path):
        self.tmp_path = tmp_path
        self.job_ids: list[str] = []

    def launch(self, config: Path, run_dir: Path, *sets: str, capsys) -> submitit.SlurmJob:
        """``launch CONFIG --slurm --output RUN_DIR --set ...``; the submitted job, from the printed id."""
        args = [str(config), "--slurm", "--output", str(run_dir)]
        for assignment in sets:
            args += ["--set", assignment]
        assert launch(args) == 0
        out = capsys.readouterr().out
        job_id = re.search(r"submitted Slurm job (\d+)", out).group(1)
        tasks = yaml.safe_load((run_dir / "config.yaml").read_text())["slurm"]["tasks_per_node"]
        self.job_ids.append(job_id)
        return submitit.SlurmJob(folder=RunDir(run_dir).submitit, job_id=job_id, tasks=tuple(range(tasks)))

    def track(self, jobs) -> None:
        self.job_ids += [job.job_id for job in jobs]

    def cancel_all(self) -> None:
        if self.job_ids:
            subprocess.run(["scancel", *self.job_ids], capture_output=True)


@pytest.fixture
def cluster(slurm_cluster, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", f"{SHIMS}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.chdir(tmp_path)  # a job's working directory is the submission directory
    c = Cluster(tmp_path)
    yield c
    c.cancel_all()


def slurm_sets(tasks: int = 1, **extra) -> list[str]:
    """--set lines for the test cluster: 1 CPU a task (the node has 2)."""
    sets = {"slurm.partition": "debug", "slurm.cpus_per_task": 1, "slurm.tasks_per_node": tasks,
            "data.batch_size": 8, **extra}
    return [f"{key}={value}" for key, value in sets.items()]


def log_of(job, task: int = 0) -> str:
    path = job.paths.folder / f"{job.job_id}_{task}_log.out"
    return path.read_text() if path.exists() else ""


def errors_of(job, task: int = 0) -> str:
    path = job.paths.folder / f"{job.job_id}_{task}_log.err"
    return path.read_text() if path.exists() else ""


def wait_done(job, timeout: float) -> None:
    """Wait for a job to end (result files, or Slurm says it ended); cancel and fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_force = time.monotonic()
    while not job.done():
        if time.monotonic() - last_force > 3 and job.watcher.is_done(job.job_id, mode="force"):
            break
        if time.monotonic() > deadline:
            subprocess.run(["scancel", job.job_id], capture_output=True)
            pytest.fail(f"job {job.job_id} not done after {timeout:.0f} s; log:\n{log_of(job)[-3000:]}\n"
                        f"errors:\n{errors_of(job)[-3000:]}")
        time.sleep(0.5)


def results(job, timeout: float) -> list:
    wait_done(job, timeout)
    try:
        return job.results()
    except Exception as exc:
        pytest.fail(f"job {job.job_id} failed: {exc}\nlog:\n{log_of(job)[-3000:]}", pytrace=False)


def wait_for_step(run_dir: Path, step: int, job, timeout: float) -> int:
    """Wait until the run logged ``step`` (metrics.jsonl); the last step logged."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        path = run_dir / "metrics.jsonl"
        if path.exists():
            done = [m["step"] for m in read_metrics(run_dir)]
            if done and done[-1] >= step:
                return done[-1]
        if job.done():
            pytest.fail(f"job {job.job_id} ended before step {step}:\n{log_of(job)[-3000:]}")
        time.sleep(0.2)
    pytest.fail(f"job {job.job_id} did not reach step {step} in {timeout} s:\n{log_of(job)[-3000:]}")


def restarts(job_id: str) -> int:
    out = subprocess.run(["scontrol", "show", "job", "-o", str(job_id)], capture_output=True, text=True).stdout
    found = re.search(r"\bRestarts=(\d+)", out)
    return int(found.group(1)) if found else -1


def same_checkpoints(a: Path, b: Path) -> None:
    one, two = (checkpoint.load(RunDir(d).checkpoint) for d in (a, b))
    assert one["step"] == two["step"]
    for name in ("encoder", "predictor", "target"):
        assert one[name].keys() == two[name].keys()
        for key, value in one[name].items():
            assert torch.equal(value, two[name][key]), (name, key)
    for index, state in one["optimizer"]["state"].items():
        for key, value in state.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(two["optimizer"]["state"][index][key]))


def evaluator_available() -> str | None:
    """knn, if the installed plugins register it (then the run must write eval.json)."""
    from jepa_core.manager import Registries, get_plugin_manager

    return "knn" if "knn" in Registries(get_plugin_manager()).evaluators else None


# ------------------------------------------------ stop requests (no Slurm needed)

def test_a_stop_request_checkpoints_at_a_step_boundary_and_resume_is_exact(tiny_config, tmp_path, write):
    """The deferred preemption path, in-process: request a stop during step 3, resume, compare."""
    request = write("request.py", """
        from jepa_core import hookimpl
        from jepa_core.distributed import STOP

        @hookimpl
        def jepa_after_step(step, metrics):
            if step == 3 and not STOP.requested:
                STOP.request()  # what the signal handler does, in the middle of step 3
        """)
    sets = ["train.steps=6", "train.checkpoint_every=100", "data.batch_size=8", f"plugins=[{request}]"]

    def run(run_dir):
        exp = build_experiment(load_config(tiny_config, sets))
        return execute(exp, run_dir)

    full, stopped = tmp_path / "full", tmp_path / "stopped"
    run(full)
    distributed.STOP.reset(enabled=True)
    try:
        with pytest.raises(distributed.Preempted) as stop:
            run(stopped)
    finally:
        distributed.STOP.reset()
    assert stop.value.step == 3
    assert checkpoint.load(RunDir(stopped).checkpoint)["step"] == 3  # written by the loop, after step 3
    run(stopped)  # STOP disabled: the resumed run finishes
    assert [m["loss"] for m in read_metrics(stopped)] == [m["loss"] for m in read_metrics(full)]
    same_checkpoints(full, stopped)


def test_preempted_is_not_an_exception():
    """``except Exception`` (status files, loggers) must not mistake a preemption for a failure."""
    assert not issubclass(distributed.Preempted, Exception)


# ------------------------------------------------------------ bad input, dry run

@pytest.fixture
def fake_sbatch(tmp_path, monkeypatch):
    """sbatch and srun that only record that they were called."""
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    calls = tmp_path / "sbatch_calls"
    for name in ("sbatch", "srun"):
        tool = bin_dir / name
        tool.write_text(f"#!/bin/sh\necho {name} \"$@\" >> {calls}\necho 'Submitted batch job 1'\n")
        tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return calls


def test_a_config_error_exits_2_before_sbatch_is_called(tiny_config, tmp_path, fake_sbatch, capsys):
    code = launch([str(tiny_config), "--slurm", "--output", str(tmp_path / "run"), "--set", "optim.lr=-1"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "optim.lr" in err and len(err.strip().splitlines()) == 1
    assert not fake_sbatch.exists() and not (tmp_path / "run").exists()


def test_an_unknown_slurm_key_gets_a_did_you_mean(tiny_config, tmp_path, fake_sbatch, capsys):
    code = launch([str(tiny_config), "--slurm", "--output", str(tmp_path / "run"), "--set", "slurm.partiton=gpu"])
    assert code == 2
    err = capsys.readouterr().err
    assert "slurm.partiton" in err and "did you mean 'partition'" in err
    assert not fake_sbatch.exists()


def test_a_signal_that_would_miss_the_handler_is_refused(tiny_config, tmp_path, fake_sbatch, capsys):
    code = launch([str(tiny_config), "--slurm", "--output", str(tmp_path / "run"),
                   "--set", "slurm.additional_parameters.signal=B:USR2@60"])
    assert code == 2
    assert "slurm.additional_parameters.signal" in capsys.readouterr().err
    assert not fake_sbatch.exists()


def test_missing_sbatch_says_slurm_is_not_on_path(tiny_config, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)
    code = launch([str(tiny_config), "--slurm", "--output", str(tmp_path / "run")])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "Slurm is not on PATH" in err and "--local" in err
    assert not (tmp_path / "run").exists()


def test_dry_run_prints_the_sbatch_script_of_every_slurm_key(tiny_config, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)  # works without Slurm
    run_dir = tmp_path / "run"
    sets = ["slurm.partition=gpu", "slurm.account=lab", "slurm.qos=high", "slurm.nodes=2",
            "slurm.gpus_per_node=8", "slurm.tasks_per_node=8", "slurm.cpus_per_task=10", "slurm.mem_gb=480",
            "slurm.timeout_min=4320", "slurm.constraint=volta32gb", "slurm.exclude=node[1-3]",
            "slurm.setup=[module load cuda/12.1, source ~/venv/bin/activate]",
            "slurm.additional_parameters={mail_type: END, signal: USR2@120}"]
    args = [str(tiny_config), "--slurm", "--dry-run", "--output", str(run_dir)]
    for assignment in sets:
        args += ["--set", assignment]
    assert launch(args) == 0
    out = capsys.readouterr().out
    script = out[out.index("#!/bin/bash"):]
    for line in ["--partition=gpu", "--account=lab", "--qos=high", "--nodes=2", "--gpus-per-node=8",
                 "--ntasks-per-node=8", "--cpus-per-task=10", "--mem=480GB", "--time=4320",
                 "--constraint=volta32gb", "--exclude='node[1-3]'", "--mail-type=END", "--signal=USR2@120",
                 "--job-name=tiny", f"--output={run_dir.resolve()}/submitit/%j_0_log.out"]:
        assert f"#SBATCH {line}\n" in script, line
    assert script.count("--signal") == 1
    assert "module load cuda/12.1\nsource ~/venv/bin/activate\n" in script
    assert "-m submitit.core._submit" in script
    assert not run_dir.exists()  # nothing written, nothing submitted


def test_a_sweep_dry_run_prints_the_script_of_one_array_logging_to_the_sweep_directory(
        tiny_config, tmp_path, write, monkeypatch, capsys):
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)  # works without Slurm
    sweep = write("sweep.yaml", f"base: {tiny_config}\nsweep:\n  seeds: [0, 1, 2]\n")
    sweep_dir = tmp_path / "sweep"
    assert launch([str(sweep), "--slurm", "--dry-run", "--output", str(sweep_dir),
                   "--set", "slurm.array_parallelism=2"]) == 0
    script = capsys.readouterr().out.split("#!/bin/bash", 1)[1]
    assert "#SBATCH --array=0-2%2\n" in script
    folder = SweepDir(sweep_dir.resolve()).submitit
    assert f"#SBATCH --output={folder}/%A_%a_0_log.out\n" in script and f"_submit {folder}\n" in script
    assert not sweep_dir.exists()


def test_array_members_must_share_the_slurm_block(tiny_config, tmp_path, fake_sbatch):
    a = load_config(tiny_config)
    b = load_config(tiny_config, ["slurm.timeout_min=5"])
    with pytest.raises(ConfigError, match="slurm.timeout_min differs"):
        slurm.submit_array([(a, tmp_path / "a"), (b, tmp_path / "b")])
    with pytest.raises(ConfigError, match="share a run directory"):
        slurm.submit_array([(a, tmp_path / "a"), (a, tmp_path / "a")])
    assert not fake_sbatch.exists() and not (tmp_path / "a").exists()


# ----------------------------------------------------------------- real Slurm

@pytest.mark.slurm
def test_a_tiny_training_submitted_with_slurm_finishes(tiny_config, tmp_path, cluster, capsys):
    run_dir = tmp_path / "run"
    sets = slurm_sets(**{"train.steps": 6})
    evaluator = evaluator_available()
    if evaluator:
        sets += [f"eval=[{{name: {evaluator}}}]"]
    dry = [str(tiny_config), "--slurm", "--dry-run", "--output", str(run_dir)]
    for assignment in sets:
        dry += ["--set", assignment]
    assert launch(dry) == 0
    rendered = capsys.readouterr().out.split("#!/bin/bash", 1)[1]

    job = cluster.launch(tiny_config, run_dir, *sets, capsys=capsys)
    (result,) = results(job, timeout=150)
    assert result["metrics"]["step"] == 6 and result["world_size"] == 1
    # the dry run printed exactly the script that was submitted
    assert (job.paths.folder / f"{job.job_id}_submission.sh").read_text() == "#!/bin/bash" + rendered.rstrip("\n") + "\n"
    assert checkpoint.load(RunDir(run_dir).checkpoint)["step"] == 6
    assert [m["step"] for m in read_metrics(run_dir)] == list(range(1, 7))
    assert load_config(run_dir / "config.yaml").config == load_config(tiny_config, sets).config
    if evaluator:
        assert (run_dir / "eval.json").exists()
    assert "starting at step 0 of 6" in log_of(job)
    assert not list(Path.cwd().glob("slurm-*.out"))


@pytest.mark.slurm
def test_launcher_prints_how_to_follow_and_cancel(tiny_config, tmp_path, cluster, capsys):
    run_dir = tmp_path / "run"
    args = [str(tiny_config), "--slurm", "--output", str(run_dir)]
    for assignment in slurm_sets(**{"train.steps": 1}):
        args += ["--set", assignment]
    assert launch(args) == 0
    out = capsys.readouterr().out
    job_id = re.search(r"submitted Slurm job (\d+)", out).group(1)
    cluster.job_ids.append(job_id)
    log = RunDir(run_dir.resolve()).submitit / f"{job_id}_0_log.out"
    assert f"run directory: {run_dir.resolve()}" in out
    assert f"tail -f {log}" in out and f"scancel {job_id}" in out
    subprocess.run(["scancel", job_id], check=True)


@pytest.mark.slurm
def test_sbatch_refusing_the_job_is_a_one_line_error(tiny_config, tmp_path, cluster, capsys):
    code = launch([str(tiny_config), "--slurm", "--output", str(tmp_path / "run"),
                   "--set", "slurm.partition=nope"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "sbatch refused the job" in err and "partition" in err


@pytest.mark.slurm
def test_two_tasks_train_with_ddp_in_lockstep_through_a_preemption(tiny_config, tmp_path, cluster, write,
                                                                   checksum_plugin, monkeypatch, capsys):
    """2 tasks x 1 CPU (gloo); USR2 mid-training: both ranks stop at one step, rank 0 requeues.

    A test plugin hashes all parameters after every optimizer step on each rank:
    the two ranks' hashes agree at every step, before and after the requeue.
    """
    checksum, sums = checksum_plugin  # jobs inherit its environment variable
    monkeypatch.setenv("JEPA_TEST_SLOW_S", "0.3")
    plugins = [checksum, write("slow.py", SLOW_PLUGIN)]
    run_dir = tmp_path / "run"
    steps = 8
    job = cluster.launch(tiny_config, run_dir, *slurm_sets(tasks=2, **{
        "train.steps": steps, "train.checkpoint_every": 100, "plugins": f"[{plugins[0]}, {plugins[1]}]",
        "loggers": "[csv]"}), capsys=capsys)
    wait_for_step(run_dir, 3, job, timeout=120)
    subprocess.run(["scancel", "--signal=USR2", job.job_id], check=True)
    out = results(job, timeout=180)
    assert sorted((r["rank"], r["world_size"]) for r in out) == [(0, 2), (1, 2)]
    assert restarts(job.job_id) == 1
    resumed = int(re.search(r"resuming from step (\d+)", log_of(job)).group(1))
    assert 3 <= resumed < steps
    assert f"job requeued by rank 0 at step {resumed}" in log_of(job, 1)
    rank0, rank1 = checksums(sums, 0), checksums(sums, 1)
    assert len(rank0) == steps and rank0 == rank1
    # rank 0 alone wrote the run's files: one line a step, once
    assert [m["step"] for m in read_metrics(run_dir)] == list(range(1, steps + 1))
    assert len((run_dir / "metrics.csv").read_text().splitlines()) == steps + 1
    assert checkpoint.load(RunDir(run_dir).checkpoint)["step"] == steps


@pytest.mark.slurm
def test_a_clip_run_trains_with_two_tasks_in_lockstep_and_evaluates(tiny_clip_config, tmp_path, cluster,
                                                                   checksum_plugin, capsys):
    """The clip path (ac_vit on moving_shapes, frozen target) under DDP on Slurm, as the image path."""
    plugin, sums = checksum_plugin
    run_dir = tmp_path / "run"
    steps = 4
    job = cluster.launch(tiny_clip_config, run_dir, *slurm_sets(tasks=2, **{
        "train.steps": steps, "plugins": f"[{plugin}]",
        "eval": "[{name: rollout, clips: 8}]"}), capsys=capsys)
    out = results(job, timeout=150)
    assert sorted((r["rank"], r["world_size"]) for r in out) == [(0, 2), (1, 2)]
    rank0, rank1 = checksums(sums, 0), checksums(sums, 1)
    assert len(rank0) == steps and rank0 == rank1 and len(set(rank0)) == steps
    assert [m["step"] for m in read_metrics(run_dir)] == list(range(1, steps + 1))
    rollout = json.loads((run_dir / "eval.json").read_text())["rollout"]
    assert math.isfinite(rollout["error_last"]) and rollout["copy_error_last"] > 0


@pytest.mark.slurm
def test_a_preempted_job_resumes_and_ends_equal_to_an_uninterrupted_one(tiny_config, tmp_path, cluster, write,
                                                                        monkeypatch, capsys):
    monkeypatch.setenv("JEPA_TEST_SLOW_S", "0.4")
    slow = write("slow.py", SLOW_PLUGIN)
    steps = 14
    sets = slurm_sets(**{"train.steps": steps, "train.checkpoint_every": 100, "plugins": f"[{slow}]"})
    reference = cluster.launch(tiny_config, tmp_path / "reference", *sets, capsys=capsys)
    job = cluster.launch(tiny_config, tmp_path / "preempted", *sets, capsys=capsys)
    wait_for_step(tmp_path / "preempted", 4, job, timeout=120)
    subprocess.run(["scancel", "--signal=USR2", job.job_id], check=True)
    results(reference, timeout=180)
    results(job, timeout=180)
    log = log_of(job)
    assert restarts(job.job_id) == 1 and restarts(reference.job_id) == 0
    assert "this job is preempted" in log  # not a timeout: the timeout budget is untouched
    resumed = int(re.search(r"resuming from step (\d+) of 14", log).group(1))
    assert 4 <= resumed < steps  # from the checkpoint written at the signal (checkpoint_every is 100)
    assert read_metrics(tmp_path / "preempted") == [
        {**m, "images_per_s": n["images_per_s"]} for m, n in zip(read_metrics(tmp_path / "reference"),
                                                                   read_metrics(tmp_path / "preempted"))]
    same_checkpoints(tmp_path / "reference", tmp_path / "preempted")


@pytest.mark.slurm
def test_a_job_reaching_its_time_limit_is_requeued_and_finishes(tiny_config, tmp_path, cluster, write,
                                                                monkeypatch, capsys):
    """timeout_min=1 with the signal 15 s before the limit.

    Slurm checks time limits every 30 s and signals early rather than late, so
    USR2 arrives 15-45 s into the first attempt (after its first steps), which
    the slow plugin keeps training for > 50 s; the requeued attempt runs at full speed.
    """
    monkeypatch.setenv("JEPA_TEST_SLOW_S", "4")
    slow = write("slow.py", SLOW_PLUGIN)
    steps = 12
    job = cluster.launch(tiny_config, tmp_path / "run", *slurm_sets(**{
        "train.steps": steps, "train.checkpoint_every": 100, "plugins": f"[{slow}]",
        "slurm.timeout_min": 1, "slurm.max_num_timeout": 3,
        "slurm.additional_parameters": "{signal: USR2@15}"}), capsys=capsys)
    (result,) = results(job, timeout=240)
    log = log_of(job)
    assert result["metrics"]["step"] == steps
    assert restarts(job.job_id) >= 1
    assert "this job is timed-out" in log and "(2 remaining timeouts)" in log
    assert 0 < int(re.search(r"resuming from step (\d+)", log).group(1)) < steps
    assert [m["step"] for m in read_metrics(tmp_path / "run")] == list(range(1, steps + 1))


@pytest.mark.slurm
def test_max_num_timeout_is_respected(tiny_config, tmp_path, cluster, write, monkeypatch, capsys):
    """max_num_timeout=0: the first timeout signal ends the job, with its checkpoint, instead of requeueing.

    With timeout_min=1 submitit counts every signal as a timeout; we send it
    (Slurm's own comes 29-59 s into the job: later).
    """
    monkeypatch.setenv("JEPA_TEST_SLOW_S", "1")
    slow = write("slow.py", SLOW_PLUGIN)
    run_dir = tmp_path / "run"
    job = cluster.launch(tiny_config, run_dir, *slurm_sets(**{
        "train.steps": 200, "plugins": f"[{slow}]", "slurm.timeout_min": 1, "slurm.max_num_timeout": 0,
        "slurm.additional_parameters": "{signal: USR2@1}"}), capsys=capsys)
    wait_for_step(run_dir, 2, job, timeout=120)
    subprocess.run(["scancel", "--signal=USR2", job.job_id], check=True)
    wait_done(job, timeout=120)
    with pytest.raises(submitit.core.utils.FailedJobError, match="timed-out too many times"):
        job.results()
    assert restarts(job.job_id) == 0
    stopped = int(re.search(r"checkpoint written at step (\d+)", log_of(job)).group(1))
    assert checkpoint.load(RunDir(run_dir).checkpoint)["step"] == stopped >= 2


@pytest.mark.slurm
def test_a_job_failing_with_a_real_error_is_not_requeued(tiny_config, tmp_path, cluster, write, capsys):
    fail = write("fail.py", FAIL_PLUGIN)
    job = cluster.launch(tiny_config, tmp_path / "run", *slurm_sets(**{
        "train.steps": 20, "plugins": f"[{fail}]"}), capsys=capsys)
    wait_done(job, timeout=120)
    with pytest.raises(submitit.core.utils.FailedJobError, match="a real bug at step 2"):
        job.results()
    time.sleep(2)
    assert restarts(job.job_id) == 0
    assert "FAILED" in subprocess.run(["sacct", "-j", job.job_id, "-o", "State", "-n", "-P"],
                                      capture_output=True, text=True).stdout


@pytest.mark.slurm
def test_submit_array_sends_one_array_with_a_run_directory_each(tiny_config, tmp_path, cluster):
    members = [(load_config(tiny_config, slurm_sets(**{"train.steps": 3, "train.seed": seed})),
                tmp_path / "sweep" / f"seed{seed}") for seed in (0, 1)]
    jobs = slurm.submit_array(members)
    cluster.track(jobs)
    array_id = {job.job_id.split("_")[0] for job in jobs}
    assert len(array_id) == 1 and [job.job_id.split("_")[1] for job in jobs] == ["0", "1"]
    for job, (loaded, run_dir) in zip(jobs, members):
        (result,) = results(job, timeout=150)
        assert Path(result["run_dir"]) == run_dir.resolve()
        assert checkpoint.load(RunDir(run_dir).checkpoint)["step"] == 3
        assert load_config(run_dir / "config.yaml").config == loaded.config
    assert SweepDir(tmp_path / "sweep").submitit.is_dir()
    losses = [read_metrics(run_dir)[-1]["loss"] for _, run_dir in members]
    assert losses[0] != losses[1]  # two seeds, two runs


@pytest.mark.slurm
def test_a_sweep_goes_to_slurm_as_one_array_and_ablate_gives_the_local_layout(tiny_config, tmp_path, cluster,
                                                                             write, capsys):
    from jepa_core.ablate import ablate
    sweep = write("sweep.yaml", f"base: {tiny_config}\nsweep:\n  seeds: [0, 1]\n")
    sets = [arg for s in slurm_sets(**{"train.steps": 3}) for arg in ("--set", s)]
    on_slurm, here = tmp_path / "on_slurm", tmp_path / "here"
    assert launch([str(sweep), "--slurm", "--output", str(on_slurm), *sets]) == 0
    out = capsys.readouterr().out
    ids = re.findall(r"Slurm job (\d+)_(\d+)", out)
    assert len(ids) == 2 and len({array for array, _ in ids}) == 1  # one array of two
    cluster.job_ids += [f"{a}_{i}" for a, i in ids]
    deadline = time.monotonic() + 150
    runs = [on_slurm / "train.seed-0", on_slurm / "train.seed-1"]
    while not all(RunDir(r).state() == "finished" for r in runs):
        assert time.monotonic() < deadline, [RunDir(r).state() for r in runs]
        time.sleep(1)
    assert launch([str(sweep), "--output", str(here), *sets]) == 0
    headers = [ablate(d)["csv"].read_text().splitlines()[0] for d in (on_slurm, here)]
    assert headers[0] == headers[1] and "train.seed" in headers[0]
