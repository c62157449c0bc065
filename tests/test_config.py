"""Config: strict YAML with base inheritance, --set overrides and one-line errors."""

from pathlib import Path

import pytest
import yaml
from PIL import Image

from jepa_core.config import ConfigError, dump_yaml, load_config
from jepa_core.experiment import build_experiment
from jepa_core.launch import main as launch
from jepa_core.sweep import expand, is_sweep


def test_base_inheritance_and_typed_overrides(write):
    write("base.yaml", """
        name: base
        predictor: {name: vit, depth: 6, width: 96, heads: 4}
        train: {steps: 100, seed: 1}
        views:
          source: [{name: grayscale, p: 0.2}]
    """)
    child = write("sub/child.yaml", """
        base: ../base.yaml
        name: child
        predictor: {depth: 12}
    """)
    loaded = load_config(child, ["train.steps=7", "optim.lr=1e-3", "views.source.0.p=0.5", "conditioning=feature"])
    cfg = loaded.config
    assert cfg.name == "child"
    assert cfg.predictor.params == {"depth": 12, "width": 96, "heads": 4}  # merged key by key
    assert cfg.train.steps == 7 and cfg.train.seed == 1
    assert cfg.optim.lr == 1e-3  # YAML 1.1 reads 1e-3 as a string; a float field accepts it
    assert cfg.views.source[0].params == {"p": 0.5}
    assert cfg.conditioning.name == "feature"
    assert loaded.origin("predictor.width").endswith("base.yaml")
    assert loaded.origin("predictor.depth").endswith("child.yaml")
    assert load_config(write("again.yaml", dump_yaml(cfg))).config == cfg  # resolved config round-trips


@pytest.mark.parametrize("text, overrides, expected", [
    ("train: {stpes: 3}\n", [], "bad.yaml: train.stpes: unknown key (did you mean 'steps'?)"),
    ("train: {steps: many}\n", [], "bad.yaml: train.steps: must be an integer, got 'many'"),
    ("data: {flip_p: 1.5}\n", [], "bad.yaml: data.flip_p: 'flip_p' is a probability and must be in [0, 1]"),
    ("predictor: {name: vitt}\n", [], "bad.yaml: predictor.name: unknown predictors 'vitt' (did you mean 'vit' or 'ac_vit'?)"),
    ("predictor: {name: vit, depht: 2}\n", [], "bad.yaml: predictor.depht: predictors 'vit' has no parameter"),
    ("base: missing.yaml\n", [], "bad.yaml: base: file"),
    ("train: [unclosed\n", [], "bad.yaml: unreadable YAML at line"),
    ("name: x\n", ["train.steps=0"], "--set train.steps: train.steps: 'steps' must be an integer >= 1"),
    ("encoder: {name: vit_tiny_patch16_22}\n", [], "encoder.name: unknown timm Vision Transformer"),
    ("plugins: [nowhere.py]\n", [], "bad.yaml: plugins.0: plugin file"),
    ("data: {image_size: 50}\nencoder: {patch_size: 8}\n", [],
     "bad.yaml: data.image_size: 50 is not a multiple of the encoder's patch size 8 (encoder.patch_size); "
     "use a multiple such as 48 or 56"),
    ("name: x\n", ["data.image_size=230"], "--set data.image_size: data.image_size: 230 is not a multiple of "
     "the encoder's patch size 16 (encoder.name vit_tiny_patch16_224)"),
    # refused at launch, not after training when the evaluator first reads the labels
    ("eval: [{name: linear_probe, task: texture}]\n", [], "bad.yaml: eval.0: evaluator 'linear_probe' reads the "
     "labelled task 'texture'; dataset 'shapes' has 'shape', 'colour'"),
    ("eval: [{name: multitask_predictor, tasks: [shape, grid]}]\n", [], "bad.yaml: eval.0: evaluator "
     "'multitask_predictor' reads the labelled task 'grid'; dataset 'shapes' has 'shape', 'colour'"),
    ("eval: [{name: predictor_finetune, task: grid}]\n", [], "bad.yaml: eval.0: evaluator "
     "'predictor_finetune' reads the labelled task 'grid'; dataset 'shapes' has 'shape', 'colour'"),
    ("eval: [{name: equivariance_mrr, bank_size: 8, queries: 9}]\n", [], "bad.yaml: eval.0.queries: evaluators "
     "'equivariance_mrr': 'queries' (9) must be at most 'bank_size' (8): each query is one bank entry"),
])
def test_config_errors_exit_2_with_one_line_naming_file_and_key(write, tmp_path, capsys, text, overrides, expected):
    bad = write("bad.yaml", text)
    run_dir = tmp_path / "existing_run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("precious: true\n")
    argv = [str(bad), "--output", str(run_dir)] + [a for o in overrides for a in ("--set", o)]
    assert launch(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert expected in err, err
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.yaml"]
    assert (run_dir / "config.yaml").read_text() == "precious: true\n"


def test_a_train_split_smaller_than_one_batch_is_one_line_before_any_step(tiny_config, tmp_path, capsys):
    """TINY has 256 train images: a batch of 512 can never be drawn."""
    run_dir = tmp_path / "run"
    assert launch([str(tiny_config), "--output", str(run_dir), "--set", "data.batch_size=512"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    assert err.endswith("data.batch_size: dataset of 256 samples is too small for batch_size 512 on 1 rank(s): "
                        "no full batch per epoch; use at most 256"), err
    assert not (run_dir / "metrics.jsonl").exists()


def test_a_different_config_never_reuses_a_run_directory(tiny_config, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert launch([str(tiny_config), "--output", str(run_dir), "--set", "train.steps=2"]) == 0
    before = (run_dir / "config.yaml").read_text()
    assert launch([str(tiny_config), "--output", str(run_dir), "--set", "train.steps=3"]) == 2
    assert "first difference at train.steps" in capsys.readouterr().err
    assert (run_dir / "config.yaml").read_text() == before


def test_set_needs_key_value():
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config("experiments/quickstart.yaml", ["train.steps"])


def test_dry_run_builds_everything_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "never"
    assert launch(["experiments/ijepa.yaml", "--dry-run", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "vit_huge_patch14_224" in printed and "# parameters" in printed and "token grid: 16x16" in printed
    assert "#   encoder: 630,434,560" in printed  # ViT-H/14 with I-JEPA's 16x16 positions and no head
    assert not out.exists()


def test_a_checking_build_has_the_real_builds_shapes_but_no_memory(tiny_config):
    """What the dry run and a submission build: the same modules on torch's meta device."""
    loaded = load_config(tiny_config)
    real, checked = build_experiment(loaded), build_experiment(loaded, meta=True)
    assert checked.parameter_counts() == real.parameter_counts()
    shapes = {n: p.shape for n, p in real.target.named_parameters()}
    assert {n: p.shape for n, p in checked.target.named_parameters()} == shapes
    assert all(p.is_meta for p in checked.target.parameters())


def test_a_plugin_reading_values_while_it_builds_still_dry_runs(tiny_config, write, capsys):
    plugin = write("reads.py", '''
        import torch
        from jepa_core import hookimpl
        from jepa_core.plugins.jepa.predictors import ViTPredictor

        class ReadsValues(ViTPredictor):
            def __init__(self, *args):
                super().__init__(*args)
                self.scale = torch.ones(1).item()  # a meta tensor has no value to read

        @hookimpl
        def jepa_register_predictors(registry):
            registry.register("reads_values", ReadsValues)
    ''')
    assert launch([str(tiny_config), "--dry-run", "--set", f"plugins=[{plugin}]",
                   "--set", "predictor.name=reads_values"]) == 0
    assert "# parameters" in capsys.readouterr().out


def _image_folder(root):
    """root/{train,val}/{a,b}/*.png: 16 small images per split."""
    for split in ("train", "val"):
        for c, name in enumerate("ab"):
            (root / split / name).mkdir(parents=True)
            for k in range(8):
                Image.new("RGB", (40, 36), (120 * c, 20 * k, 90)).save(root / split / name / f"{k}.png")
    return root


def test_a_derived_yaml_switching_the_dataset_drops_the_old_datasets_params(write, tiny_config, tmp_path, capsys):
    root = _image_folder(tmp_path / "images")
    derived = write("mine.yaml", f"""
        base: {tiny_config}
        data:
          dataset: {{name: imagefolder, root: {root}}}
    """)
    run_dir = tmp_path / "run"
    assert launch([str(derived), "--output", str(run_dir), "--set", "train.steps=2"]) == 0, capsys.readouterr().err
    resolved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert resolved["data"]["dataset"] == {"name": "imagefolder", "root": str(root)}  # no shapes size/train_size
    assert resolved["data"]["image_size"] == 48  # the rest of the base still merges


@pytest.mark.parametrize("sets", [
    ["data.dataset.name=imagefolder", "data.dataset.root=/x"],
    ["data.dataset.root=/x", "data.dataset.name=imagefolder"],
])
def test_set_renaming_a_component_keeps_only_params_set_beside_it(tiny_config, sets):
    cfg = load_config(tiny_config, sets).config
    assert (cfg.data.dataset.name, cfg.data.dataset.params) == ("imagefolder", {"root": "/x"})


def test_params_still_merge_when_the_component_keeps_its_name(tiny_config):
    cfg = load_config(tiny_config, ["data.dataset.size=32", "views.masking.name=multiblock"]).config
    assert cfg.data.dataset.params == {"size": 32, "train_size": 256, "val_size": 64}
    assert cfg.views.masking.params == {"min_keep": 4}


@pytest.mark.parametrize("path", sorted(str(p) for p in Path("experiments").rglob("*.yaml")))
def test_every_shipped_experiment_loads(path, tmp_path):
    """A renamed or misspelt config key must not leave a shipped file behind (sweeps: every member)."""
    members = expand(path, tmp_path) if is_sweep(path) else [load_config(path)]
    assert members
