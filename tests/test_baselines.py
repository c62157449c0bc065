"""Baselines in the same engine: SimCLR, VICReg, MoCo v3 and MAE-style pixels (issue 6).

Each loss is checked against a direct re-derivation of its formula, on one
process and across two gloo processes (the global-batch gathers); each
baseline trains 30 tiny CPU steps with a decreasing loss and without collapse;
the tiny recipes differ from the tiny IWM one only in the method sections.
"""

from __future__ import annotations

import math
import os
import socket
from pathlib import Path

import attrs
import pytest
import torch
import torch.nn.functional as F

from jepa_core.config import load_config, to_dict
from jepa_core.data import build_eval_loader, build_loader
from jepa_core.distributed import DistInfo
from jepa_core.evaluate import load_run
from jepa_core.experiment import build_experiment
from jepa_core.launch import main as launch
from jepa_core.manager import get_registries
from jepa_core.train import Trainer
from jepa_core.views import normalize
from helpers import DDP_RTOL, assert_all_close_scaled, assert_close_scaled, read_metrics
from jepa_core.plugins.baselines.losses import moco_contrastive, nt_xent, vicreg_terms
from jepa_core.plugins.baselines.pixel import patchify
from jepa_core.plugins.baselines.projector import Projector, mlp, pool
from jepa_core.registries.conditioning import Conditioner

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "experiments" / "tiny"
BASELINES = ("simclr", "vicreg", "mocov3", "pixel")
METHOD_SECTIONS = {"name", "views", "conditioning", "predictor", "target"}
LOADER_GEOMETRY = {"crop_scale", "flip_p"}

#: collapse threshold: mean over dimensions of the per-dimension standard deviation of the
#: L2-normalised pooled features, times sqrt(D). 1 = isotropic features, 0 = every image the
#: same embedding. The untrained encoder measures 0.38, trained baselines 0.5-0.8 (docs/baselines.md).
COLLAPSE_THRESHOLD = 0.25


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: one intra-op thread is ~5x faster than two on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _registries():
    return get_registries()


# --------------------------------------------------------------------------- losses vs their formulas


def _nt_xent_by_formula(a, b, t):
    """SimCLR eq. (1) with 2N samples z_1..z_2N, z_2k-1 = a_k, z_2k = b_k, averaged over all 2N anchors."""
    z = torch.stack([a, b], dim=1).reshape(-1, a.shape[1])
    total = 0.0
    for i in range(z.shape[0]):
        j = i + 1 if i % 2 == 0 else i - 1
        sim = lambda u, v: float(u @ v / (u.norm() * v.norm()))  # noqa: E731
        denom = sum(math.exp(sim(z[i], z[k]) / t) for k in range(z.shape[0]) if k != i)
        total += -math.log(math.exp(sim(z[i], z[j]) / t) / denom)
    return total / z.shape[0]


def test_infonce_is_nt_xent():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    assert nt_xent(a, b, 0.1).item() == pytest.approx(_nt_xent_by_formula(a, b, 0.1), rel=1e-5)
    assert nt_xent(a, b, 0.5).item() == pytest.approx(_nt_xent_by_formula(a, b, 0.5), rel=1e-5)
    target = _registries().targets.create("infonce", *_online("infonce"))
    pred, tgt = a.view(6, 1, 1, 5), b.view(6, 1, 1, 5)
    assert target.loss(pred, tgt).item() == pytest.approx(_nt_xent_by_formula(a, b, 0.1), rel=1e-5)


def _vicreg_by_formula(x, y, gamma=1.0, eps=1e-4):
    n, d = x.shape
    invariance = sum(float((x[i, k] - y[i, k]) ** 2) for i in range(n) for k in range(d)) / (n * d)

    def var_term(z):
        out = 0.0
        for k in range(d):
            col = [float(v) for v in z[:, k]]
            mean = sum(col) / n
            var = sum((v - mean) ** 2 for v in col) / (n - 1)
            out += max(0.0, gamma - math.sqrt(var + eps))
        return out / d

    def cov_term(z):
        means = [sum(float(v) for v in z[:, k]) / n for k in range(d)]
        total = 0.0
        for p in range(d):
            for q in range(d):
                if p != q:
                    c = sum((float(z[i, p]) - means[p]) * (float(z[i, q]) - means[q]) for i in range(n)) / (n - 1)
                    total += c * c
        return total / d

    return invariance, (var_term(x) + var_term(y)) / 2, cov_term(x) + cov_term(y)


def test_vicreg_terms_match_their_formulas():
    g = torch.Generator().manual_seed(1)
    x, y = 0.5 * torch.randn(8, 4, generator=g), 2.0 * torch.randn(8, 4, generator=g)  # one below, one above gamma
    got = vicreg_terms(x, y)
    want = _vicreg_by_formula(x, y)
    for term, expected in zip(got, want):
        assert term.item() == pytest.approx(expected, rel=1e-5)
    assert got[1].item() > 0 and got[2].item() > 0
    target = _registries().targets.create("vicreg", *_online("vicreg"))
    loss = target.loss(x.view(8, 1, 1, 4), y.view(8, 1, 1, 4)).item()
    assert loss == pytest.approx(25 * want[0] + 25 * want[1] + 1 * want[2], rel=1e-5)


def test_mocov3_loss_schedule_and_momentum_branch():
    g = torch.Generator().manual_seed(2)
    q, k = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    t = 0.2
    qn, kn = F.normalize(q, dim=1), F.normalize(k, dim=1)
    by_formula = -sum(math.log(math.exp(float(qn[i] @ kn[i]) / t) / sum(math.exp(float(qn[i] @ kn[j]) / t)
                                                                        for j in range(5))) for i in range(5)) / 5
    assert moco_contrastive(q, k, t).item() == pytest.approx(by_formula * 2 * t, rel=1e-5)

    encoder, predictor = _online("mocov3")
    target = _registries().targets.create("mocov3", encoder, predictor, freeze_patch_embed=True)
    assert target.symmetric and target.loss(q.view(5, 1, 1, 3), k.view(5, 1, 1, 3)).item() == pytest.approx(
        by_formula * 2 * t, rel=1e-5)
    # momentum 0.99 -> 1 along a half cosine (MoCo v3 --moco-m-cos)
    assert target.momentum(0, 100) == pytest.approx(0.99)
    assert target.momentum(50, 100) == pytest.approx(0.995)
    assert target.momentum(100, 100) == pytest.approx(1.0)
    # the EMA pairs are the online encoder and projector; the copies are frozen buffers of the target
    (enc_online, enc_copy), (proj_online, proj_copy) = target.momentum_pairs
    assert enc_online is encoder and proj_online is predictor.projector
    assert not any(p.requires_grad for p in target.parameters())
    assert not encoder.vit.patch_embed.proj.weight.requires_grad  # --stop-grad-conv1
    assert enc_copy is target.encoder and proj_copy is target.projector


def _online(target: str):
    """A tiny encoder and the projector each target expects."""
    from jepa_core.encoder import Encoder

    torch.manual_seed(0)
    encoder = Encoder("vit_tiny_patch16_224", 32, patch_size=8, depth=1)
    params = {"infonce": {}, "vicreg": {"last_bn": "none", "hidden_bias": True},
              "mocov3": {"layers": 3, "last_bn": "plain", "predictor_layers": 2, "predictor_hidden": 16}}[target]
    predictor = _registries().predictors.create("projector", encoder.embed_dim, encoder.grid,
                                                Conditioner(None, 0, encoder.embed_dim), hidden=16, out=8, **params)
    return encoder, predictor


def test_online_targets_share_the_online_modules_instead_of_copying_them():
    for name in ("infonce", "vicreg"):
        encoder, predictor = _online(name)
        target = _registries().targets.create(name, encoder, predictor)
        assert sum(p.numel() for p in target.parameters()) == 0 and not target.state_dict()
        images = torch.randn(4, 3, 32, 32)
        idx = torch.arange(16).view(1, 1, 16).expand(4, 1, 16)
        out = target(images, idx)
        assert out.shape == (4, 1, 1, 8) and out.requires_grad  # the other view gets gradients too
        out.sum().backward()
        assert encoder.vit.blocks[0].attn.qkv.weight.grad is not None


# --------------------------------------------------------------------------- the global batch across processes


def _ddp_case(kind: str):
    """Projector (seeded) and two views' tokens (N=8 images, 4 tokens, width 6) for one loss."""
    torch.manual_seed(0)
    params = {"infonce": dict(layers=2, last_bn="scale"),
              "vicreg": dict(layers=3, last_bn="none", hidden_bias=True),
              "mocov3": dict(layers=2, last_bn="plain", predictor_layers=2, predictor_hidden=12)}[kind]
    proj = Projector(Projector.Config(hidden=12, out=5, **params), 6, (2, 2), Conditioner(None, 0, 6))
    momentum = mlp(6, 12, 5, 2, hidden_bias=False, last_bn="plain")  # MoCo's key branch (no gradient)
    g = torch.Generator().manual_seed(1)
    return proj, momentum, torch.randn(8, 4, 6, generator=g), torch.randn(8, 4, 6, generator=g)


def _ddp_loss(kind, proj, momentum, xa, xb):
    if kind == "infonce":
        return nt_xent(proj.embed(xa), proj.embed(xb), 0.1)
    if kind == "vicreg":
        inv, var, cov = vicreg_terms(proj.embed(xa), proj.embed(xb))
        return 25 * inv + 25 * var + cov
    with torch.no_grad():
        ka, kb = momentum(pool(xa)), momentum(pool(xb))
    return (moco_contrastive(proj.head(proj.embed(xa)), kb, 0.2)
            + moco_contrastive(proj.head(proj.embed(xb)), ka, 0.2))


def _ddp_run(kind, rank, world):
    """Loss, DDP-averaged parameter gradients, input gradients and BN statistics of this rank's shard.

    ``local``: this rank's parameter gradients before the all-reduce (the negative control).
    """
    proj, momentum, xa, xb = _ddp_case(kind)
    n = xa.shape[0] // world
    xa = xa[rank * n:(rank + 1) * n].clone().requires_grad_()
    xb = xb[rank * n:(rank + 1) * n].clone().requires_grad_()
    loss = _ddp_loss(kind, proj, momentum, xa, xb)
    loss.backward()
    grads, local = {}, {}
    for name, p in proj.named_parameters():
        if p.grad is not None:
            grad = p.grad.clone()
            local[name] = p.grad.clone()
            if world > 1:  # what DistributedDataParallel does
                torch.distributed.all_reduce(grad)
                grad /= world
            grads[name] = grad
    stats = {k: v.clone() for k, v in proj.state_dict().items() if "running" in k}
    return {"loss": loss.detach(), "grads": grads, "local": local, "xa": xa.grad, "xb": xb.grad, "stats": stats}


ENGINE_CASES = ("simclr", "vicreg", "mocov3")


def _shard(views, rank: int, world: int):
    """This rank's rows of a view batch drawn for the whole batch."""
    n = views.source.shape[0] // world
    rows = slice(rank * n, (rank + 1) * n)
    masks = attrs.evolve(views.masks, context=views.masks.context[rows], targets=views.masks.targets[rows])
    return attrs.evolve(views, target=views.target[rows], source=views.source[rows], action=views.action[rows],
                        masks=masks, source_params={}, target_params={})


def _engine_step(name: str, views, rank: int, world: int, run_dir: Path):
    """The trainer's loss on this rank's shard and the (DDP-averaged) gradients of encoder and predictor.

    In fp32 whatever ``auto`` would pick: this compares DDP's averaging, and bf16 rounds
    the two sides' sums differently (1% of a module's scale on an AMX Xeon).
    """
    exp = build_experiment(load_config(TINY / f"{name}.yaml", ["train.precision=fp32"]))
    dist = DistInfo(rank, world, rank, torch.device("cpu")) if world > 1 else None
    trainer = Trainer(exp, run_dir, dist)  # DDP-wraps the encoder and the predictor when world > 1
    loss = trainer._forward_loss(_shard(views, rank, world))
    loss.backward()
    grads = {f"{m}.{n}": p.grad.clone() for m, module in (("encoder", exp.encoder), ("predictor", exp.predictor))
             for n, p in module.named_parameters() if p.grad is not None}
    return {"loss": loss.item(), "grads": grads}


def _ddp_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        results = {kind: _ddp_run(kind, rank, world) for kind in ("infonce", "vicreg", "mocov3")}
        for name in ENGINE_CASES:
            views = torch.load(Path(out_dir) / f"{name}_views.pt", weights_only=False)
            results[f"engine {name}"] = _engine_step(name, views, rank, world, Path(out_dir) / f"{name}{rank}")
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.distributed
def test_two_processes_with_half_batches_match_one_process_with_the_whole_batch(tmp_path):
    """Losses and projector alone (three losses), then the trainer's step for the three tiny recipes.

    The views are drawn once for the 16 images and split, so both sides see the
    same samples; DDP (or, for the bare losses, an explicit all_reduce) averages
    the gradients. Both sides sum the same terms in another order, so gradients
    and statistics are compared at the scale of their module (``DDP_RTOL``), not
    entry by entry: a bias right before a BatchNorm has a true gradient of zero
    and only round-off to compare. A real mismatch is a fraction of the module's
    scale, thousands of times ``DDP_RTOL``: the negative controls below (a
    gradient without the all-reduce, or summed and not averaged) must fail.
    """
    engine_reference = {}
    for name in ENGINE_CASES:
        exp = build_experiment(load_config(TINY / f"{name}.yaml"))
        cfg = exp.config
        loader, _ = build_loader(exp.dataset("train"), image_size=cfg.data.image_size, batch_size=16,
                                 crop_scale=cfg.data.crop_scale, flip_p=cfg.data.flip_p, seed=0, num_workers=0)
        views = exp.views(next(iter(loader))["image"], torch.Generator().manual_seed(7))
        torch.save(views, tmp_path / f"{name}_views.pt")
        engine_reference[name] = _engine_step(name, views, 0, 1, tmp_path / f"{name}_single")

    torch.multiprocessing.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    for kind in ("infonce", "vicreg", "mocov3"):
        full = _ddp_run(kind, 0, 1)
        shards = [r[kind] for r in ranks]
        # the logged loss (mean over ranks) is the whole batch's loss
        assert ((shards[0]["loss"] + shards[1]["loss"]) / 2).item() == pytest.approx(full["loss"].item(), rel=1e-5)
        for r, shard in enumerate(shards):
            assert_all_close_scaled(shard["grads"], full["grads"], DDP_RTOL, f"{kind} rank {r} gradient")
            # negative controls: without the all-reduce, or summed instead of averaged, it must fail
            for wrong, grads in (("not all-reduced", shard["local"]),
                                 ("summed", {k: 2 * g for k, g in shard["grads"].items()})):
                with pytest.raises(AssertionError):
                    assert_all_close_scaled(grads, full["grads"], DDP_RTOL, f"{kind} rank {r} {wrong}")
            # gradients reach the other rank's embeddings through the gather (summed over ranks: DDP divides by 2)
            for view in ("xa", "xb"):
                assert_close_scaled(shard[view] / 2, full[view][r * 4:(r + 1) * 4], DDP_RTOL,
                                    f"{kind} rank {r} input gradient {view}", scale=full[view].abs().max().item())
            # global batch norm: whole-batch running statistics (a running mean can be pure round-off:
            # head.1 follows a bias-free layer on batch-normalised inputs)
            stats = {k: v for k, v in full["stats"].items() if "num_batches" not in k}
            assert_all_close_scaled({k: shard["stats"][k] for k in stats}, stats, DDP_RTOL,
                                    f"{kind} rank {r} BatchNorm")
    for name, reference in engine_reference.items():
        shards = [r[f"engine {name}"] for r in ranks]
        assert shards[0]["loss"] != shards[1]["loss"]
        assert (shards[0]["loss"] + shards[1]["loss"]) / 2 == pytest.approx(reference["loss"], rel=1e-5), name
        for r, shard in enumerate(shards):
            # the encoder's final-norm bias feeds a BatchNorm projector: its gradient is round-off,
            # judged against the encoder's largest gradient entry
            assert_all_close_scaled(shard["grads"], reference["grads"], DDP_RTOL, f"{name} rank {r} gradient")


# --------------------------------------------------------------------------- masks, pixels, augmentations


def test_full_and_random_masks():
    regs = _registries()
    g = torch.Generator().manual_seed(0)
    full = regs.transformations.create("full", (6, 6)).sample(3, g)
    assert torch.equal(full.context, torch.arange(36).expand(3, 36))
    assert full.targets.shape == (3, 1, 36) and torch.equal(full.targets[:, 0], full.context)

    masker = regs.transformations.create("random", (14, 14))  # MAE: 196 patches, mask_ratio 0.75 keeps 49
    masks = masker.sample(4, torch.Generator().manual_seed(0))
    assert masks.context.shape == (4, 49) and masks.targets.shape == (4, 1, 147)
    for i in range(4):
        both = torch.cat([masks.context[i], masks.targets[i, 0]])
        assert torch.equal(both.sort().values, torch.arange(196))  # a partition of the grid
        assert torch.equal(masks.context[i], masks.context[i].sort().values)
    assert not torch.equal(masks.context[0], masks.context[1])
    again = masker.sample(4, torch.Generator().manual_seed(0))
    assert torch.equal(again.context, masks.context)
    with pytest.raises(ValueError, match="mask_ratio"):
        regs.transformations.create("random", (2, 2), mask_ratio=0.8)


def test_pixel_target_is_per_patch_normalised_pixels():
    images = torch.randn(2, 3, 16, 16)
    patches = patchify(images, 8)
    assert patches.shape == (2, 4, 192)
    # patch 1 is row 0, column 1; pixels in (row, column, channel) order as MAE
    assert torch.equal(patches[1, 1].view(8, 8, 3), images[1, :, 0:8, 8:16].permute(1, 2, 0))
    regs = _registries()
    encoder, _ = _online("infonce")
    target = regs.targets.create("pixels", encoder, None)
    idx = torch.tensor([[[3, 0]], [[2, 1]]])
    out = target(torch.randn(2, 3, 32, 32), idx)
    assert out.shape == (2, 1, 2, 192)
    assert torch.allclose(out.mean(-1), torch.zeros(2, 1, 2), atol=1e-5)
    assert torch.allclose(out.var(-1), torch.ones(2, 1, 2), atol=1e-3)


def test_pixel_decoder_reuses_the_vit_predictor():
    exp = build_experiment(load_config(TINY / "pixel.yaml"))
    assert isinstance(exp.predictor, exp.registries.predictors.get("vit").factory)
    ctx = torch.randn(2, 9, exp.encoder.embed_dim)
    masks = exp.views.masking.sample(2, torch.Generator().manual_seed(0))
    out = exp.predictor(ctx, masks.context, masks.targets, None)
    assert out.shape == (2, 1, 27, 8 * 8 * 3)
    with pytest.raises(Exception, match="set predictor.patch_size: 8"):
        build_experiment(load_config(TINY / "pixel.yaml", ["predictor.patch_size=16"]))


def test_augment_applies_its_ops_without_an_action():
    ops = ("views.{}=[{{name: color_jitter, p: 0.8}}, {{name: grayscale, p: 0.5}}, "
           "{{name: gaussian_blur, p: 0.5, kernel_size: 5}}]")
    plain = build_experiment(load_config(TINY / "simclr.yaml", [ops.format("source"), ops.format("target")]))
    wrapped = build_experiment(load_config(TINY / "mocov3.yaml"))
    wrapped_same = build_experiment(load_config(TINY / "mocov3.yaml", [
        "views.source=[{name: augment, ops: [{name: color_jitter, p: 0.8}, {name: grayscale, p: 0.5}, "
        "{name: gaussian_blur, p: 0.5, kernel_size: 5}]}]",
        "views.target=[{name: augment, ops: [{name: color_jitter, p: 0.8}, {name: grayscale, p: 0.5}, "
        "{name: gaussian_blur, p: 0.5, kernel_size: 5}]}]"]))
    assert plain.views.action_dim == 6 and wrapped.views.action_dim == 0 == wrapped_same.views.action_dim
    images = torch.randint(0, 256, (6, 3, 48, 48), dtype=torch.uint8)
    a = plain.views(images, torch.Generator().manual_seed(3))
    b = wrapped_same.views(images, torch.Generator().manual_seed(3))
    assert torch.equal(a.source, b.source) and torch.equal(a.target, b.target)  # the same draws, the same images
    assert b.action.shape == (6, 0)
    assert not torch.equal(b.source, b.target)


@pytest.mark.parametrize("override, expected", [
    ("views.source=[{name: augment, ops: [{name: colour_jitter}]}]",
     "views.source.0.ops.0.name: ops.0: unknown transformations 'colour_jitter' (did you mean 'color_jitter'?)"),
    ("views.source=[{name: augment, ops: [{name: grayscale, p: 2}]}]", "views.source.0.ops.0.p:"),
    ("views.source=[{name: augment, ops: [{name: random}]}]", "is not an image transformation"),
    ("predictor={name: vit, depth: 1, width: 64, heads: 2}",
     "target 'mocov3' embeds both views through the online projection head"),
    ("views.source=[{name: grayscale}]\0conditioning.name=feature",
     "predictor: predictor 'projector' ignores the action; use conditioning: {name: none}"),
    ("conditioning.name=sequence", "conditioning 'sequence' needs an action"),
])
def test_bad_baseline_configs_are_one_line_errors(capsys, override, expected):
    sets = [arg for item in override.split("\0") for arg in ("--set", item)]
    assert launch([str(TINY / "mocov3.yaml"), "--dry-run", *sets]) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and "\n" not in err, err


# --------------------------------------------------------------------------- recipes


def test_tiny_baselines_differ_from_tiny_iwm_only_in_the_method_sections():
    iwm = to_dict(load_config(TINY / "iwm.yaml").config)
    assert iwm["predictor"]["name"] == "vit" and iwm["conditioning"]["name"] == "feature"
    for name in BASELINES:
        cfg = to_dict(load_config(TINY / f"{name}.yaml").config)
        differing = {key for key in set(cfg) | set(iwm) if cfg.get(key) != iwm.get(key)}
        assert differing <= METHOD_SECTIONS | {"data"}, (name, differing - METHOD_SECTIONS)
        assert {"views", "predictor", "target"} <= differing
        data = {k for k in cfg["data"] if cfg["data"][k] != iwm["data"][k]}
        assert data <= LOADER_GEOMETRY, (name, data)  # only where the shared crop goes: the views crop instead


def test_the_quickstart_baselines_share_its_data_encoder_schedule_and_probes():
    """docs/baselines.md compares them with the quickstart's IWM: only the method (and its optimiser) may differ."""
    quick = to_dict(load_config(ROOT / "experiments" / "quickstart.yaml").config)
    probes = [{k: v for k, v in entry.items() if k != "encoder"} for entry in quick["eval"]
              if entry["name"] in ("linear_probe", "knn")]
    for name in ("simclr", "vicreg", "mocov3"):
        cfg = to_dict(load_config(ROOT / "experiments" / "quickstart_baselines" / f"{name}.yaml").config)
        differing = {key for key in set(cfg) | set(quick) if cfg.get(key) != quick.get(key)}
        assert differing <= METHOD_SECTIONS | {"data", "optim", "eval", "loggers"}, (name, differing - METHOD_SECTIONS)
        data = {k for k in cfg["data"] if cfg["data"][k] != quick["data"][k]}
        assert data <= LOADER_GEOMETRY, (name, data)
        assert {k for k in cfg["optim"] if cfg["optim"][k] != quick["optim"][k]} <= {"weight_decay", "final_weight_decay"}
        assert [{k: v for k, v in entry.items() if k != "encoder"} for entry in cfg["eval"]] == probes, name


def test_imagenet_recipes_hold_the_published_method_settings():
    regs = _registries()
    cfgs = {name: load_config(ROOT / "experiments" / f"{name}.yaml").config for name in BASELINES}
    for name, cfg in cfgs.items():  # every component and parameter is valid (without building ViT-B)
        regs.predictors.config(cfg.predictor.name, **cfg.predictor.params)
        regs.targets.config(cfg.target.name, **cfg.target.params)
        regs.transformations.config(cfg.views.masking.name, **cfg.views.masking.params)
        for spec in cfg.views.source + cfg.views.target:
            regs.transformations.config(spec.name, **spec.params)
        assert cfg.encoder.name == "vit_base_patch16_224" and cfg.conditioning.name == "none"
    simclr, vicreg, moco, pixel = (cfgs[n] for n in BASELINES)
    assert simclr.target.params == {"temperature": 0.1}
    assert (simclr.predictor.params["hidden"], simclr.predictor.params["out"]) == (2048, 128)
    for cfg in (simclr, vicreg, moco):  # every view crops and flips on its own, from the whole image
        assert tuple(cfg.data.crop_scale) == (1.0, 1.0) and cfg.data.flip_p == 0.0
        for view in (cfg.views.source, cfg.views.target):
            first = view[0].params["ops"][0] if view[0].name == "augment" else {"name": view[0].name, **view[0].params}
            assert first["name"] == "random_resized_crop" and tuple(first["scale"]) == (0.08, 1.0), first
    jitter = simclr.views.source[1].params
    assert (jitter["p"], jitter["brightness"], jitter["contrast"], jitter["saturation"], jitter["hue"]) == (
        0.8, 0.8, 0.8, 0.8, 0.2)
    assert [(s.name, s.params["p"]) for s in simclr.views.source[2:]] == [("grayscale", 0.2), ("gaussian_blur", 0.5)]
    assert (vicreg.target.params["sim_coeff"], vicreg.target.params["std_coeff"],
            vicreg.target.params["cov_coeff"]) == (25.0, 25.0, 1.0)
    assert (vicreg.predictor.params["hidden"], vicreg.predictor.params["out"], vicreg.predictor.params["layers"]) \
        == (8192, 8192, 3)
    assert moco.target.params["temperature"] == 0.2 and moco.target.params["momentum"] == 0.99
    assert pixel.views.masking.params == {"mask_ratio": 0.75} and not pixel.views.source and not pixel.views.target


# --------------------------------------------------------------------------- training


def _fixed_batch_loss(exp, n_batches: int = 4) -> float:
    """The training loss (both passes for symmetric targets) on fixed batches and views, without gradients."""
    cfg = exp.config
    loader, _ = build_loader(exp.dataset("train"), image_size=cfg.data.image_size, batch_size=cfg.data.batch_size,
                             crop_scale=cfg.data.crop_scale, flip_p=cfg.data.flip_p, seed=123, num_workers=0,
                             rank=0, world_size=1, pin_memory=False, start_step=0)
    enc, pred, tgt = exp.encoder.train(), exp.predictor.train(), exp.target.train()
    total = 0.0
    with torch.no_grad():
        for i, batch in zip(range(n_batches), loader):
            v = exp.views(batch["image"], torch.Generator().manual_seed(1000 + i))
            passes = [(v.source, v.target, v.action)] + ([(v.target, v.source, None)] if tgt.symmetric else [])
            for x, y, action in passes:
                prediction = pred(enc(x, v.masks.context), v.masks.context, v.masks.targets, action)
                total += tgt.loss(prediction, tgt(y, v.masks.targets)).item()
    return total / n_batches


def spread(encoder, exp) -> float:
    """Mean per-dimension std of L2-normalised pooled features of one val batch, times sqrt(D)."""
    loader = build_eval_loader(exp.dataset("val"), image_size=exp.config.data.image_size, batch_size=64,
                               num_workers=0)
    images = next(iter(loader))["image"]
    with torch.no_grad():
        features = encoder.eval()(normalize(images.float() / 255)).mean(dim=1)
    z = F.normalize(features, dim=1)
    return (z.std(dim=0).mean() * z.shape[1] ** 0.5).item()


@pytest.mark.slow
@pytest.mark.parametrize("name", BASELINES)
def test_each_baseline_trains_without_collapse(name, tmp_path):
    run_dir = tmp_path / name
    assert launch([str(TINY / f"{name}.yaml"), "--output", str(run_dir)]) == 0
    losses = [m["loss"] for m in read_metrics(run_dir)]
    assert len(losses) == 30 and all(math.isfinite(v) for v in losses)
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5, losses
    initial = build_experiment(load_config(TINY / f"{name}.yaml"))  # the run's initialisation (same seed)
    trained = load_run(run_dir)
    before, after = _fixed_batch_loss(initial), _fixed_batch_loss(trained)
    assert after < 0.97 * before, (before, after)
    value = spread(trained.encoder, trained)
    print(f"{name}: logged loss {losses[0]:.4f} -> {losses[-1]:.4f}; fixed-batch loss {before:.4f} -> {after:.4f}; "
          f"spread {spread(initial.encoder, initial):.3f} (untrained) -> {value:.3f} (threshold {COLLAPSE_THRESHOLD})")
    assert value > COLLAPSE_THRESHOLD
