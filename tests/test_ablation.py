"""The tiny conditioning ablation, end to end on the CPU: sweep, table, plot, relaunch."""

import csv
import os

import pytest

from jepa_core.ablate import main as ablate
from jepa_core.launch import main as launch
from jepa_core.sweep import read_manifest

SWEEP = "experiments/ablations/tiny_conditioning.yaml"
#: the sweep's evaluators less ``spectrum`` (about a third of the sweep's time; tests/test_spectrum.py
#: draws it from a sweep), with the same ranking settings
EVALUATORS = ["--set", "eval=[{name: equivariance_mrr, n_images: 512, bank_size: 64}, {name: linear_probe}]"]


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("ablation") / "sweep"
    assert launch([SWEEP, *EVALUATORS, "--parallel", "3", "--output", str(out)]) == 0  # 3: no core idles for the last member
    assert ablate([str(out)]) == 0
    return out


def _rows(sweep_dir):
    with open(sweep_dir / "ablation.csv") as f:
        return {row["conditioning.name"]: row for row in csv.DictReader(f)}


def test_none_sits_at_chance_and_conditioned_predictors_are_clearly_above(sweep_dir):
    rows = _rows(sweep_dir)
    assert set(rows) == {"none", "sequence", "feature"}
    mrr = {name: float(row["equivariance_mrr.mrr"]) for name, row in rows.items()}
    err = {name: float(row["equivariance_mrr.mrr_stderr"]) for name, row in rows.items()}
    chance = float(rows["none"]["equivariance_mrr.chance"])
    assert abs(mrr["none"] - chance) < 3 * err["none"], (mrr, err)  # it cannot know the action
    for name in ("sequence", "feature"):
        assert mrr[name] > 1.4 * chance and mrr[name] > mrr["none"] + 3 * max(err[name], err["none"]), (mrr, err)
    assert (sweep_dir / "ablation.png").stat().st_size > 1000
    assert "| none |" in (sweep_dir / "ablation.md").read_text()


def test_relaunch_skips_finished_members_and_finishes_unfinished_ones(sweep_dir, capsys):
    members = {m["name"]: m for m in read_manifest(sweep_dir)["members"]}
    assert {m["state"] for m in members.values()} == {"finished"}
    unfinished = sweep_dir / "conditioning-none"
    (unfinished / "status.json").unlink()  # as if the run had stopped after its last checkpoint
    finished_eval = sweep_dir / "conditioning-feature" / "eval.json"
    before = os.stat(finished_eval).st_mtime_ns
    assert launch([SWEEP, *EVALUATORS, "--output", str(sweep_dir)]) == 0
    out = capsys.readouterr().out
    assert "conditioning-feature: finished already, skipped" in out
    assert "conditioning-none: starting" in out
    assert os.stat(finished_eval).st_mtime_ns == before
    assert {m["state"] for m in read_manifest(sweep_dir)["members"]} == {"finished"}
