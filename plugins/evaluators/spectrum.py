"""The invariance-equivariance spectrum of a run (IWM: a run sits anywhere between the two).

For every *action op* of the run's views -- each op of the target pipeline
with parameters (``action_dim > 0``) -- two numbers:

``mrr_<op>``: how equivariant the predictor is for that op. Exactly the
  ``equivariance_mrr`` evaluator's per-op MRR (the same code, the same random
  stream, so the same value for the same ranking settings): the true latent of
  the image with only ``op`` varying is ranked among the same image under
  ``bank_size`` draws of ``op``. ``mrr``, ``mrr_stderr`` and ``chance`` are
  that evaluator's too.

``r2_<op>``: how much of the op's parameters the frozen target encoder still
  carries. Each image of a train subset (``n_train``) and a held-out val subset
  (``n_val``) is transformed by ``op`` alone, with parameters from the op's own
  sampler (``op.sample``: its probability ``p`` included, every other op the
  identity); the regression target is the op's parameter vector as the action
  encodes it from the identity, ``op.encode(op.null_params(n), params)``
  (``action_dim`` entries: the jitter factors' offsets, or a flag). Features are
  the target encoder's average-pooled tokens of the transformed image.

Ridge protocol: features standardised with the train subset's mean and
standard deviation, targets centred with its mean (the intercept); the
closed form minimises ``mean squared error + lambda * |w|^2``, so lambda is
relative to unit feature variance and does not scale with the number of
images. lambda is chosen per op from the fixed grid ``ridge`` (one value: no
choice) by the mean R^2 on a validation fold of the train subset (a seeded
fifth of it), then the ridge is refit on the whole train subset. The reported
R^2 is on the val subset, ``1 - SS_res / SS_tot`` per parameter dimension
(SS_tot about the val mean, as sklearn's ``r2_score``), averaged over the
dimensions that vary; it is raw, not clipped: below 0 means the encoder's
features predict the parameters worse than their mean (an invariant encoder
lands around 0, slightly below). An op whose parameters never vary (a flag op
drawn with ``p: 1``) gets ``nan``.

The picture (``path``, relative to the run directory; not drawn when the run
has no directory and the path is relative): one bar pair per op, MRR and R^2
side by side, chance MRR dashed. Registered by plugins/evaluators/__init__.py.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import attrs
import torch

from jepa_core.api import Evaluator, atomic_write, normalize, validators as v
from jepa_core.plugins.evaluators.features import eval_mode
from jepa_core.plugins.evaluators.seeding import generator
from jepa_core.plugins.evaluators.subsets import loader, split, to_pixels
from jepa_core.plugins.evaluators.equivariance import EquivarianceMRR, RankingConfig

#: fraction of the train subset held out to choose lambda
VALIDATION_FRACTION = 0.2


def positive_list(instance: Any, attribute: Any, value: Any) -> None:
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError(f"'{attribute.name}' must be a non-empty list of numbers > 0, got {value!r}", attribute)
    for item in value:
        v.positive(instance, attribute, item)


def action_ops(views) -> list[tuple[str, Any]]:
    """The target pipeline's ops with parameters (the ones the spectrum places)."""
    return [(name, op) for name, op in views.target if op.action_dim > 0]


# --------------------------------------------------------------------------- ridge


def r2_score(predicted: torch.Tensor, truth: torch.Tensor) -> float:
    """Mean over the varying target dimensions of ``1 - SS_res / SS_tot``; nan when none varies."""
    ss_tot = (truth - truth.mean(dim=0)).pow(2).sum(dim=0)
    ss_res = (truth - predicted).pow(2).sum(dim=0)
    varying = ss_tot > 1e-12 * truth.shape[0]
    if not bool(varying.any()):
        return float("nan")
    return float((1.0 - ss_res[varying] / ss_tot[varying]).mean())


class Ridge:
    """Closed-form ridge on standardised features, for several lambdas at once (one eigendecomposition)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        x, y = x.double(), y.double()
        self.mean, self.std = x.mean(dim=0), x.std(dim=0).clamp_min(1e-6)
        self.y_mean = y.mean(dim=0)
        xs = (x - self.mean) / self.std
        n = x.shape[0]
        self.eigvals, self.eigvecs = torch.linalg.eigh(xs.T @ xs / n)
        self.projected = self.eigvecs.T @ (xs.T @ (y - self.y_mean) / n)  # (D, out)

    def predict(self, x: torch.Tensor, lam: float) -> torch.Tensor:
        w = self.eigvecs @ (self.projected / (self.eigvals.clamp_min(0.0) + lam).unsqueeze(1))
        return ((x.double() - self.mean) / self.std) @ w + self.y_mean


def ridge_r2(train_x: torch.Tensor, train_y: torch.Tensor, val_x: torch.Tensor, val_y: torch.Tensor,
             lambdas: tuple[float, ...], g: torch.Generator) -> tuple[float, float]:
    """Held-out R^2 and the lambda chosen on a validation fold of the train set (see the module docstring)."""
    lam = lambdas[0]
    n = train_x.shape[0]
    held = max(1, int(round(n * VALIDATION_FRACTION)))
    if len(lambdas) > 1 and n - held >= 2:
        order = torch.randperm(n, generator=g)
        fit, fold = order[held:], order[:held]
        ridge = Ridge(train_x[fit], train_y[fit])
        scores = [r2_score(ridge.predict(train_x[fold], lam), train_y[fold].double()) for lam in lambdas]
        scores = [s if math.isfinite(s) else -math.inf for s in scores]
        lam = lambdas[max(range(len(lambdas)), key=lambda i: (scores[i], -i))]  # ties: the first in the grid
    return r2_score(Ridge(train_x, train_y).predict(val_x, lam), val_y.double()), lam


# --------------------------------------------------------------------------- evaluator


class Spectrum(Evaluator):
    """Invariance-equivariance spectrum: per action op, the predictor's MRR and the encoder's R^2 of its parameters."""

    name = "spectrum"
    needs = frozenset({"predictor", "actions"})

    @attrs.frozen
    class Config(RankingConfig):
        #: train images the ridge is fitted on (deterministic subset of the train split)
        n_train: int = attrs.field(default=512, validator=v.positive_int)
        #: held-out val images R^2 is reported on
        n_val: int = attrs.field(default=256, validator=v.positive_int)
        #: ridge lambdas (on standardised features, against the mean squared error), chosen on a
        #: validation fold of the train images; one value: fixed
        ridge: tuple = attrs.field(default=(1e-3, 1e-2, 1e-1, 1.0, 10.0), converter=v.as_pair,
                                   validator=positive_list)
        #: output PNG, absolute or relative to the run directory
        path: str = attrs.field(default="spectrum.png", validator=attrs.validators.instance_of(str))

    def _mrr(self, run) -> dict[str, float]:
        """The equivariance_mrr evaluator's results for these ranking settings (all of its per-op MRRs)."""
        ranking = {f.name: getattr(self.config, f.name) for f in attrs.fields(RankingConfig)}
        return EquivarianceMRR(EquivarianceMRR.Config(**ranking, per_transformation=True)).evaluate(run)

    def _images(self, run, which: str, n: int) -> torch.Tensor:
        cfg = self.config
        data = split(run, which, n)
        return torch.cat([b["image"] for b in loader(run, data, cfg.batch_size, cfg.num_workers)])

    @torch.no_grad()
    def _pooled(self, run, images: torch.Tensor, op, params: dict) -> torch.Tensor:
        """(n, D) average-pooled target-encoder tokens of ``op(images, params)``, on the CPU."""
        bs, out = self.config.batch_size, []
        with eval_mode(run.target_encoder):
            for start in range(0, images.shape[0], bs):
                pixels = to_pixels(images[start:start + bs], run.device)
                sl = slice(start, start + bs)
                transformed = op.apply(pixels, {k: v[sl] for k, v in params.items()})
                out.append(run.target_encoder(normalize(transformed)).float().mean(dim=1).cpu())
        return torch.cat(out)

    def _samples(self, run, images: torch.Tensor, name: str, op, which: str):
        n = images.shape[0]
        params = op.sample(n, generator(run, self.name, "r2", name, which))
        target = op.encode(op.null_params(n), params).float().reshape(n, -1).cpu()
        return self._pooled(run, images, op, params), target

    def evaluate(self, run) -> dict[str, float]:
        cfg = self.config
        mrr = self._mrr(run)  # refuses views whose target never varies
        ops = action_ops(run.views)
        out = {"mrr": mrr["mrr"], "mrr_stderr": mrr["mrr_stderr"], "chance": mrr["chance"]}
        train, val = self._images(run, "train", cfg.n_train), self._images(run, "val", cfg.n_val)
        for name, op in ops:
            train_x, train_y = self._samples(run, train, name, op, "train")
            val_x, val_y = self._samples(run, val, name, op, "val")
            r2, _ = ridge_r2(train_x, train_y, val_x, val_y, cfg.ridge, generator(run, self.name, "fold", name))
            out[f"mrr_{name}"] = mrr[f"mrr_{name}"]
            out[f"r2_{name}"] = r2
        path = self._path(run)
        if path is not None:
            draw(out, [name for name, _ in ops], path, cfg.bank_size)
        return out

    def _path(self, run) -> Path | None:
        path = Path(self.config.path).expanduser()
        if path.is_absolute():
            return path
        return None if run.run_dir is None else Path(run.run_dir) / path


def draw(metrics: dict[str, float], ops: list[str], path: Path, bank_size: int) -> Path:
    """One bar pair per op (MRR, R^2), chance MRR dashed; written atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # no pyplot: no global backend state

    fig = Figure(figsize=(max(5.0, 1.3 * len(ops) + 2.0), 4.0))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    x = torch.arange(len(ops), dtype=torch.float64).tolist()
    mrr = [metrics[f"mrr_{op}"] for op in ops]
    r2 = [metrics[f"r2_{op}"] for op in ops]
    bars = ax.bar([i - 0.2 for i in x], mrr, width=0.4, color="C0", label="predictor MRR (equivariance)")
    ax.bar([i + 0.2 for i in x], [0.0 if math.isnan(v) else v for v in r2], width=0.4, color="C1",
           label="encoder R² of the op's parameters")
    for i, value in zip(x, r2):
        ax.annotate("n/a" if math.isnan(value) else f"{value:.2f}", (i + 0.2, max(0.0, value) if
                    math.isfinite(value) else 0.0), ha="center", va="bottom", fontsize=7)
    for bar, value in zip(bars, mrr):
        ax.annotate(f"{value:.2f}", (bar.get_x() + bar.get_width() / 2, value), ha="center", va="bottom", fontsize=7)
    ax.axhline(metrics["chance"], color="C3", linestyle="--", linewidth=1, label=f"chance MRR (bank {bank_size})")
    ax.axhline(0.0, color="black", linewidth=0.6)
    ax.set_xticks(x, ops, fontsize=8)
    finite = [v for v in r2 if math.isfinite(v)]
    ax.set_ylim(min([0.0, *finite]) - 0.05, 1.08)
    ax.set_ylabel("score")
    ax.set_title(f"invariance-equivariance spectrum (overall MRR {metrics['mrr']:.3f})", fontsize=9)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2, frameon=False)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return atomic_write(path, lambda f: f.write(buffer.getvalue()))


__all__ = ["Spectrum", "Ridge", "action_ops", "draw", "r2_score", "ridge_r2"]
