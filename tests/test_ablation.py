"""The tiny conditioning ablation, end to end on the CPU: sweep, table, plot (relaunch: tests/test_sweep.py)."""

import csv

import pytest

from jepa_core.ablate import main as ablate
from jepa_core.launch import main as launch

SWEEP = "experiments/ablations/tiny_conditioning.yaml"
#: the sweep's ranking, with the same settings, less what this test does not read: ``spectrum``
#: (tests/test_spectrum.py draws it from a sweep), the per-op MRRs (a second ranking pass) and the
#: linear probe (test_sweep.py checks the scatter it feeds). They were two thirds of the sweep's time.
#: 128 images x 8 queries: a quarter of the bank forwards of the sweep's 512 x 1, about the same standard error.
EVALUATORS = ["--set", "eval=[{name: equivariance_mrr, n_images: 128, bank_size: 64, queries: 8, "
              "per_transformation: false}]"]


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
