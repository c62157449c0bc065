"""World-model evaluators (IWM): equivariance MRR and the retrieval grid (the paper's Figure 1).

Protocol (the one of the IWM paper, Garrido et al. 2024, as RECIPES.md puts it:
"rank the true latent of the transformed image among a bank of 256
transformed latents"): the bank is the SAME image under ``bank_size``
different target transformations, not other images -- with other images even
a predictor that ignores the action would rank first, whereas the paper
reports MRR 0.00 for conditioning ``none``. For each val image (centre crop):

1. source parameters are drawn once from the run's views (``source: sampled``;
   ``source: clean`` keeps x untransformed, the paper's wording), and
   ``bank_size`` target parameters are drawn from the target pipeline with
   every op applied (its ``p`` ignored: a bank of *transformed* latents, with
   no atom of identical untransformed entries); entry 0 is the true target,
   so it is exchangeable with the rest of the bank;
2. x = source(crop), y_j = target_j(crop); the context is the frozen
   (target, by default) encoder's tokens of x, all of them;
3. the predictor is asked for all tokens as one block with the true action
   a(x -> y_0); the bank is the layer-normed target-encoder tokens of every y_j
   (what the EMA target regresses);
4. distance: L2 over all tokens flattened (default) or cosine, optionally on
   mean-pooled tokens; the reciprocal rank of y_0 is averaged over images.

``queries`` > 1 asks the predictor for bank entries 1..queries-1 as well, each
with its own action and ranked among the same bank (the entries are
exchangeable, so the expected MRR is unchanged): one bank of target-encoder
forwards, the costly part, then serves several rankings, and an image's
reciprocal rank becomes the mean over its queries.

Bank entries whose action equals the true one (possible with discrete ops)
are the same target for the predictor and are not counted against it; exact
distance ties with other entries count as the expected rank under random
tie-breaking. So a predictor that ignores the action scores the chance level
``H(bank_size) / bank_size`` in expectation, and one that predicts the true
latents scores 1. One image's reciprocal rank is noisy (standard deviation
0.14 for uniform ranks at bank 64, 0.2-0.3 for trained predictors), so
``mrr_stderr`` reports the standard error of the mean over images (of each
image's mean over its queries: queries of one image are not independent).

``mrr_<name>``: the same with only transformation ``name`` varying (drawn in
both pipelines where it appears, every other op the identity), for every op of
the target pipeline. Source-only ops (grayscale, blur, solarize in IWM) never
vary the target, so they cannot be ranked among transformed targets and get no
per-op MRR (they still take part in ``mrr``). Registered by plugins/evaluators/__init__.py.
"""

from __future__ import annotations

import io
from pathlib import Path

import attrs
import torch
import torch.nn.functional as F

from jepa_core.api import Evaluator, atomic_write, normalize, validators as v
from jepa_core.plugins.evaluators.features import encoder_of, eval_mode, predict_all
from jepa_core.plugins.evaluators.seeding import generator
from jepa_core.plugins.evaluators.subsets import loader, split, to_pixels


def chance_mrr(bank_size: int) -> float:
    """Expected reciprocal rank of a uniformly random rank in 1..bank_size."""
    return sum(1.0 / r for r in range(1, bank_size + 1)) / bank_size


def expected_reciprocal_rank(first: int, ties: int) -> float:
    """E[1/rank] when the rank is uniform over first..first+ties (random tie-breaking)."""
    return sum(1.0 / r for r in range(first, first + ties + 1)) / (ties + 1)


def _slice(params: dict, sl) -> dict:
    return {name: {k: v[sl] for k, v in p.items()} for name, p in params.items()}


def _repeat(params: dict, times: int) -> dict:
    return {name: {k: v.repeat_interleave(times, dim=0) for k, v in p.items()} for name, p in params.items()}


def _draw(pipeline, batch: int, g: torch.Generator, only: str | None, applied: bool = False) -> dict:
    """Parameters of every op of ``pipeline``: sampled (all ops, or only ``only``), identity for the rest.

    ``applied``: every drawn op is applied (its probability ``p`` ignored), as the bank's targets are.
    """
    def draw(op):
        if not applied:
            return op.sample(batch, g)
        return {**op.sample_applied(batch, g), "applied": torch.ones(batch, dtype=torch.bool)}

    return {name: (draw(op) if only is None or name == only else op.null_params(batch)) for name, op in pipeline}


def _identity(pipeline, batch: int) -> dict:
    return {name: op.null_params(batch) for name, op in pipeline}


@attrs.frozen
class Ranked:
    """One image's result: reciprocal rank, top-1 hit and the bank's nearest entries."""

    reciprocal_rank: float
    top1: float
    nearest: torch.Tensor  # bank indices, nearest first
    same: torch.Tensor  # (bank,) bool: entries with the true action


class _WorldModelEval(Evaluator):
    needs = frozenset({"predictor", "actions", "target_ops"})

    def _images(self, run) -> torch.Tensor:
        """uint8 (n, 3, S, S) centre crops of ``n_images`` val images (deterministic subset)."""
        cfg = self.config
        data = split(run, "val", cfg.n_images)
        return torch.cat([b["image"] for b in loader(run, data, cfg.batch_size, cfg.num_workers)])

    @torch.no_grad()
    def _rank(self, run, pixels: torch.Tensor, g: torch.Generator, only: str | None = None,
              keep: int = 0):
        """Rank the true targets of every image; (per image its queries' results, source views, kept banks)."""
        cfg = self.config
        views, device, bank = run.views, run.device, cfg.bank_size
        n = pixels.shape[0]
        if cfg.source == "clean":
            src = _identity(views.source, n)
        else:
            src = _draw(views.source, n, g, only)
        tgt = _draw(views.target, n * bank, g, only, applied=True)
        actions = views.encode(_repeat(src, bank), tgt, n * bank).view(n, bank, -1)
        pixels = pixels.to(device)
        x = views.apply(views.source, pixels, src)
        context_encoder = encoder_of(run, cfg.context_encoder)
        results, kept = [], []
        with eval_mode(run.target_encoder, context_encoder, run.predictor):
            for start in range(0, n, cfg.batch_size):
                z_x = context_encoder(normalize(x[start:start + cfg.batch_size])).float()
                predictions = torch.stack([
                    predict_all(run, run.predictor, z_x, actions[start:start + cfg.batch_size, q].to(device)).float()
                    for q in range(cfg.queries)
                ], dim=1)
                for i, queried in enumerate(predictions, start=start):
                    clean = pixels[i:i + 1].expand(bank, -1, -1, -1).contiguous()
                    y = views.apply(views.target, clean, _slice(tgt, slice(i * bank, (i + 1) * bank)))
                    latents = torch.cat([
                        self._target_latents(run, y[j:j + cfg.batch_size]) for j in range(0, bank, cfg.batch_size)
                    ])
                    results.append([self._score(p, latents, actions[i], q) for q, p in enumerate(queried)])
                    if i < keep:
                        kept.append(y.cpu())
        return results, x.cpu(), kept

    def _target_latents(self, run, images: torch.Tensor) -> torch.Tensor:
        z = run.target_encoder(normalize(images)).float()
        return F.layer_norm(z, z.shape[-1:])

    def _score(self, prediction: torch.Tensor, latents: torch.Tensor, actions: torch.Tensor, true: int) -> Ranked:
        """Rank bank entry ``true`` for ``prediction`` among ``latents``."""
        cfg = self.config
        if cfg.pool == "mean":
            prediction, latents = prediction.mean(dim=0), latents.mean(dim=1)
        prediction, latents = prediction.reshape(1, -1), latents.reshape(latents.shape[0], -1)
        if cfg.distance == "cosine":
            distance = 1.0 - F.cosine_similarity(latents, prediction, dim=1)
        else:
            distance = (latents - prediction).pow(2).sum(dim=1)
        distance = distance.cpu().double()
        same = (actions == actions[true]).all(dim=1).cpu()
        others = ~same
        closer = int(((distance < distance[true]) & others).sum())
        ties = int(((distance == distance[true]) & others).sum())
        nearest = torch.argsort(distance, stable=True)
        return Ranked(expected_reciprocal_rank(1 + closer, ties), float(closer == 0) / (ties + 1), nearest, same)


@attrs.frozen
class RankingConfig:
    """What both world-model evaluators share: which images, which bank, how latents are compared."""

    #: val images ranked (deterministic subset; retrieval_grid uses at least its n_rows)
    n_images: int = attrs.field(default=32, validator=v.positive_int)
    #: transformed targets per image, the true one included (IWM: 256)
    bank_size: int = attrs.field(default=256, validator=v.positive_int)
    #: bank entries ranked per image, each as the true target of its own action (at most bank_size)
    queries: int = attrs.field(default=1, validator=v.positive_int)
    #: l2: squared L2 distance; cosine: 1 - cosine similarity
    distance: str = attrs.field(default="l2", validator=v.one_of("l2", "cosine"))
    #: flatten: every token; mean: mean-pooled tokens
    pool: str = attrs.field(default="flatten", validator=v.one_of("flatten", "mean"))
    #: sampled: x gets the source pipeline's ops (as in training); clean: x is the crop itself
    source: str = attrs.field(default="sampled", validator=v.one_of("sampled", "clean"))
    #: encoder giving the predictor's context (the target latents always come from the target encoder)
    context_encoder: str = attrs.field(default="target", validator=v.one_of("online", "target"))
    batch_size: int = attrs.field(default=256, validator=v.positive_int)
    num_workers: int | None = attrs.field(default=None, validator=attrs.validators.optional(v.non_negative_int))

    def __attrs_post_init__(self):
        if self.queries > self.bank_size:
            raise ValueError(f"'queries' ({self.queries}) must be at most 'bank_size' ({self.bank_size}): "
                             "each query is one bank entry", attrs.fields(type(self)).queries)


def _mean_rr(queries: list[Ranked]) -> float:
    return sum(r.reciprocal_rank for r in queries) / len(queries)


class EquivarianceMRR(_WorldModelEval):
    """Equivariance MRR: rank the predicted latent's true target among the same image under bank_size actions."""

    name = "equivariance_mrr"

    @attrs.frozen
    class Config(RankingConfig):
        #: also report mrr_<op> for every op of the target pipeline
        per_transformation: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool))

    def evaluate(self, run) -> dict[str, float]:
        cfg = self.config
        pixels = to_pixels(self._images(run), torch.device("cpu"))
        g = generator(run, self.name, "params")
        ranked, _, _ = self._rank(run, pixels, g)
        rr = torch.tensor([_mean_rr(queries) for queries in ranked], dtype=torch.float64)
        # the standard error says how far from chance an action-blind predictor may land by luck
        stderr = float(rr.std() / len(rr) ** 0.5) if len(rr) > 1 else float("nan")
        out = {"mrr": float(rr.mean()), "mrr_stderr": stderr, "chance": chance_mrr(cfg.bank_size)}
        if cfg.per_transformation:
            for name, _ in run.views.target:
                ranked, _, _ = self._rank(run, pixels, generator(run, self.name, "params", name), only=name)
                out[f"mrr_{name}"] = sum(_mean_rr(queries) for queries in ranked) / len(ranked)
        return out


def _show(pixels: torch.Tensor):
    return pixels.clamp(0, 1).permute(1, 2, 0).numpy()


class RetrievalGrid(_WorldModelEval):
    """Retrieval grid (IWM Figure 1): source, target and the nearest bank images of the predicted latent (PNG)."""

    name = "retrieval_grid"

    @attrs.frozen
    class Config(RankingConfig):
        #: output PNG, absolute or relative to the run directory
        path: str = attrs.field(default="retrieval.png", validator=attrs.validators.instance_of(str))
        #: rows drawn (the first images of the subset)
        n_rows: int = attrs.field(default=4, validator=v.positive_int)
        #: nearest neighbours drawn per row
        k: int = attrs.field(default=5, validator=v.positive_int)

    def _images(self, run) -> torch.Tensor:
        cfg = self.config
        data = split(run, "val", max(cfg.n_images, cfg.n_rows))
        return torch.cat([b["image"] for b in loader(run, data, cfg.batch_size, cfg.num_workers)])

    def evaluate(self, run) -> dict[str, float]:
        cfg = self.config
        pixels = to_pixels(self._images(run), torch.device("cpu"))
        rows = min(cfg.n_rows, len(pixels))
        ranked, sources, banks = self._rank(run, pixels, generator(run, self.name, "params"), keep=rows)
        self._draw(run, sources[:rows], banks, [queries[0] for queries in ranked[:rows]])
        hits = [r.top1 for queries in ranked for r in queries]
        return {"top1_retrieval": sum(hits) / len(hits)}

    def _draw(self, run, sources: torch.Tensor, banks: list[torch.Tensor], ranked: list[Ranked]) -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure  # no pyplot: no global backend state

        cfg = self.config
        k = min(cfg.k, cfg.bank_size)
        rows, cols = len(ranked), 2 + k
        fig = Figure(figsize=(1.6 * cols, 1.7 * rows))
        FigureCanvasAgg(fig)
        axes = fig.subplots(rows, cols, squeeze=False)
        for row, (source, bank, result) in enumerate(zip(sources, banks, ranked)):
            panels = [(source, "source x", None), (bank[0], "target y", None)]
            for rank, j in enumerate(result.nearest[:k].tolist(), start=1):
                panels.append((bank[j], f"NN {rank}", bool(result.same[j])))
            for ax, (image, title, hit) in zip(axes[row], panels):
                ax.imshow(_show(image))
                ax.set_xticks([])
                ax.set_yticks([])
                if hit is not None:
                    colour = "tab:green" if hit else "tab:red"
                    for spine in ax.spines.values():
                        spine.set_edgecolor(colour)
                        spine.set_linewidth(3)
                if row == 0 or hit is None:
                    ax.set_title(title, fontsize=8)
        fig.suptitle("predicted latent: nearest transformed targets (green: the true action)", fontsize=9)
        fig.tight_layout()
        path = Path(cfg.path).expanduser()
        if not path.is_absolute() and run.run_dir is not None:
            path = run.run_dir / path
        buffer = io.BytesIO()
        fig.savefig(buffer, dpi=100, format="png")
        atomic_write(path, lambda f: f.write(buffer.getvalue()))


__all__ = ["EquivarianceMRR", "RetrievalGrid", "chance_mrr", "expected_reciprocal_rank"]
