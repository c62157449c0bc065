"""train.precision: explicit choices stay, ``auto`` follows what the matmul probe measures."""

from __future__ import annotations

import json

import pytest
import torch

from jepa_core import precision as P


@pytest.fixture(autouse=True)
def fresh_probe():
    P._measure.cache_clear()
    yield
    P._measure.cache_clear()


def _fake_cpu(monkeypatch, fp32: float, bf16: float) -> list:
    """Replace the timing with fixed throughputs (GFLOP/s); record every call."""
    calls = []

    def gflops(device, dtype, m, k, n, deadline_s):
        calls.append((dtype, m, deadline_s))
        return fp32 if dtype == torch.float32 else bf16

    monkeypatch.setattr(P, "_gflops", gflops)
    return calls


def test_explicit_precisions_are_kept_without_measuring(monkeypatch):
    calls = _fake_cpu(monkeypatch, 300, 1900)
    assert P.choose("fp32", torch.device("cpu"), 2048, 192).dtype is None
    assert P.choose("bf16", torch.device("cpu"), 2048, 192).dtype is torch.bfloat16
    assert calls == []


def test_auto_picks_bf16_where_it_is_clearly_faster(monkeypatch):
    """A Xeon with AMX (bf16 ~5x fp32) trains in bf16; the figures and ratio are in the reason."""
    _fake_cpu(monkeypatch, 340, 1900)
    choice = P.choose("auto", torch.device("cpu"), 2048, 192)
    assert choice.name == "bf16" and choice.dtype is torch.bfloat16
    assert (choice.fp32_gflops, choice.bf16_gflops) == (340, 1900) and "2048x192x768" in choice.reason
    assert "5.59x" in choice.reason


@pytest.mark.parametrize("bf16", [0.7, 170, 340, 400])
def test_auto_keeps_fp32_where_bf16_is_slow_or_barely_faster(monkeypatch, bf16):
    """An AVX2 EPYC (bf16 ~500x slower), a Xeon without AMX (~0.5x) or a tie keeps fp32;
    a hopeless bf16 is timed on 1/16 of the rows only."""
    calls = _fake_cpu(monkeypatch, 340, bf16)
    choice = P.choose("auto", torch.device("cpu"), 2048, 192)
    assert choice.name == "fp32" and choice.dtype is None
    rows = [(dtype, m) for dtype, m, _ in calls]
    slice_only = [(torch.float32, 128), (torch.bfloat16, 128)]
    assert rows == (slice_only if bf16 < 340 / P.HOPELESS else slice_only + [(torch.float32, 2048), (torch.bfloat16, 2048)])


def test_only_the_full_shape_decides(monkeypatch):
    """A slow bf16 on the small slice (an AMX Xeon's first calls, 2 fresh processes of 6) does not keep fp32."""
    monkeypatch.setattr(P, "_gflops", lambda device, dtype, m, k, n, deadline_s:
                        340 if dtype == torch.float32 else (210 if m < 2048 else 1900))
    assert P.choose("auto", torch.device("cpu"), 2048, 192).name == "bf16"


def test_the_probe_runs_once_per_process_and_shape(monkeypatch):
    calls = _fake_cpu(monkeypatch, 340, 1900)
    for _ in range(3):
        P.choose("auto", torch.device("cpu"), 2048, 192)
    assert len(calls) == 4  # both on a slice, then both at the real shape: once


def _scripted_clock(monkeypatch, durations) -> None:
    """``time.perf_counter`` for ``_gflops``: start, then (begin, end) around each call; each end
    advances the clock by the next of ``durations``."""
    durations, clock, reads = iter(durations), [0.0], [0]

    def perf_counter():
        reads[0] += 1
        if reads[0] > 1 and reads[0] % 2 == 1:
            clock[0] += next(durations)
        return clock[0]

    monkeypatch.setattr(P.time, "perf_counter", perf_counter)


def test_a_slow_spell_in_one_call_does_not_decide(monkeypatch):
    """Each precision counts its fastest call: one 50-ms call among 1-ms ones reads as 1 ms, not their mean."""
    _scripted_clock(monkeypatch, [0.05] + [0.001] * 100)
    m, k, n = 64, 32, 128
    assert P._gflops(torch.device("cpu"), torch.float32, m, k, n, deadline_s=1.0) == pytest.approx(2 * m * k * n / 0.001 / 1e9)


def test_slow_first_bf16_calls_on_the_slice_do_not_read_as_hopeless(monkeypatch):
    """A Zen 4 under load: two 10-ms bf16 calls, then 0.1 ms, where fp32 takes 0.4 ms a call.
    Judged on the first call bf16 read 25x slower than fp32 (hopeless); it is 4x faster."""
    m, k, n = 196, 192, 768
    fp32 = 2 * m * k * n / 0.0004 / 1e9
    _scripted_clock(monkeypatch, [0.01, 0.01] + [0.0001] * 1000)
    bf16 = P._gflops(torch.device("cpu"), torch.bfloat16, m, k, n, deadline_s=P._slice_deadline(fp32, m, k, n))
    assert bf16 == pytest.approx(4 * fp32)


def test_a_hopeless_bf16_stops_after_one_call_on_the_slice(monkeypatch):
    """An AVX2 EPYC: bf16 0.2 s a call on the slice is timed once, so the probe stays well under a second."""
    m, k, n = 196, 192, 768
    fp32 = 2 * m * k * n / 0.0004 / 1e9
    _scripted_clock(monkeypatch, [0.2] * 10)
    P._gflops(torch.device("cpu"), torch.bfloat16, m, k, n, deadline_s=P._slice_deadline(fp32, m, k, n))
    assert P.time.perf_counter() == pytest.approx(0.2)  # the clock moved by one call


def test_the_real_probe_is_quick_and_positive():
    """On this machine, whichever CPU it has: both throughputs measured, under a second."""
    import time

    start = time.perf_counter()
    choice = P.choose("auto", torch.device("cpu"), 1024, 192)
    assert time.perf_counter() - start < 1.0
    assert choice.fp32_gflops > 0 and choice.bf16_gflops > 0 and choice.name in ("fp32", "bf16")


def test_a_run_records_and_prints_its_precision(tiny_config, tmp_path, capsys, monkeypatch):
    from jepa_core.config import load_config
    from jepa_core.experiment import build_experiment
    from jepa_core.rundir import RunDir
    from jepa_core.train import Trainer

    _fake_cpu(monkeypatch, 340, 0.7)
    Trainer(build_experiment(load_config(tiny_config, ["train.steps=2"])), tmp_path).fit()
    record = json.loads(RunDir(tmp_path).precision.read_text())
    assert record["name"] == "fp32" and record["requested"] == "auto" and record["bf16_gflops"] == 0.7
    assert capsys.readouterr().out.count("precision: fp32 (measured matmul") == 1


def test_a_resumed_auto_run_keeps_the_precision_its_first_launch_measured(tiny_config, tmp_path, monkeypatch):
    """Measured bf16 at the first launch, fp32 at the relaunch: the resumed run stays in bf16, and says why."""
    from jepa_core.config import load_config
    from jepa_core.experiment import build_experiment
    from jepa_core.rundir import RunDir
    from jepa_core.train import Trainer

    small = ["data.batch_size=8", "data.image_size=32", "data.dataset.size=32", "health.every=0"]
    _fake_cpu(monkeypatch, 340, 1900)
    Trainer(build_experiment(load_config(tiny_config, [*small, "train.steps=2"])), tmp_path).fit()
    P._measure.cache_clear()
    _fake_cpu(monkeypatch, 340, 0.7)
    resumed = Trainer(build_experiment(load_config(tiny_config, [*small, "train.steps=3"])), tmp_path)
    assert resumed.precision.name == "bf16" and resumed.precision.bf16_gflops == 1900
    assert resumed.precision.reason.startswith("kept from the run's first launch: measured matmul")
    resumed.fit()
    record = json.loads(RunDir(tmp_path).precision.read_text())
    assert record["name"] == "bf16" and record["reason"].count("kept from") == 1
    fresh = Trainer(build_experiment(load_config(tiny_config, [*small, "train.steps=3"])), tmp_path / "new")
    assert fresh.precision.name == "fp32"  # a new run measures


def test_a_forced_bf16_run_on_the_cpu_trains_with_finite_monitors(tiny_config, tmp_path):
    """bf16 autocast on the CPU: the loss falls and the health monitors stay finite.

    Small (8 images of 32 px, 20 steps): on an AVX2 CPU a bf16 matmul is hundreds of times slower than fp32.
    """
    import math

    from jepa_core.launch import main as launch
    from jepa_core.rundir import RunDir
    from helpers import read_metrics

    run_dir = tmp_path / "run"
    small = ["data.batch_size=8", "data.image_size=32", "data.dataset.size=32", "train.steps=20", "health.every=5"]
    assert launch([str(tiny_config), "--output", str(run_dir), "--set", "train.precision=bf16",
                   *[a for s in small for a in ("--set", s)]]) == 0
    assert json.loads(RunDir(run_dir).precision.read_text())["name"] == "bf16"
    metrics = read_metrics(run_dir)
    losses = [m["loss"] for m in metrics]
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5, losses
    checks = [m for m in metrics if "rankme" in m]
    assert len(checks) == 4
    assert all(math.isfinite(m[k]) for m in checks for k in ("rankme", "feature_std", "pred_target_cos"))
