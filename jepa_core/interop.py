"""Checkpoint interop: released I-JEPA checkpoints in, plain timm state dicts out.

``python -m jepa_core.interop import-ijepa CKPT.pth.tar --config CONFIG --output RUN_DIR``
turns an official I-JEPA checkpoint into a run directory that
``python -m jepa_core.evaluate RUN_DIR`` evaluates (predictor finetuning
included) and ``python -m jepa_core.launch CONFIG --output RUN_DIR`` keeps
training from. ``python -m jepa_core.interop export-timm RUN_DIR OUT.pth``
writes the encoder as a state dict that ``timm.create_model(...,
pretrained=True, pretrained_cfg_overlay=dict(file=OUT.pth))`` loads.

Key mapping (upstream names after the ``module.`` prefix that DDP adds):

=========================================  =====================================
upstream I-JEPA                            jepa-core
=========================================  =====================================
encoder / target_encoder ``X``             encoder ``vit.X`` / target ``encoder.vit.X``
  (``patch_embed.proj``, ``blocks.N.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``, ``norm``)
encoder ``pos_embed`` (fixed sin-cos)      checked equal to ours, not stored
predictor ``predictor_embed``              predictor ``embed``
predictor ``mask_token``                   predictor ``mask_token``
predictor ``predictor_pos_embed``          checked equal to ours, not stored
predictor ``predictor_blocks.N.*``         predictor ``blocks.N.*``
predictor ``predictor_norm`` / ``_proj``   predictor ``norm`` / ``proj``
=========================================  =====================================

timm export: ``vit.X`` -> ``X`` and our fixed sin-cos table as ``pos_embed``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

from jepa_core import checkpoint
from jepa_core.config import ConfigError, load_config
from jepa_core.errors import cli
from jepa_core.experiment import Experiment, build_experiment
from jepa_core.run import check_run_dir, write_config
from jepa_core.rundir import RunDir, atomic_write

PREDICTOR_NAMES = {"predictor_embed.": "embed.", "predictor_blocks.": "blocks.",
                   "predictor_norm.": "norm.", "predictor_proj.": "proj.", "mask_token": "mask_token"}
UPSTREAM_PARTS = ("encoder", "predictor", "target_encoder")


def _strip_module(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k.removeprefix("module."): v for k, v in state.items()}


def _check_pos_embed(state: dict[str, torch.Tensor], key: str, ours: torch.Tensor, source: str,
                     part: str) -> None:
    """Upstream stores its fixed sin-cos table; ours is rebuilt from the config, so they must agree."""
    theirs = state.pop(key, None)
    if theirs is None:
        return
    theirs = theirs.reshape(-1, theirs.shape[-1]).float()
    ours = ours.reshape(-1, ours.shape[-1]).cpu()
    if theirs.shape != ours.shape:
        raise checkpoint.CheckpointError(
            f"{source}: {part} {key} has {theirs.shape[0]} patches x {theirs.shape[1]} features, the config "
            f"{ours.shape[0]} x {ours.shape[1]}; set data.image_size, encoder.name/patch_size "
            "(or predictor.width) to the checkpoint's"
        )
    if not torch.allclose(theirs, ours, atol=1e-4):
        raise checkpoint.CheckpointError(f"{source}: {part} {key} is not the fixed 2-D sin-cos table I-JEPA uses")


def _rename_predictor(state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        new = next((key.replace(old, new, 1) for old, new in PREDICTOR_NAMES.items() if key.startswith(old)), None)
        if new is None:
            raise checkpoint.CheckpointError(f"{source}: unexpected predictor weight {key!r} "
                                             "(not an I-JEPA VisionTransformerPredictor)")
        out[new] = value
    return out


def ijepa_state(path: str | Path, exp: Experiment) -> dict[str, Any]:
    """Our checkpoint modules (``encoder``, ``predictor``, ``target``) from an official I-JEPA file."""
    path = Path(path)
    if not path.is_file():
        raise checkpoint.CheckpointError(f"no checkpoint at {path}")
    try:  # weights only: a downloaded file runs no code
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise checkpoint.CheckpointError(
            f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}); cut short or not a .pth.tar?"
        ) from None
    missing = [part for part in UPSTREAM_PARTS if not isinstance(raw, dict) or part not in raw]
    if missing:
        raise checkpoint.CheckpointError(f"{path}: not an I-JEPA checkpoint, it has no {' or '.join(missing)} "
                                         f"state dict (expected keys {', '.join(UPSTREAM_PARTS)})")
    source = str(path)
    encoders = {}
    for part in ("encoder", "target_encoder"):
        state = _strip_module(raw[part])
        _check_pos_embed(state, "pos_embed", exp.encoder.pos_embed, source, part)
        encoders[part] = {f"vit.{k}": v for k, v in state.items()}
    predictor = _strip_module(raw["predictor"])
    _check_pos_embed(predictor, "predictor_pos_embed", exp.predictor.pos_embed, source, "predictor")
    target = {f"encoder.{k}": v for k, v in encoders["target_encoder"].items()}
    return {"encoder": encoders["encoder"], "predictor": _rename_predictor(predictor, source), "target": target,
            "step": 0, "imported_from": source, "upstream_epoch": raw.get("epoch")}


def import_ijepa(ckpt: str | Path, config: str | Path, run_dir: str | Path, overrides: list[str] = ()) -> Path:
    """Write ``run_dir`` (config.yaml + checkpoint) from an I-JEPA checkpoint; ConfigError on bad input."""
    loaded = load_config(config, overrides)
    exp = build_experiment(loaded)
    if exp.predictor is None or exp.target.target_encoder(exp.encoder) is exp.encoder:
        raise ConfigError(f"{config}: I-JEPA checkpoints need a config with a predictor and an ema target")
    run_dir = Path(run_dir)
    if RunDir(run_dir).latest_checkpoint() is not None:
        raise ConfigError(f"--output {run_dir}: already holds a checkpoint; import into a new directory")
    check_run_dir(run_dir, loaded)
    try:
        state = ijepa_state(ckpt, exp)
        checkpoint.load_modules(exp.modules(), state, str(ckpt))  # shapes and names must fit exactly
    except checkpoint.CheckpointError as exc:
        raise ConfigError(str(exc)) from None
    write_config(exp.config, run_dir)
    checkpoint.save(run_dir, state)
    return run_dir


def timm_state(encoder: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The encoder as timm's VisionTransformer names it, fixed positions as ``pos_embed``."""
    state = {k.removeprefix("vit."): v.detach().cpu().clone() for k, v in encoder.state_dict().items()}
    state["pos_embed"] = encoder.pos_embed.detach().cpu().clone()
    return state


def timm_kwargs(encoder: torch.nn.Module) -> dict[str, Any]:
    """``timm.create_model`` arguments that build the architecture :func:`timm_state` fits."""
    vit = encoder.vit
    return {"class_token": False, "global_pool": "avg", "fc_norm": False,
            "img_size": vit.patch_embed.img_size[0], "patch_size": encoder.patch_size, "depth": len(vit.blocks)}


def export_timm(run_dir: str | Path, out: str | Path, which: str = "target") -> str:
    """Write the run's (target or online) encoder for timm; returns the create_model line to use it."""
    from jepa_core.evaluate import load_run, trained_run

    run = trained_run(load_run(run_dir))
    encoder = run.target_encoder if which == "target" else run.encoder
    atomic_write(out, lambda f: torch.save(timm_state(encoder), f))
    kwargs = ", ".join(f"{k}={v!r}" for k, v in timm_kwargs(encoder).items())
    return (f"timm.create_model({encoder.name!r}, pretrained=True, num_classes=0, "
            f"pretrained_cfg_overlay=dict(file={str(out)!r}), {kwargs})")


@cli
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jepa_core.interop", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    imp = commands.add_parser("import-ijepa", help="official I-JEPA .pth.tar -> run directory")
    imp.add_argument("checkpoint")
    imp.add_argument("--config", required=True, help="YAML with the checkpoint's architecture "
                     "(experiments/ijepa.yaml for the released ViT-H/14)")
    imp.add_argument("--output", required=True, metavar="RUN_DIR")
    imp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides")
    exp_ = commands.add_parser("export-timm", help="run directory -> timm state dict")
    exp_.add_argument("run_dir")
    exp_.add_argument("out")
    exp_.add_argument("--encoder", choices=("target", "online"), default="target",
                      help="which encoder to export (default: the EMA target, which I-JEPA evaluates)")
    args = parser.parse_args(argv)
    if args.command == "import-ijepa":
        run = RunDir(import_ijepa(args.checkpoint, args.config, args.output, args.overrides))
        print(f"imported {args.checkpoint} into {run.path} ({run.config.name} + "
              f"{run.checkpoint.relative_to(run.path)}); evaluate with: python -m jepa_core.evaluate {run.path}")
    else:
        line = export_timm(args.run_dir, args.out, args.encoder)
        print(f"wrote {args.out}; load it with:\n  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
