"""Distributed training without Slurm: rendezvous, DDP equivalence, ``--local --nproc``."""

from __future__ import annotations

import os
from pathlib import Path

import attrs
import pytest
import torch
import torch.multiprocessing as mp

from jepa_core import checkpoint, distributed
from jepa_core.config import load_config
from jepa_core.data import build_loader
from jepa_core.experiment import build_experiment
from jepa_core.launch import main as launch
from jepa_core.rundir import RunDir
from jepa_core.train import Trainer
from helpers import DDP_RTOL, assert_all_close_scaled, checksums, read_metrics

pytestmark = pytest.mark.distributed

# ------------------------------------------------------------------ rendezvous

def _clear_env(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "SUBMITIT_EXECUTOR"):
        monkeypatch.delenv(key, raising=False)


def test_single_process_without_a_distributed_environment(monkeypatch):
    _clear_env(monkeypatch)
    assert distributed.env_rendezvous() is None
    info = distributed.init("cpu")
    assert (info.rank, info.world_size, info.is_main, info.active) == (0, 1, True, False)


def test_torchrun_variables_are_used_as_they_are(monkeypatch):
    _clear_env(monkeypatch)
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("MASTER_ADDR", "node7")
    monkeypatch.setenv("MASTER_PORT", "23456")
    assert distributed.env_rendezvous() == {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1",
                                            "MASTER_ADDR": "node7", "MASTER_PORT": "23456"}
    monkeypatch.delenv("MASTER_PORT")
    with pytest.raises(distributed.DistributedInitError, match="MASTER_PORT"):
        distributed.env_rendezvous()


def test_submitit_slurm_environment_gives_ranks_and_a_port_from_the_job_id(monkeypatch):
    _clear_env(monkeypatch)
    env = {"SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": "123457", "SLURM_NTASKS": "8",
           "SLURM_JOB_NUM_NODES": "2", "SLURM_NODEID": "1", "SLURM_PROCID": "5", "SLURM_LOCALID": "1",
           "SLURM_JOB_NODELIST": "gpu[017-018]"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    found = distributed.env_rendezvous()
    assert found == {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "MASTER_ADDR": "gpu017",
                     "MASTER_PORT": str(distributed.slurm_port("123457"))}
    assert 10000 <= int(found["MASTER_PORT"]) < 30000
    assert distributed.slurm_port("123457") != distributed.slurm_port("123458")  # not a constant
    monkeypatch.setenv("MASTER_PORT", "40000")  # set by the user (e.g. slurm.setup): respected
    assert distributed.env_rendezvous()["MASTER_PORT"] == "40000"
    monkeypatch.setenv("SLURM_NTASKS", "1")
    assert distributed.env_rendezvous() is None  # a one-task job trains alone


def test_a_failed_rendezvous_is_an_error_not_a_single_process(monkeypatch):
    _clear_env(monkeypatch)
    for key, value in {"RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(distributed.free_port()), "JEPA_CORE_DIST_TIMEOUT_S": "2"}.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(distributed.DistributedInitError, match=r"rank 1/2 at 127\.0\.0\.1:\d+ \(gloo\)"):
        distributed.init("cpu")
    assert not torch.distributed.is_initialized()


# ------------------------------------------------------------ DDP equivalence

FP32 = ["train.precision=fp32"]


def _half(views, rank: int, size: int):
    """Rows [rank*size, (rank+1)*size) of a view batch (all per-sample tensors)."""
    rows = slice(rank * size, (rank + 1) * size)
    masks = attrs.evolve(views.masks, context=views.masks.context[rows], targets=views.masks.targets[rows])
    return attrs.evolve(views, target=views.target[rows], source=views.source[rows],
                        action=views.action[rows], masks=masks, source_params={}, target_params={})


def _grads(exp) -> dict[str, torch.Tensor]:
    return {f"{m}.{n}": p.grad.detach().clone() for m, module in (("encoder", exp.encoder), ("predictor", exp.predictor))
            for n, p in module.named_parameters() if p.grad is not None}


def _ddp_worker(rank: int, world: int, port: int, config: str, batch: str, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    exp = build_experiment(load_config(config, FP32))
    dist = distributed.init("cpu")
    try:
        trainer = Trainer(exp, Path(out) / f"run{rank}", dist)  # DDP-wraps encoder and predictor
        views = torch.load(batch, weights_only=False)
        size = views.source.shape[0] // world
        loss = trainer._forward_loss(_half(views, rank, size))
        loss.backward()  # DDP all-reduces (averages) the gradients here
        torch.save({"loss": loss.item(), "grads": _grads(exp)}, Path(out) / f"rank{rank}.pt")
    finally:
        distributed.shutdown()


def test_two_processes_with_batch_b_match_one_process_with_batch_2b(tiny_config, tmp_path):
    """Same inputs split in two: the mean loss and DDP's averaged gradients equal the big batch's.

    The views (crops, masks) are drawn once for all 2B images and split, so both
    sides see exactly the same samples; in training, each rank draws its own with
    mix_seed(seed, rank, step), which is what makes ranks see different masks.

    The two ranks hold bitwise the same gradients (the same all-reduced buffer);
    against the big batch they are the same sums in another order, compared at
    the scale of their module (``DDP_RTOL``): the untrained encoder's gradients
    are ~2e-5 at most, so an absolute 1e-6 was 5% of them. Both sides train in fp32
    whatever ``auto`` would pick: bf16 rounds the two sums differently (0.2% of the
    scale on an AMX Xeon), which says nothing about DDP's averaging.
    """
    exp = build_experiment(load_config(tiny_config, FP32))
    cfg = exp.config
    loader, _ = build_loader(exp.dataset("train"), image_size=cfg.data.image_size, batch_size=2 * 8,
                             crop_scale=cfg.data.crop_scale, flip_p=cfg.data.flip_p, seed=0, num_workers=0)
    images = next(iter(loader))["image"]
    views = exp.views(images, torch.Generator().manual_seed(7))
    batch = tmp_path / "views.pt"
    torch.save(views, batch)

    full = Trainer(exp, tmp_path / "single")
    loss = full._forward_loss(views)
    loss.backward()
    reference = _grads(exp)

    mp.spawn(_ddp_worker, args=(2, distributed.free_port(), str(tiny_config), str(batch), str(tmp_path)),
             nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert ranks[0]["loss"] != ranks[1]["loss"]  # the halves are different samples
    # the same sums in another order: under load the CPU kernels may split them differently (2e-5 seen)
    assert (ranks[0]["loss"] + ranks[1]["loss"]) / 2 == pytest.approx(loss.item(), rel=DDP_RTOL)
    assert set(ranks[0]["grads"]) == set(reference) == set(ranks[1]["grads"])
    for name in reference:
        assert torch.equal(ranks[0]["grads"][name], ranks[1]["grads"][name]), name  # all-reduced
    assert_all_close_scaled(ranks[0]["grads"], reference, DDP_RTOL, "rank 0 gradient")
    with pytest.raises(AssertionError):  # the negative control: summed instead of averaged must fail
        assert_all_close_scaled({k: 2 * g for k, g in ranks[0]["grads"].items()}, reference, DDP_RTOL, "summed")


# ------------------------------------------------------------ --local --nproc

@pytest.mark.parametrize("config", ["tiny_config", "tiny_clip_config"])  # image and clip runs alike
def test_local_nproc_2_trains_in_lockstep_and_only_rank_0_writes(config, request, tmp_path, checksum_plugin, capfd):
    plugin, sums = checksum_plugin
    run_dir = tmp_path / "run"
    steps = 4
    assert launch([str(request.getfixturevalue(config)), "--local", "--nproc", "2", "--output", str(run_dir),
                   "--set", f"train.steps={steps}", "--set", "data.batch_size=8",
                   "--set", f"plugins=[{plugin}]", "--set", "loggers=[csv]"]) == 0
    assert f"finished at step {steps}" in capfd.readouterr().out
    rank0, rank1 = checksums(sums, 0), checksums(sums, 1)
    assert len(rank0) == steps and rank0 == rank1  # the same parameters on both ranks after every step
    assert len(set(rank0)) == steps  # ... and they did change every step
    assert [m["step"] for m in read_metrics(run_dir)] == list(range(1, steps + 1))  # written once
    assert len((run_dir / "metrics.csv").read_text().splitlines()) == steps + 1  # header + one row a step
    assert checkpoint.load(RunDir(run_dir).checkpoint)["step"] == steps


def test_nproc_is_refused_with_slurm(tiny_config, capsys):
    with pytest.raises(SystemExit) as exit_:
        launch([str(tiny_config), "--slurm", "--nproc", "2"])
    assert exit_.value.code == 2
    assert "slurm.tasks_per_node" in capsys.readouterr().err
