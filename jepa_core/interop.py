"""Checkpoint interop: released I-JEPA and V-JEPA checkpoints in, plain timm or V-JEPA state dicts out.

``python -m jepa_core.interop import-ijepa CKPT.pth.tar --config CONFIG --output RUN_DIR``
turns an official I-JEPA checkpoint into a run directory that
``python -m jepa_core.evaluate RUN_DIR`` evaluates (predictor finetuning
included) and ``python -m jepa_core.launch CONFIG --output RUN_DIR`` keeps
training from. ``import-vjepa`` does the same for an official V-JEPA
(facebookresearch/jepa) or V-JEPA 2 (facebookresearch/vjepa2) video checkpoint, encoders only.
``python -m jepa_core.interop export-timm RUN_DIR OUT.pth``
writes the encoder as a state dict that ``timm.create_model(...,
pretrained=True, pretrained_cfg_overlay=dict(file=OUT.pth))`` loads
(image encoders only: timm has no video Vision Transformer).
``python -m jepa_core.interop export-vjepa RUN_DIR OUT.pth`` writes a video encoder
(V-JEPA or V-JEPA 2) back in upstream's layout, the inverse of ``import-vjepa``.

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

V-JEPA (names after ``module.backbone.``: DDP and upstream's ``MultiMaskWrapper``):

=========================================  =====================================
upstream V-JEPA                            jepa-core (a video encoder: ``encoder.frames`` set)
=========================================  =====================================
encoder / target_encoder ``X``             encoder ``vit.X`` / target ``encoder.vit.X``
  (``blocks.N.*``, ``norm``)               (timm's block names)
  but ``patch_embed.proj`` (Conv3d)        ``vit.patch_embed`` (Conv3d), in both
encoder ``pos_embed`` (fixed 3-D sin-cos)  checked equal to ours, not stored
predictor                                  not imported: ours stays freshly initialised
=========================================  =====================================

V-JEPA 2 (same names and file layout; needs ``encoder.rope: true``, refused without it and the reverse):

=========================================  =====================================
upstream V-JEPA 2                          jepa-core (``encoder.frames`` set, ``encoder.rope: true``)
=========================================  =====================================
encoder / target_encoder ``X``             as V-JEPA's: ``vit.X`` / ``encoder.vit.X``, Conv3d
  (``blocks.N.attn.{qkv,proj}``: RoPE)     our RoPE attention (jepa_core/rope.py), same names
no ``pos_embed`` (3-D RoPE in attention)   none: any ``encoder.frames`` / ``data.image_size`` fits
predictor                                  not imported: ours stays freshly initialised
=========================================  =====================================

timm export: ``vit.X`` -> ``X`` and our fixed sin-cos table as ``pos_embed`` (image encoders without RoPE).

V-JEPA export (video encoders): the tables above read right to left: ``{"encoder": online, "target_encoder":
target, "epoch": None}``, each ``module.backbone.X``, plus our fixed 3-D table as ``pos_embed`` (1, N, D)
unless RoPE. ``--encoder online`` writes the online encoder under both keys (upstream evaluates
``target_encoder``). ``import-vjepa`` reads it back exactly.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable

import torch

from jepa_core import checkpoint
from jepa_core.config import ConfigError, load_config
from jepa_core.encoder import sincos
from jepa_core.errors import cli
from jepa_core.experiment import Experiment, build_experiment
from jepa_core.run import check_run_dir, write_config
from jepa_core.rundir import RunDir, atomic_write

PREDICTOR_NAMES = {"predictor_embed.": "embed.", "predictor_blocks.": "blocks.",
                   "predictor_norm.": "norm.", "predictor_proj.": "proj.", "mask_token": "mask_token"}
UPSTREAM_PARTS = ("encoder", "predictor", "target_encoder")
#: what import-vjepa reads from a V-JEPA checkpoint (its predictor is not imported)
VJEPA_PARTS = ("encoder", "target_encoder")
#: upstream V-JEPA encoder names (after ``module.backbone.``) that are not ``vit.`` + the same name
VJEPA_NAMES = {"patch_embed.proj.": "patch_embed."}
#: the same, ours (after ``vit.``) -> upstream's, for export-vjepa
VJEPA_NAMES_BACK = {ours: theirs for theirs, ours in VJEPA_NAMES.items()}
#: upstream's prefix of every V-JEPA encoder weight: DDP's ``module.``, MultiMaskWrapper's ``backbone.``
VJEPA_PREFIX = "module.backbone."
IJEPA_SIZES = "data.image_size, encoder.name/patch_size (or predictor.width)"
VJEPA_SIZES = "encoder.frames, encoder.tubelet, data.image_size, encoder.name/patch_size"


def _strip_module(state: dict[str, torch.Tensor], *prefixes: str) -> dict[str, torch.Tensor]:
    """Drop DDP's ``module.`` (then each of ``prefixes``, in order) from the names."""
    def strip(key: str) -> str:
        for prefix in ("module.", *prefixes):
            key = key.removeprefix(prefix)
        return key

    return {strip(k): v for k, v in state.items()}


def _ijepa_table(theirs: torch.Tensor) -> str:
    return "the fixed 2-D sin-cos table I-JEPA uses"


def _check_pos_embed(state: dict[str, torch.Tensor], key: str, ours: torch.Tensor, source: str, part: str,
                     sizes: str = IJEPA_SIZES, other: Callable[[torch.Tensor], str] = _ijepa_table) -> None:
    """Upstream stores its fixed sin-cos table; ours is rebuilt from the config, so they must agree.

    ``sizes`` names the config keys that set the table's shape; ``other(theirs)`` says what
    the same-shaped table of the checkpoint is not (and what to set) when the values differ.
    """
    theirs = state.pop(key, None)
    if theirs is None:
        return
    theirs = theirs.reshape(-1, theirs.shape[-1]).float()
    ours = ours.reshape(-1, ours.shape[-1]).cpu()
    if theirs.shape != ours.shape:
        raise checkpoint.CheckpointError(
            f"{source}: {part} {key} has {theirs.shape[0]} patches x {theirs.shape[1]} features, the config "
            f"{ours.shape[0]} x {ours.shape[1]}; set {sizes} to the checkpoint's"
        )
    if not torch.allclose(theirs, ours, atol=1e-4):
        raise checkpoint.CheckpointError(f"{source}: {part} {key} is not {other(theirs)}")


def _read_upstream(path: str | Path) -> Any:
    """An upstream checkpoint file, read weights only: a downloaded file runs no code."""
    path = Path(path)
    if not path.is_file():
        raise checkpoint.CheckpointError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise checkpoint.CheckpointError(
            f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}); cut short or not a .pth.tar?"
        ) from None


def _require_parts(raw: Any, parts: tuple[str, ...], path: str | Path, kind: str) -> None:
    missing = [part for part in parts if not isinstance(raw, dict) or part not in raw]
    if missing:
        raise checkpoint.CheckpointError(f"{path}: not {kind}, it has no {' or '.join(missing)} "
                                         f"state dict (expected keys {', '.join(parts)})")


def _target_prefix(exp: Experiment) -> str | None:
    """Where the target keeps its own encoder copy (``"encoder."`` for ``ema``); None when it has none."""
    copy = exp.target.target_encoder(exp.encoder)
    if copy is exp.encoder:
        return None
    return next((f"{name}." for name, module in exp.target.named_modules() if module is copy and name), None)


def _with_target(encoder: dict[str, torch.Tensor], target_encoder: dict[str, torch.Tensor], predictor: dict,
                 exp: Experiment, source: str, epoch: Any) -> dict[str, Any]:
    """Our weights-only checkpoint: the modules plus where they came from (training restarts at step 0)."""
    prefix = _target_prefix(exp)
    if prefix is None:
        raise checkpoint.CheckpointError(f"{source}: this config's target keeps no encoder copy to hold the "
                                         "checkpoint's target_encoder; use an ema target")
    target = {f"{prefix}{k}": v for k, v in target_encoder.items()}
    return {"encoder": encoder, "predictor": predictor, "target": target,
            "step": 0, "imported_from": source, "upstream_epoch": epoch}


def _renamed(key: str, names: dict[str, str]) -> str | None:
    """``key`` with its prefix from ``names`` replaced; None when no prefix fits."""
    return next((new + key[len(old):] for old, new in names.items() if key.startswith(old)), None)


def _rename_predictor(state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        new = _renamed(key, PREDICTOR_NAMES)
        if new is None:
            raise checkpoint.CheckpointError(f"{source}: unexpected predictor weight {key!r} "
                                             "(not an I-JEPA VisionTransformerPredictor)")
        out[new] = value
    return out


def ijepa_state(path: str | Path, exp: Experiment) -> dict[str, Any]:
    """Our checkpoint modules (``encoder``, ``predictor``, ``target``) from an official I-JEPA file."""
    raw = _read_upstream(path)
    _require_parts(raw, UPSTREAM_PARTS, path, "an I-JEPA checkpoint")
    source = str(path)
    encoders = {}
    for part in ("encoder", "target_encoder"):
        state = _strip_module(raw[part])
        _check_pos_embed(state, "pos_embed", exp.encoder.pos_embed, source, part)
        encoders[part] = {f"vit.{k}": v for k, v in state.items()}
    predictor = _strip_module(raw["predictor"])
    _check_pos_embed(predictor, "predictor_pos_embed", exp.predictor.pos_embed, source, "predictor")
    return _with_target(encoders["encoder"], encoders["target_encoder"], _rename_predictor(predictor, source),
                        exp, source, raw.get("epoch"))


def _check_rope(state: dict[str, torch.Tensor], encoder: torch.nn.Module, source: str, part: str) -> None:
    """A V-JEPA 2 encoder (RoPE attention, hence no ``pos_embed``) needs ``encoder.rope``; V-JEPA's needs it off.

    The weights are the same either way, so only the ``pos_embed`` tells them apart.
    """
    has_table = "pos_embed" in state
    if getattr(encoder, "rope", False) and has_table:
        raise checkpoint.CheckpointError(f"{source}: {part} has a pos_embed (V-JEPA's added sin-cos positions), "
                                         "not V-JEPA 2's RoPE attention; set encoder.rope: false")
    if not getattr(encoder, "rope", False) and not has_table and any(k.startswith("blocks.") for k in state):
        raise checkpoint.CheckpointError(f"{source}: {part} has no pos_embed: a V-JEPA 2 encoder (RoPE attention); "
                                         "set encoder.rope: true")


def _vjepa_table(encoder: torch.nn.Module) -> Callable[[torch.Tensor], str]:
    """What a V-JEPA ``pos_embed`` of the right shape but other values is not, and which key to set."""
    def other(theirs: torch.Tensor) -> str:
        grid = " x ".join(map(str, encoder.grid))
        for uniform_power in (True, False):
            if torch.allclose(theirs, sincos(encoder.embed_dim, encoder.grid, uniform_power), atol=1e-4):
                return (f"this config's 3-D sin-cos table: it is the one with uniform_power {uniform_power}; "
                        f"set encoder.uniform_power: {str(uniform_power).lower()}")
        return (f"the fixed 3-D sin-cos table of this config's {grid} (time x rows x cols) token grid; "
                f"set {VJEPA_SIZES} and encoder.uniform_power to the checkpoint's")
    return other


def _vjepa_encoder(state: dict[str, torch.Tensor], encoder: torch.nn.Module, source: str,
                   part: str) -> dict[str, torch.Tensor]:
    """One upstream V-JEPA or V-JEPA 2 encoder state (``module.backbone.`` stripped) as our video encoder's."""
    theirs, ours = state.get("patch_embed.proj.weight"), encoder.vit.patch_embed.weight
    if theirs is not None and theirs.shape != ours.shape:
        if theirs.dim() == 4:
            raise checkpoint.CheckpointError(f"{source}: {part} patch_embed.proj is a 2-D (image) patch embedding, "
                                             "not V-JEPA's Conv3d; an I-JEPA checkpoint? Use import-ijepa")
        raise checkpoint.CheckpointError(
            f"{source}: {part} patch_embed.proj.weight has shape {tuple(theirs.shape)} (features, channels, "
            f"tubelet, patch, patch), the config {tuple(ours.shape)}; set encoder.tubelet, "
            "encoder.name/patch_size to the checkpoint's")
    if encoder.pos_embed is not None:  # V-JEPA's table; a RoPE encoder has none (checked by _check_rope)
        _check_pos_embed(state, "pos_embed", encoder.pos_embed, source, part, VJEPA_SIZES, _vjepa_table(encoder))
    expected = set(encoder.state_dict())
    out = {}
    for key, value in state.items():
        new = "vit." + (_renamed(key, VJEPA_NAMES) or key)
        if new not in expected:
            raise checkpoint.CheckpointError(f"{source}: unexpected {part} weight {key!r} "
                                             "(not a V-JEPA (2) VisionTransformer of this config's architecture)")
        out[new] = value
    return out


def vjepa_state(path: str | Path, exp: Experiment) -> dict[str, Any]:
    """Our checkpoint modules from an official V-JEPA (2) file: its encoder and target encoder, our fresh predictor."""
    raw = _read_upstream(path)
    source = str(path)
    states = {part: _strip_module(raw[part], "backbone.") for part in VJEPA_PARTS
              if isinstance(raw, dict) and isinstance(raw.get(part), dict)}
    for part, state in states.items():  # V-JEPA 2 or not is said even when other parts are missing
        _check_rope(state, exp.encoder, source, part)
    _require_parts(states, VJEPA_PARTS, path, "a V-JEPA checkpoint")
    encoders = {part: _vjepa_encoder(state, exp.encoder, source, part) for part, state in states.items()}
    predictor = {k: v.detach().clone() for k, v in exp.predictor.state_dict().items()}  # not imported
    return _with_target(encoders["encoder"], encoders["target_encoder"], predictor, exp, source, raw.get("epoch"))


def _import(ckpt: str | Path, config: str | Path, run_dir: str | Path, overrides: list[str],
            state_of: Callable[[str | Path, Experiment], dict[str, Any]],
            refusal: Callable[[Experiment], str | None]) -> Path:
    """Write ``run_dir`` (config.yaml + a weights-only checkpoint) from ``state_of(ckpt, exp)``.

    ``refusal(exp)`` says why the config cannot hold the checkpoint (None: it can).
    Nothing is written unless every module loads the converted weights exactly.
    """
    loaded = load_config(config, overrides)
    exp = build_experiment(loaded)
    problem = refusal(exp)
    if problem:
        raise ConfigError(f"{config}: {problem}")
    run_dir = Path(run_dir)
    if RunDir(run_dir).latest_checkpoint() is not None:
        raise ConfigError(f"--output {run_dir}: already holds a checkpoint; import into a new directory")
    check_run_dir(run_dir, loaded)
    try:
        state = state_of(ckpt, exp)
        checkpoint.load_modules(exp.modules(), state, str(ckpt))  # shapes and names must fit exactly
    except checkpoint.CheckpointError as exc:
        raise ConfigError(str(exc)) from None
    write_config(exp.config, run_dir)
    checkpoint.save(run_dir, state)
    return run_dir


def _needs_predictor_and_ema(kind: str) -> Callable[[Experiment], str | None]:
    def refusal(exp: Experiment) -> str | None:
        if exp.predictor is None or _target_prefix(exp) is None:
            return f"{kind} checkpoints need a config with a predictor and an ema target"
        return None
    return refusal


def import_ijepa(ckpt: str | Path, config: str | Path, run_dir: str | Path, overrides: list[str] = ()) -> Path:
    """Write ``run_dir`` (config.yaml + checkpoint) from an I-JEPA checkpoint; ConfigError on bad input."""
    return _import(ckpt, config, run_dir, overrides, ijepa_state, _needs_predictor_and_ema("I-JEPA"))


def _vjepa_refusal(exp: Experiment) -> str | None:
    if getattr(exp.encoder, "frames", None) is None:
        return ("V-JEPA checkpoints need a video encoder: set encoder.frames (16 for the released "
                "ViT-L/16 and ViT-H/16; any multiple of the tubelet for V-JEPA 2) and encoder.tubelet (2)")
    return _needs_predictor_and_ema("V-JEPA")(exp)


def import_vjepa(ckpt: str | Path, config: str | Path, run_dir: str | Path, overrides: list[str] = ()) -> Path:
    """Write ``run_dir`` from a V-JEPA (2) checkpoint's encoders (predictor stays fresh); ConfigError on bad input."""
    return _import(ckpt, config, run_dir, overrides, vjepa_state, _vjepa_refusal)


def timm_state(encoder: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The encoder as timm's VisionTransformer names it, fixed positions as ``pos_embed``."""
    if getattr(encoder, "frames", None) is not None:
        raise ConfigError(f"export-timm: this run's encoder is a video encoder (encoder.frames: {encoder.frames}, "
                          "a Conv3d tubelet embedding) and timm has no video Vision Transformer to load it; "
                          "export it in upstream V-JEPA layout with export-vjepa")
    if getattr(encoder, "rope", False):
        raise ConfigError("export-timm: this run's encoder uses RoPE attention (encoder.rope: true), which timm's "
                          "VisionTransformer does not have; export-timm takes sin-cos encoders only")
    state = {k.removeprefix("vit."): v.detach().cpu().clone() for k, v in encoder.state_dict().items()}
    state["pos_embed"] = encoder.pos_embed.detach().cpu().clone()
    return state


def timm_kwargs(encoder: torch.nn.Module) -> dict[str, Any]:
    """``timm.create_model`` arguments that build the architecture :func:`timm_state` fits."""
    vit = encoder.vit
    return {"class_token": False, "global_pool": "avg", "fc_norm": False,
            "img_size": vit.patch_embed.img_size[0], "patch_size": encoder.patch_size, "depth": len(vit.blocks)}


def _trained_run(run_dir: str | Path):
    from jepa_core.evaluate import load_run, trained_run

    return trained_run(load_run(run_dir))


def export_timm(run_dir: str | Path, out: str | Path, which: str = "target") -> str:
    """Write the run's (target or online) encoder for timm; returns the create_model line to use it."""
    run = _trained_run(run_dir)
    encoder = run.target_encoder if which == "target" else run.encoder
    state = timm_state(encoder)  # refuses a video encoder before anything is written
    atomic_write(out, lambda f: torch.save(state, f))
    kwargs = ", ".join(f"{k}={v!r}" for k, v in timm_kwargs(encoder).items())
    return (f"timm.create_model({encoder.name!r}, pretrained=True, num_classes=0, "
            f"pretrained_cfg_overlay=dict(file={str(out)!r}), {kwargs})")


def vjepa_encoder_state(encoder: torch.nn.Module) -> dict[str, torch.Tensor]:
    """One video encoder as upstream's V-JEPA (2) VisionTransformer names it (no prefix): the inverse of
    :func:`_vjepa_encoder`, with our fixed 3-D sin-cos table as ``pos_embed`` (1, N, D) unless RoPE."""
    if getattr(encoder, "frames", None) is None:
        raise ConfigError("export-vjepa: this run's encoder is an image encoder (no encoder.frames), not V-JEPA's "
                          "video encoder; export it for timm with export-timm")
    state = {}
    for key, value in encoder.state_dict().items():
        key = key.removeprefix("vit.")
        state[_renamed(key, VJEPA_NAMES_BACK) or key] = value.detach().cpu().clone()
    if encoder.pos_embed is not None:  # V-JEPA stores its table; V-JEPA 2 (RoPE) has none
        state["pos_embed"] = encoder.pos_embed.detach().cpu().clone()
    return state


def export_vjepa(run_dir: str | Path, out: str | Path, which: str = "target") -> dict[str, Any]:
    """Write the run's encoders as an upstream V-JEPA checkpoint; returns what was written.

    ``encoder`` holds the online encoder, ``target_encoder`` the ``which`` one (the key upstream's
    evaluations read); no predictor or optimizer. ``epoch`` is None (we count steps, and upstream's
    evaluation loader logs the key).
    """
    run = _trained_run(run_dir)
    chosen = run.target_encoder if which == "target" else run.encoder
    raw = {part: {VJEPA_PREFIX + k: v for k, v in vjepa_encoder_state(encoder).items()}  # refuses an image run
           for part, encoder in zip(VJEPA_PARTS, (run.encoder, chosen))}
    raw["epoch"] = None
    atomic_write(out, lambda f: torch.save(raw, f))
    return raw


@cli
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jepa_core.interop", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    imports = {"import-ijepa": ("official I-JEPA .pth.tar -> run directory",
                                "experiments/ijepa.yaml for the released ViT-H/14"),
               "import-vjepa": ("official V-JEPA or V-JEPA 2 video checkpoint (encoders) -> run directory",
                                "a video encoder: encoder.frames 16, tubelet 2 for the released ViT-L/16, ViT-H/16; "
                                "V-JEPA 2 also encoder.rope: true")}
    for name, (help_, example) in imports.items():
        imp = commands.add_parser(name, help=help_)
        imp.add_argument("checkpoint")
        imp.add_argument("--config", required=True, help=f"YAML with the checkpoint's architecture ({example})")
        imp.add_argument("--output", required=True, metavar="RUN_DIR")
        imp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides")
    exp_ = commands.add_parser("export-timm", help="run directory -> timm state dict")
    exp_.add_argument("run_dir")
    exp_.add_argument("out")
    exp_.add_argument("--encoder", choices=("target", "online"), default="target",
                      help="which encoder to export (default: the EMA target, which I-JEPA evaluates)")
    vj = commands.add_parser("export-vjepa", help="run directory (video encoder) -> upstream V-JEPA (2) checkpoint")
    vj.add_argument("run_dir")
    vj.add_argument("out")
    vj.add_argument("--encoder", choices=("target", "online"), default="target",
                    help="which encoder goes under target_encoder, the key upstream evaluates (default: the EMA "
                         "target; online: the online encoder under both keys)")
    args = parser.parse_args(argv)
    if args.command in ("import-ijepa", "import-vjepa"):
        importer = import_ijepa if args.command == "import-ijepa" else import_vjepa
        run = RunDir(importer(args.checkpoint, args.config, args.output, args.overrides))
        print(f"imported {args.checkpoint} into {run.path} ({run.config.name} + "
              f"{run.checkpoint.relative_to(run.path)}); evaluate with: python -m jepa_core.evaluate {run.path}")
        if args.command == "import-vjepa":
            print("the predictor is freshly initialised: V-JEPA's (and V-JEPA 2's) predictor is not imported "
                  "(encoder and target encoder are)")
    elif args.command == "export-vjepa":
        export_vjepa(args.run_dir, args.out, args.encoder)
        print(f"wrote {args.out} (upstream V-JEPA layout: encoder = online, target_encoder = {args.encoder}); "
              f"load it with: python -m jepa_core.interop import-vjepa {args.out} --config "
              f"{RunDir(args.run_dir).config} --output NEW_RUN_DIR, or upstream's evaluations "
              "(pretrain checkpoint_key: target_encoder)")
    else:
        line = export_timm(args.run_dir, args.out, args.encoder)
        print(f"wrote {args.out}; load it with:\n  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
