"""Released I-JEPA checkpoints load into our modules and compute what upstream computes; export to timm."""

import pytest
import torch
import yaml

from ijepa_reference import official_checkpoint
from jepa_core.bench.official import VisionTransformer, VisionTransformerPredictor
from jepa_core.evaluate import load_run
from jepa_core.evaluate import main as evaluate
from jepa_core.interop import main as interop
from jepa_core.rundir import RunDir
from helpers import assert_close_scaled

GRID, PATCH, DIM, HEADS = (6, 6), 8, 192, 3  # conftest TINY: 48 px, patch 8, vit_tiny
PRED = {"width": 64, "depth": 1, "heads": 2}

#: another implementation (upstream's attention and layout, timm's) computing the same features:
#: relative to the largest feature (2.5-5). The worst seen is 6e-7 of it, AVX-512 or AVX2.
IMPL_RTOL = 1e-5


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    """Upstream-layout encoder, predictor and target encoder saved as the official loop saves them."""
    root = tmp_path_factory.mktemp("ijepa")
    models = (VisionTransformer(GRID, PATCH, DIM, 2, HEADS, seed=1),
              VisionTransformerPredictor(GRID, DIM, PRED["width"], PRED["depth"], PRED["heads"], seed=2),
              VisionTransformer(GRID, PATCH, DIM, 2, HEADS, seed=3))
    path = root / "IN1K-vit.t.8-300e.pth.tar"
    torch.save(official_checkpoint(*models), path)
    return path, models


@pytest.fixture(scope="module")
def imported(upstream, tmp_path_factory):
    from conftest import TINY

    root = tmp_path_factory.mktemp("imported")
    config = root / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    run_dir = root / "run"
    assert interop(["import-ijepa", str(upstream[0]), "--config", str(config), "--output", str(run_dir)]) == 0
    return run_dir


def test_imported_modules_compute_what_upstream_computes(upstream, imported):
    _, (encoder, predictor, target) = upstream
    exp = load_run(imported)
    images = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    context = torch.tensor([[0, 1, 2, 6, 7, 8, 12, 13], [20, 21, 22, 23, 26, 27, 28, 29]])
    targets = torch.tensor([[[30, 31, 35], [3, 4, 5]], [[0, 6, 12], [33, 34, 35]]])  # (B, 2 blocks, 3)
    with torch.no_grad():
        assert_close_scaled(exp.encoder(images, context), encoder(images, context), IMPL_RTOL, "context encoder")
        assert_close_scaled(exp.target.encoder(images), target(images), IMPL_RTOL, "target encoder")
        ours = exp.predictor(exp.encoder(images, context), context, targets, None)
        for block in range(targets.shape[1]):
            theirs = predictor(encoder(images, context), context, targets[:, block])
            assert_close_scaled(ours[:, block], theirs, IMPL_RTOL, f"predictor, target block {block}")


def test_an_imported_checkpoint_is_evaluated_and_predictor_finetuned(imported, capsys):
    fast = "eval=[{name: predictor_finetune, max_train: 64, max_val: 32, epochs: 1}]"
    assert evaluate([str(imported), "--set", fast]) == 0
    out = capsys.readouterr().out
    assert "top1_random_predictor" in out and "gain" in out


def test_export_loads_into_timm_create_model_and_matches_our_encoder(imported, tmp_path, capsys):
    import timm

    out = tmp_path / "encoder_timm.pth"
    assert interop(["export-timm", str(imported), str(out)]) == 0
    printed = capsys.readouterr().out
    assert "pretrained_cfg_overlay=dict(file=" in printed
    exp = load_run(imported)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=True, num_classes=0,
                              pretrained_cfg_overlay=dict(file=str(out)), class_token=False, global_pool="avg",
                              fc_norm=False, img_size=48, patch_size=8, depth=2).eval()
    images = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = exp.target.encoder(images)
        assert_close_scaled(model.forward_features(images), ours, IMPL_RTOL, "timm features")
        assert_close_scaled(model(images), ours.mean(1), IMPL_RTOL, "timm pooled features")


@pytest.mark.parametrize("case, expected", [
    ("other_depth", "does not fit this config's encoder (another architecture?)"),
    ("other_image_size", "36 patches x 192 features, the config 64 x 192; set data.image_size"),
    ("not_ijepa", "not an I-JEPA checkpoint, it has no predictor or target_encoder state dict"),
    ("cut_short", "not a readable PyTorch checkpoint"),
    ("missing_file", "no checkpoint at"),
    ("existing_run", "already holds a checkpoint; import into a new directory"),
    ("no_ema_target", "I-JEPA checkpoints need a config with a predictor and an ema target"),
])
def test_bad_imports_are_one_line_errors_that_write_nothing(upstream, imported, tmp_path, capsys, case, expected):
    from conftest import TINY

    config = dict(TINY)
    ckpt = tmp_path / "ckpt.pth.tar"
    ckpt.write_bytes(upstream[0].read_bytes())
    run_dir = tmp_path / "run"
    if case == "other_depth":
        config["encoder"] = {**TINY["encoder"], "depth": 3}
    elif case == "other_image_size":
        config["data"] = {**TINY["data"], "image_size": 64}
    elif case == "not_ijepa":
        torch.save({"encoder": {}}, ckpt)
    elif case == "cut_short":
        ckpt.write_bytes(ckpt.read_bytes()[:1000])
    elif case == "missing_file":
        ckpt.unlink()
    elif case == "existing_run":
        run_dir = imported
    elif case == "no_ema_target":  # a target without its own encoder copy has nowhere to put target_encoder
        config["predictor"] = {"name": "pixel_decoder", "depth": 1, "width": 64, "heads": 2, "patch_size": 8}
        config["target"] = {"name": "pixels"}
    before = RunDir(run_dir).checkpoint.read_bytes() if case == "existing_run" else None
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    argv = ["import-ijepa", str(ckpt), "--config", str(tmp_path / "c.yaml"), "--output", str(run_dir)]
    assert interop(argv) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and "\n" not in err and "Traceback" not in err, err
    if before is None:
        assert not run_dir.exists()
    else:
        assert RunDir(run_dir).checkpoint.read_bytes() == before
