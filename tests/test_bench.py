"""The benchmark's FLOP count and command line (its figures are measurements, never asserted here)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from timm.models.vision_transformer import Block

from jepa_core.bench.__main__ import main
from jepa_core.bench.flops import count_flops


@pytest.mark.parametrize("heads", [3, 12])
def test_a_transformer_block_counts_its_model_flops_attention_included(heads):
    """MFU divides these FLOPs by time: on the CPU torch's own counter sees no attention at all."""
    batch, tokens, width = 2, 50, 192
    block = Block(width, heads, mlp_ratio=4.0, qkv_bias=True)
    x = torch.randn(batch, tokens, width, requires_grad=True)

    total, per_op = count_flops(lambda: block(x).sum().backward())

    linear = 2 * batch * tokens * 12 * width**2  # qkv, proj and the 4x MLP, forward
    attention = 4 * batch * tokens**2 * width  # q @ k^T and attn @ v over all heads, forward
    assert total == 3 * (linear + attention)  # backward: twice the forward, no recomputed scores
    assert sum(n for op, n in per_op.items() if "attention" in op) == 3 * attention


def test_json_rows_carry_value_reference_and_their_ratio(capsys):
    assert main(["--suite", "masking", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["suite"] == "masking" and row["unit"] == "ms/batch" and row["target"] == ">= 20x"
    assert row["ratio"] == pytest.approx(row["reference"] / row["value"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_a_one_line_error(capsys):
    assert main(["--device", "cuda", "--suite", "masking"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no CUDA device" in err


def test_a_spawned_process_peak_rss_is_its_own_not_its_parents():
    """The memory suite's children are spawned by a bench process holding gigabytes."""
    held = bytearray(2 << 30)
    held[::4096] = b"\1" * len(held[::4096])  # make the parent's 2 GiB resident
    code = ("import resource; from jepa_core.bench.memory import peak_rss_bytes; "
            "print(peak_rss_bytes(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    own, inherited = map(int, done.stdout.split())
    assert inherited > 2 << 30  # ru_maxrss would have reported the parent's 2 GiB
    assert own < 1 << 30  # torch imported: about 0.6 GiB
    del held


def test_a_hopeless_precision_is_timed_on_its_smallest_size_only(monkeypatch):
    """bf16 on an AVX2 CPU takes ~0.4 s for a 512 matmul and ~25 s for 2048: the peak stops at the first."""
    from jepa_core.bench import train_step

    sizes = []

    def slow(fn, device):
        sizes.append(len(sizes))
        return 1.0  # every call over the budget

    monkeypatch.setattr(train_step, "_timed", slow)
    assert train_step.matmul_peak("cpu", torch.bfloat16, seconds=0.5) == pytest.approx(2 * 512**3)
    assert len(sizes) == 1


def test_the_recipes_suite_times_an_experiment_file_at_its_shapes(capsys):
    """``--suite recipes`` is what a GPU owner runs on the papers' files; here a CPU file at batch 2."""
    assert main(["--suite", "recipes", "--experiment", "experiments/ijepa_cpu.yaml", "--batch", "2", "--json"]) == 0
    peak, step, mfu, memory = json.loads(capsys.readouterr().out)
    assert step["name"].startswith("ijepa_cpu: vit_tiny_patch16_224") and "batch 2, " in step["name"]
    precision = step["name"].rsplit(", ", 1)[1]  # ``auto``: bf16 on an AMX Xeon, fp32 elsewhere
    assert precision in ("fp32", "bf16")
    assert peak["name"] == f"matmul peak {precision} (best square size)" and peak["value"] > 0
    assert step["unit"] == "img/s" and step["value"] > 0
    assert mfu["unit"] == "%" and 0 < mfu["value"] < 100
    assert memory["unit"] == "GiB" and 0.1 < memory["value"] < 8  # the child's own peak, not the test process's


@pytest.mark.parametrize("argv, message", [
    (["--suite", "masking", "--batch", "4"], "--experiment and --batch set the recipes suite: add --suite recipes"),
    (["--suite", "recipes", "--experiment", "experiments/nope.yaml"], "--experiment experiments/nope.yaml: no such file"),
])
def test_recipes_suite_bad_input_is_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_a_batch_that_is_not_positive_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--suite", "recipes", "--batch", "0"])
    assert exit_.value.code == 2 and "must be a positive integer, got '0'" in capsys.readouterr().err


def test_a_failing_suite_leaves_the_finished_suites_figures_printed(monkeypatch, capsys):
    """On the first GPU run the peer suite failed and took the masking and precision figures with it."""
    from jepa_core.bench import photometric

    def broken(device):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(photometric, "run", broken)
    with pytest.raises(RuntimeError, match="out of memory"):
        main(["--suite", "masking", "--suite", "photometric", "--json"])
    (row,) = json.loads(capsys.readouterr().out)
    assert row["suite"] == "masking"


@pytest.mark.parametrize("every, expected", [(None, 2), (6, 6)])
def test_the_health_row_spreads_a_check_over_the_steps_between_checks(tiny_config, every, expected):
    """The quickstart checks every 20 steps while logging every 10: its cost is one check per 20 steps."""
    from jepa_core.bench.health import overhead
    from jepa_core.config import load_config

    loaded = load_config(tiny_config, ["train.log_every=2", f"health.every={'null' if every is None else every}"])
    check, step, between = overhead(loaded, "cpu")
    assert between == expected and check > 0 and step > 0


def test_the_loader_is_held_against_the_fastest_step(monkeypatch, tmp_path):
    """On a CPU with fast bf16 a run consumes the bf16 step's images/s, three times the fp32 step's."""
    from jepa_core.bench import data_loading, precision

    monkeypatch.setattr(precision, "measured", lambda device: ({}, {"fp32": (3.0, 1e11), "bf16": (1.0, 3e11)}))
    monkeypatch.setattr(data_loading, "write_folder", lambda root: root)
    monkeypatch.setattr(data_loading, "loader_images_per_s", lambda root, workers: 64.0)
    row = data_loading.run("cpu")[0]
    assert "bf16 step" in row["name"] and row["reference"] == data_loading.BATCH / 1.0 and row["ratio"] == 4.0
