"""Released V-JEPA and V-JEPA 2 video encoders load into our video encoder and compute what upstream computes.

The released checkpoints cannot be downloaded here, so the upstream layout is written out
below (facebookresearch/jepa ``src/models/vision_transformer.py`` with a ``PatchEmbed3D``
and the fixed 3-D sin-cos table of ``src/models/utils/pos_embs.py``), saved as
``app/vjepa/train.py`` saves it: DDP's ``module.`` and ``MultiMaskWrapper``'s ``backbone.``.
V-JEPA 2 (facebookresearch/vjepa2, ``use_rope=True``) has the same names and file layout but no
``pos_embed``: its blocks' ``RoPEAttention`` turns queries and keys by the tokens' grid positions.
"""

import types

import numpy as np
import pytest
import torch
import yaml
import torch.nn.functional as F
from torch import nn

from helpers import assert_close_scaled
from ijepa_reference import official_checkpoint as ijepa_checkpoint
from jepa_core import checkpoint
from jepa_core.bench.official import Block, VisionTransformer, _randomise
from jepa_core.config import ConfigError
from jepa_core.encoder import Encoder
from jepa_core.interop import main as interop
from jepa_core.interop import timm_state, vjepa_state
from jepa_core.manager import get_registries
from jepa_core.rundir import RunDir

SIZE, PATCH, FRAMES, TUBELET, DIM, HEADS = 32, 8, 4, 2, 192, 3  # vit_tiny, depth 2: 2 x 4 x 4 tokens
TOKENS = (FRAMES // TUBELET) * (SIZE // PATCH) ** 2

#: another implementation (upstream's attention and layout, timm's) computing the same features,
#: relative to the largest feature, as tests/test_interop.py
IMPL_RTOL = 1e-5


# --------------------------------------------------------------------------- upstream, written out

def get_1d_sincos_pos_embed_from_grid(embed_dim, pos):
    """(M, embed_dim): sines then cosines of ``pos`` at frequencies 1 / 10000^(2i / embed_dim)."""
    omega = 1.0 / 10000 ** (np.arange(embed_dim // 2, dtype=float) / (embed_dim / 2.0))
    out = np.einsum("m,d->md", pos.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def get_3d_sincos_pos_embed(embed_dim, grid_size, grid_depth, uniform_power=False):
    """(depth * size * size, embed_dim), rows in (depth, height, width) order: depth, height and
    width embeddings side by side, each 2 * ceil(embed_dim / 6) wide with ``uniform_power``
    (else half for depth, a quarter each for height and width), cut to ``embed_dim``."""
    grid_h, grid_d, grid_w = np.meshgrid(np.arange(grid_size, dtype=float), np.arange(grid_depth, dtype=float),
                                         np.arange(grid_size, dtype=float))  # 'xy' indexing: [d, h, w]
    if uniform_power:
        d_dim = h_dim = w_dim = int(np.ceil(embed_dim / 6) * 2)
    else:
        d_dim, h_dim, w_dim = embed_dim // 2, embed_dim // 4, embed_dim // 4
    parts = [get_1d_sincos_pos_embed_from_grid(dim, grid) for dim, grid in
             ((d_dim, grid_d), (h_dim, grid_h), (w_dim, grid_w))]
    return np.concatenate(parts, axis=1)[:, :embed_dim]


class PatchEmbed3D(nn.Module):
    def __init__(self, patch, tubelet, dim):
        super().__init__()
        self.proj = nn.Conv3d(3, dim, (tubelet, patch, patch), stride=(tubelet, patch, patch))


class VideoVisionTransformer(nn.Module):
    """Upstream's video ``VisionTransformer``: patch_embed.proj (Conv3d), pos_embed, blocks, norm."""

    def __init__(self, seed, uniform_power=True):
        super().__init__()
        self.patch_embed = PatchEmbed3D(PATCH, TUBELET, DIM)
        table = get_3d_sincos_pos_embed(DIM, SIZE // PATCH, FRAMES // TUBELET, uniform_power=uniform_power)
        self.pos_embed = nn.Parameter(torch.from_numpy(table).float()[None], requires_grad=False)
        self.blocks = nn.ModuleList(Block(DIM, HEADS) for _ in range(2))
        self.norm = nn.LayerNorm(DIM, eps=1e-6)
        _randomise(self, seed)

    def forward(self, clips, idx=None):
        """clips (B, 3, T, H, W), upstream's layout; idx (B, K) the tokens kept."""
        x = self.patch_embed.proj(clips).flatten(2).transpose(1, 2) + self.pos_embed
        if idx is not None:
            x = torch.gather(x, 1, idx[..., None].expand(-1, -1, x.shape[-1]))
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


def upstream_rotate(x, pos):
    """vjepa2's ``rotate_queries_or_keys``: w / 2 frequencies 1 / 10000^(j / (w / 2)), their sines and
    cosines tiled (not interleaved) over the w dims, dims paired (0, 1), (2, 3), ... as (-x1, x0)."""
    w = x.shape[-1]
    omega = 1.0 / 10000 ** (torch.arange(w // 2, dtype=x.dtype) / (w / 2.0))
    freq = pos.to(x.dtype)[..., None] * omega
    sin, cos = freq.sin().repeat(1, 1, 1, 2), freq.cos().repeat(1, 1, 1, 2)
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    return x * cos + torch.stack((-x2, x1), dim=-1).flatten(-2) * sin


class UpstreamRoPEAttention(nn.Module):
    """vjepa2's ``RoPEAttention``: qkv, proj; (t, row, col) from the kept tokens' flat grid ids, time,
    row and col slices of 2 * ((head_dim // 3) // 2) dims turned, the rest left alone."""

    def __init__(self):
        super().__init__()
        self.qkv, self.proj = nn.Linear(DIM, 3 * DIM), nn.Linear(DIM, DIM)

    def forward(self, x, mask, grid):
        b, n, c = x.shape
        q, k, v = self.qkv(x).unflatten(-1, (3, HEADS, -1)).permute(2, 0, 3, 1, 4)
        t_, h_, w_ = grid
        ids = torch.arange(t_ * h_ * w_) if mask is None else mask[:, None].repeat(1, HEADS, 1)
        t = ids // (h_ * w_)
        row = (ids - t * h_ * w_) // w_
        col = ids - t * h_ * w_ - row * w_
        w = 2 * ((c // HEADS // 3) // 2)

        def turn(z):
            return torch.cat([*(upstream_rotate(z[..., i * w:(i + 1) * w], p) for i, p in enumerate((t, row, col))),
                              z[..., 3 * w:]], dim=-1)

        x = F.scaled_dot_product_attention(turn(q), turn(k), v)
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class UpstreamRoPEBlock(Block):
    def __init__(self):
        super().__init__(DIM, HEADS)
        self.attn = UpstreamRoPEAttention()

    def forward(self, x, mask, grid):
        x = x + self.attn(self.norm1(x), mask, grid)
        return x + self.mlp(self.norm2(x))


class VideoVisionTransformer2(nn.Module):
    """vjepa2's video ``VisionTransformer`` with ``use_rope``: patch_embed.proj (Conv3d), blocks, norm; no pos_embed."""

    def __init__(self, seed):
        super().__init__()
        self.patch_embed = PatchEmbed3D(PATCH, TUBELET, DIM)
        self.blocks = nn.ModuleList(UpstreamRoPEBlock() for _ in range(2))
        self.norm = nn.LayerNorm(DIM, eps=1e-6)
        _randomise(self, seed)

    def forward(self, clips, idx=None):
        """clips (B, 3, T, H, W); idx (B, K) the tokens kept (upstream's ``masks``)."""
        x = self.patch_embed.proj(clips)
        grid = x.shape[2:]  # (T / tubelet, H / patch, W / patch), as upstream reads it off the input
        x = x.flatten(2).transpose(1, 2)
        if idx is not None:
            x = torch.gather(x, 1, idx[..., None].expand(-1, -1, x.shape[-1]))
        for block in self.blocks:
            x = block(x, idx, grid)
        return self.norm(x)


class MultiMaskWrapper(nn.Module):
    """Upstream's wrapper: the encoder is its ``backbone``."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone


def vjepa_checkpoint(encoder, target_encoder) -> dict:
    """The dict app/vjepa/train.py saves (DDP-wrapped MultiMaskWrappers, hence ``module.backbone.``)."""
    def saved(m):
        return {f"module.{k}": v for k, v in MultiMaskWrapper(m).state_dict().items()}

    g = torch.Generator().manual_seed(9)
    predictor = {f"module.backbone.{k}": torch.randn(shape, generator=g) for k, shape in (
        ("predictor_embed.weight", (64, DIM)), ("mask_tokens.0", (1, 1, 64)), ("predictor_pos_embed", (1, TOKENS, 64)),
        ("predictor_norm.weight", (64,)), ("predictor_proj.weight", (DIM, 64)))}
    return {"encoder": saved(encoder), "predictor": predictor, "target_encoder": saved(target_encoder),
            "opt": torch.optim.AdamW(encoder.parameters()).state_dict(), "scaler": None,
            "epoch": 300, "loss": 0.1, "batch_size": 24, "world_size": 16, "lr": 1e-6}


# --------------------------------------------------------------------------- ours

class Modules(types.SimpleNamespace):
    """The parts of an Experiment the import reads: encoder, predictor, target."""

    def modules(self):
        return {"encoder": self.encoder, "predictor": self.predictor, "target": self.target}


def video_modules(frames=FRAMES, tubelet=TUBELET, uniform_power=True, rope=False) -> Modules:
    torch.manual_seed(0)
    encoder = Encoder("vit_tiny_patch16_224", SIZE, depth=2, patch_size=PATCH, frames=frames, tubelet=tubelet,
                      uniform_power=uniform_power, rope=rope)
    target = get_registries().targets.create("ema", encoder, None)
    # stands in for the run's video predictor: import-vjepa keeps it as the config built it
    return Modules(encoder=encoder, predictor=nn.Linear(DIM, DIM), target=target)


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    root = tmp_path_factory.mktemp("vjepa")
    models = (VideoVisionTransformer(seed=1), VideoVisionTransformer(seed=3))
    path = root / "vit.t.8-4f.pth.tar"
    torch.save(vjepa_checkpoint(*models), path)
    return path, models


@pytest.fixture(scope="module")
def upstream2(tmp_path_factory):
    """A V-JEPA 2 file: RoPE encoders, saved as vjepa2's app/vjepa/train.py saves them."""
    models = (VideoVisionTransformer2(seed=1), VideoVisionTransformer2(seed=3))
    path = tmp_path_factory.mktemp("vjepa2") / "vitt.pt"
    torch.save(vjepa_checkpoint(*models), path)
    return path, models


def clips(seed=0):
    """(B, T, 3, H, W), our layout; upstream takes (B, 3, T, H, W)."""
    return torch.randn(2, FRAMES, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def assert_computes_what_upstream_computes(encoder, target_encoder, upstream_models):
    theirs, theirs_target = upstream_models
    x = clips()
    context = torch.tensor([[0, 1, 2, 5, 16, 17, 30, 31], [3, 7, 11, 15, 19, 23, 27, 31]])
    with torch.no_grad():
        assert_close_scaled(encoder(x), theirs(x.transpose(1, 2)), IMPL_RTOL, "encoder")
        assert_close_scaled(encoder(x, context), theirs(x.transpose(1, 2), context), IMPL_RTOL, "context encoder")
        assert_close_scaled(target_encoder(x), theirs_target(x.transpose(1, 2)), IMPL_RTOL, "target encoder")


def test_upstream_table_written_out_is_ours():
    """The numpy table above, from upstream's description, is what our encoder adds (both splits)."""
    for uniform_power in (True, False):
        ours = video_modules(uniform_power=uniform_power).encoder.pos_embed[0]
        theirs = get_3d_sincos_pos_embed(DIM, SIZE // PATCH, FRAMES // TUBELET, uniform_power=uniform_power)
        torch.testing.assert_close(ours, torch.from_numpy(theirs).float(), atol=1e-6, rtol=0)


def test_imported_encoders_compute_what_upstream_computes(upstream, tmp_path):
    path, models = upstream
    ours = video_modules()
    fresh = {k: v.clone() for k, v in ours.predictor.state_dict().items()}
    state = vjepa_state(path, ours)
    checkpoint.load_modules(ours.modules(), state, str(path))
    assert_computes_what_upstream_computes(ours.encoder, ours.target.encoder, models)
    for key, value in ours.predictor.state_dict().items():  # V-JEPA's predictor is not imported
        assert torch.equal(value, fresh[key]), key
    assert state["step"] == 0 and state["upstream_epoch"] == 300 and "optimizer" not in state
    saved = checkpoint.load(checkpoint.save(tmp_path, state))  # weights only, reads back with weights_only=True
    assert set(saved["encoder"]) == set(ours.encoder.state_dict())


def _edit(raw: dict, part_keys, fn):
    for part in part_keys:
        raw[part] = fn(dict(raw[part]))


def test_imported_vjepa2_encoders_compute_what_upstream_computes(upstream2):
    path, models = upstream2
    assert all(not any("pos_embed" in k for k in m.state_dict()) for m in models)
    ours = video_modules(rope=True)
    state = vjepa_state(path, ours)
    checkpoint.load_modules(ours.modules(), state, str(path))
    assert_computes_what_upstream_computes(ours.encoder, ours.target.encoder, models)
    # RoPE has no table sized by the clip: any number of frames takes the same weights
    longer = video_modules(frames=2 * FRAMES, rope=True)
    checkpoint.load_modules(longer.modules(), vjepa_state(path, longer), str(path))
    x = torch.randn(1, 2 * FRAMES, 3, SIZE, SIZE)
    with torch.no_grad():
        assert_close_scaled(longer.encoder(x), models[0](x.transpose(1, 2)), IMPL_RTOL, "8-frame encoder")


@pytest.mark.parametrize("case, expected", [
    ("other_uniform_power", "it is the one with uniform_power True; set encoder.uniform_power: true"),
    ("unexpected_key", "unexpected encoder weight 'blocks.0.attn.rel_pos_h'"),
    ("vjepa2_into_sincos", "encoder has no pos_embed: a V-JEPA 2 encoder (RoPE attention); set encoder.rope: true"),
    ("vjepa_into_rope", "encoder has a pos_embed (V-JEPA's added sin-cos positions), not V-JEPA 2's RoPE attention; "
                        "set encoder.rope: false"),
    ("other_frames", f"encoder pos_embed has {TOKENS} patches x 192 features, the config {2 * TOKENS} x 192; "
                     "set encoder.frames"),
    ("other_tubelet", "(192, 3, 2, 8, 8) (features, channels, tubelet, patch, patch), the config (192, 3, 4, 8, 8); "
                      "set encoder.tubelet"),
    ("ijepa", "a 2-D (image) patch embedding, not V-JEPA's Conv3d; an I-JEPA checkpoint? Use import-ijepa"),
    ("no_target_encoder", "not a V-JEPA checkpoint, it has no target_encoder state dict"),
])
def test_bad_checkpoints_are_refused_in_one_line(upstream, tmp_path, case, expected):
    raw = torch.load(upstream[0], weights_only=True)
    settings = {}
    parts = ("encoder", "target_encoder")
    if case == "other_uniform_power":
        settings["uniform_power"] = False
    elif case == "unexpected_key":
        _edit(raw, ["encoder"], lambda s: {**s, "module.backbone.blocks.0.attn.rel_pos_h": torch.zeros(3)})
    elif case == "vjepa2_into_sincos":  # V-JEPA 2's layout: the same names, no pos_embed
        _edit(raw, parts, lambda s: {k: v for k, v in s.items() if not k.endswith("pos_embed")})
    elif case == "vjepa_into_rope":
        settings["rope"] = True
    elif case == "other_frames":
        settings["frames"] = 2 * FRAMES
    elif case == "other_tubelet":
        settings["tubelet"] = 4
    elif case == "ijepa":
        image = VisionTransformer((SIZE // PATCH,) * 2, PATCH, DIM, 2, HEADS, seed=1)
        raw = ijepa_checkpoint(image, nn.Linear(1, 1), image)
    elif case == "no_target_encoder":
        del raw["target_encoder"]
    path = tmp_path / "ckpt.pth.tar"
    torch.save(raw, path)
    with pytest.raises(checkpoint.CheckpointError) as caught:
        vjepa_state(path, video_modules(**settings))
    message = str(caught.value)
    assert expected in message and "\n" not in message, message


def test_an_image_config_is_refused_and_nothing_is_written(upstream, tiny_config, tmp_path, capsys):
    run_dir = tmp_path / "run"
    argv = ["import-vjepa", str(upstream[0]), "--config", str(tiny_config), "--output", str(run_dir)]
    assert interop(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "V-JEPA checkpoints need a video encoder: set encoder.frames" in err and "\n" not in err, err
    assert not run_dir.exists()


def test_export_timm_refuses_a_video_encoder():
    with pytest.raises(ConfigError, match="timm has no video Vision Transformer") as caught:
        timm_state(video_modules().encoder)
    assert "\n" not in str(caught.value)


# --------------------------------------------------------------------------- end to end, through the CLI

def video_config(tmp_path, rope=False):
    """A tiny V-JEPA (``rope``: V-JEPA 2) config file: moving-shape clips, a video encoder, tube masking, EMA."""
    config = {
        "name": "tiny_vjepa",
        "data": {"dataset": {"name": "moving_shapes", "size": SIZE, "frames": FRAMES, "train_size": 16,
                             "val_size": 8},
                 "image_size": SIZE, "batch_size": 4, "num_workers": 0},
        "encoder": {"name": "vit_tiny_patch16_224", "patch_size": PATCH, "depth": 2, "frames": FRAMES,
                    "tubelet": TUBELET, "rope": rope},
        "views": {"masking": {"name": "tubes"}},
        # any predictor that builds on the video grid: V-JEPA's is not imported, the run's stays fresh
        "predictor": {"name": "projector"},
        "target": {"name": "ema"},
        "train": {"steps": 2},
    }
    path = tmp_path / "tiny_vjepa.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_import_vjepa_writes_a_run_that_computes_what_upstream_computes(upstream, tmp_path, capsys):
    from jepa_core.evaluate import load_run

    config = video_config(tmp_path)
    run_dir = tmp_path / "run"
    assert interop(["import-vjepa", str(upstream[0]), "--config", str(config), "--output", str(run_dir)]) == 0
    assert "predictor is freshly initialised" in capsys.readouterr().out
    state = checkpoint.load(RunDir(run_dir).checkpoint)  # weights only: training restarts from them at step 0
    assert state["step"] == 0 and "optimizer" not in state
    exp = load_run(run_dir)
    assert_computes_what_upstream_computes(exp.encoder, exp.target.encoder, upstream[1])
    assert interop(["export-timm", str(run_dir), str(tmp_path / "out.pth")]) == 2
    err = capsys.readouterr().err.strip()
    assert "timm has no video Vision Transformer" in err and "\n" not in err, err
    assert not (tmp_path / "out.pth").exists()


def test_import_vjepa_takes_a_vjepa2_file_into_a_rope_config_only(upstream2, tmp_path, capsys):
    from jepa_core.evaluate import load_run

    plain = ["import-vjepa", str(upstream2[0]), "--config", str(video_config(tmp_path)), "--output"]
    assert interop([*plain, str(tmp_path / "refused")]) == 2
    err = capsys.readouterr().err.strip()
    assert "a V-JEPA 2 encoder (RoPE attention); set encoder.rope: true" in err and "\n" not in err, err
    assert not (tmp_path / "refused").exists()
    run_dir = tmp_path / "run"
    config = video_config(tmp_path, rope=True)
    assert interop(["import-vjepa", str(upstream2[0]), "--config", str(config), "--output", str(run_dir)]) == 0
    exp = load_run(run_dir)
    assert exp.config.encoder.rope
    assert_computes_what_upstream_computes(exp.encoder, exp.target.encoder, upstream2[1])


# --------------------------------------------------------------------------- export-vjepa: back to upstream's layout

@pytest.mark.parametrize("rope", [False, True], ids=["vjepa", "vjepa2"])
def test_export_vjepa_is_upstreams_layout_and_imports_back_exactly(upstream, upstream2, tmp_path, capsys, rope):
    path, models = upstream2 if rope else upstream
    run_dir, out, again = tmp_path / "run", tmp_path / "out.pth", tmp_path / "again"
    assert interop(["import-vjepa", str(path), "--config", str(video_config(tmp_path, rope)), "--output",
                    str(run_dir)]) == 0
    capsys.readouterr()
    assert interop(["export-vjepa", str(run_dir), str(out)]) == 0
    printed = capsys.readouterr().out.strip()
    assert "import-vjepa" in printed and "\n" not in printed, printed
    raw = torch.load(out, weights_only=True)
    assert set(raw) == {"encoder", "target_encoder", "epoch"}
    for part, model in zip(("encoder", "target_encoder"), models):
        # upstream's module takes it strictly, with the prefixes its training loop writes
        reference = MultiMaskWrapper(VideoVisionTransformer2(seed=5) if rope else VideoVisionTransformer(seed=5))
        reference.load_state_dict({k.removeprefix("module."): v for k, v in raw[part].items()}, strict=True)
        for key, value in model.state_dict().items():  # the weights the upstream file held
            if key == "pos_embed":  # ours is rebuilt in torch, theirs in numpy float64
                torch.testing.assert_close(reference.backbone.pos_embed, value, atol=1e-6, rtol=0)
            else:
                assert torch.equal(reference.backbone.state_dict()[key], value), (part, key)
    assert interop(["import-vjepa", str(out), "--config", str(RunDir(run_dir).config), "--output", str(again)]) == 0
    before, after = (checkpoint.load(RunDir(d).checkpoint) for d in (run_dir, again))
    for module in ("encoder", "target"):
        assert set(after[module]) == set(before[module])
        for key, value in before[module].items():
            assert torch.equal(after[module][key], value), (module, key)
    # --encoder online: the online encoder under both keys
    assert interop(["export-vjepa", str(run_dir), str(out), "--encoder", "online"]) == 0
    online = torch.load(out, weights_only=True)
    assert all(torch.equal(online["target_encoder"][k], v) for k, v in online["encoder"].items())


def test_export_vjepa_refuses_an_image_run_in_one_line(tiny_config, tmp_path, capsys):
    from jepa_core.config import load_config
    from jepa_core.experiment import build_experiment
    from jepa_core.run import write_config

    exp = build_experiment(load_config(tiny_config))
    run_dir, out = tmp_path / "run", tmp_path / "out.pth"
    write_config(exp.config, run_dir)
    checkpoint.save(run_dir, {"step": 0, **{k: m.state_dict() for k, m in exp.modules().items()}})
    assert interop(["export-vjepa", str(run_dir), str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "image encoder" in err and "export-timm" in err and "\n" not in err, err
    assert not out.exists()
