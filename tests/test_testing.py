"""jepa_core.testing itself: each check fails a component that breaks its contract, naming the contract and the case.

Every broken component below is a correct one with one contract broken, so
the failure shows which check catches what. docs/writing-a-plugin.md's plugin
passes, through the test file the page shows.
"""

from __future__ import annotations

import copy
import runpy
import sys
import textwrap
from pathlib import Path

import attrs
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers import saved_files
from jepa_core.api import Conditioner, Masking, Masks, Predictor, Target, Transformation, check_split, gather_tokens
from jepa_core.testing import (ContractError, check_conditioner, check_dataset, check_evaluator, check_logger,
                               check_masking, check_predictor, check_target, check_transformation, resumed_run)

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


def cases(*rows: tuple) -> list:
    """Test parameters named after the component each row checks."""
    return [pytest.param(*row, id=next(x.__name__ for x in row if isinstance(x, type))) for row in rows]


# --------------------------------------------------------------------------- transformations


class Brighten(Transformation):
    """Multiply by a factor in [1, 2) drawn per image."""

    action_dim, encoding = 1, "difference"

    def identity(self, batch_size):
        return {"factor": torch.ones(batch_size)}

    def sample_applied(self, batch_size, generator):
        return {"factor": 1 + torch.rand(batch_size, generator=generator)}

    def apply(self, images, params):
        factor = params["factor"].to(images.device, images.dtype).view(-1, 1, 1, 1)
        return torch.where(params["applied"].to(images.device).view(-1, 1, 1, 1), images * factor, images).clamp(0, 1)

    def action_params(self, params):
        return params["factor"].view(-1, 1)


class GlobalRng(Brighten):
    def sample_applied(self, batch_size, generator):
        return {"factor": 1 + torch.rand(batch_size)}  # the global RNG: not reproducible from (seed, step)


class BatchMean(Brighten):
    def apply(self, images, params):  # brightens towards the batch's mean: another batch, another image
        out = super().apply(images, params)
        return torch.where(params["applied"].view(-1, 1, 1, 1), out * images.mean() / out.mean(), images)


class IgnoresApplied(Brighten):
    def sample(self, batch_size, generator):
        return {"factor": 1 + torch.rand(batch_size, generator=generator), "applied": torch.arange(batch_size) % 2 == 0}

    def apply(self, images, params):
        return (images * params["factor"].view(-1, 1, 1, 1)).clamp(0, 1)


class InPlace(Brighten):
    def apply(self, images, params):
        return images.mul_(torch.where(params["applied"], params["factor"], 1.0).view(-1, 1, 1, 1)).clamp_(0, 1)


class WideAction(Brighten):
    action_dim = 2


class ActionBetweenEqual(Brighten):
    def encode(self, source, target):
        return super().encode(source, target) + 1.0


class Float32Only(Brighten):
    def apply(self, images, params):
        return super().apply(images.float(), params)


class LosesPrecision(Brighten):
    def apply(self, images, params):  # near 16, bfloat16 steps by 1/8: a pixel moves by up to 1/16
        out = super().apply(images, params)
        return torch.where(params["applied"].view(-1, 1, 1, 1), out + 16 - 16, images)


@pytest.mark.parametrize("op, message", cases(
    (Brighten, None),
    (GlobalRng, r"transformation 'op': sample\(\) draws from a global random generator"),
    (BatchMean, r"transformation 'op': batch apply differs from per-image apply at image \d+ \(max abs diff"),
    (IgnoresApplied, r"image 1 has applied false but apply changed it"),
    (InPlace, "changed its input images in place"),
    (WideAction, r"encode\(\) returned \(12, 1\) .* the declared action_dim 2"),
    (ActionBetweenEqual, "the action between equal sampled source and target parameters is not zero"),
    (Float32Only, r"apply with images in cpu bfloat16 returned \(12, 3, 32, 32\) torch.float32"),
    (LosesPrecision, r"apply on cpu bfloat16 differs from cpu float32 at image 0 \(max abs diff 0.0\d+, allowed 0.03"),
))
def test_check_transformation(op, message):
    if message is None:
        check_transformation("op", op)
    else:
        with pytest.raises(ContractError, match=message):
            check_transformation("op", op)


# --------------------------------------------------------------------------- masking


class Halves(Masking):
    """Context: half of a random permutation of the tokens; one target block: the other half."""

    @attrs.frozen
    class Config:
        allow_overlap: bool = False

    def order(self, batch_size, generator):
        n = self.grid[0] * self.grid[1]
        return torch.stack([torch.randperm(n, generator=generator) for _ in range(batch_size)]), n // 2

    def sample(self, batch_size, generator):
        order, half = self.order(batch_size, generator)
        return Masks(order[:, :half], order[:, None, half:])


class GlobalMasks(Halves):
    def order(self, batch_size, generator):
        return super().order(batch_size, None)


class OutOfRange(Halves):
    def sample(self, batch_size, generator):
        masks = super().sample(batch_size, generator)
        return Masks(masks.context + 1, masks.targets)


class Overlapping(Halves):
    def sample(self, batch_size, generator):
        masks = super().sample(batch_size, generator)
        return Masks(torch.cat([masks.context, masks.targets[:, 0, :1]], dim=1), masks.targets)


@pytest.mark.parametrize("masking, message", cases(
    (Halves, None),
    (GlobalMasks, r"masking 'm': sample\(\) draws from a global random generator"),
    (OutOfRange, r"masking 'm': context index 210 at image \d+ is outside a 14x15 grid"),
    (Overlapping, r"context and targets share a token at image 0 although allow_overlap is off"),
))
def test_check_masking(masking, message):
    if message is None:
        check_masking("m", masking)
    else:
        with pytest.raises(ContractError, match=message):
            check_masking("m", masking)


# --------------------------------------------------------------------------- conditioners, predictors, targets


class SaysButIgnores(Conditioner):
    def __init__(self, config, action_dim, width):
        super().__init__(config, action_dim, width)
        self.bias = nn.Parameter(torch.zeros(width))

    def mask_tokens(self, tokens, action):  # overriding says "I use the action"; it never reads it
        return tokens + self.bias


class Unused(Conditioner):
    def __init__(self, config, action_dim, width):
        super().__init__(config, action_dim, width)
        self.project, self.unused = nn.Linear(action_dim, width), nn.Linear(width, width)

    def mask_tokens(self, tokens, action):
        return tokens + self.project(action)[:, None]


class Pooled(Predictor):
    """Pooled context plus a learned token per target position, conditioned through its conditioner."""

    def __init__(self, config, embed_dim, grid, conditioner):
        super().__init__()
        self.conditioner = conditioner
        self.mix = nn.Linear(embed_dim, embed_dim)
        self.positions = nn.Parameter(torch.randn(grid[0] * grid[1], embed_dim))

    def context(self, context):
        return context

    def forward(self, context, context_idx, target_idx, action):
        batch, blocks, n = target_idx.shape
        tokens = self.positions[target_idx].flatten(0, 1)
        if action is not None:
            action = action.repeat_interleave(blocks, dim=0)
            tokens = self.conditioner.mask_tokens(tokens, action)
            extra = self.conditioner.tokens(action)
            tokens = tokens if extra is None else tokens + extra.mean(dim=1, keepdim=True)
        pooled = self.mix(self.context(context).mean(dim=1)).repeat_interleave(blocks, dim=0)
        return (tokens + pooled[:, None]).view(batch, blocks, n, -1)


class IgnoresConditioner(Pooled):
    def forward(self, context, context_idx, target_idx, action):
        return super().forward(context, context_idx, target_idx, None)


class ReadsTheAction(Pooled):
    def forward(self, context, context_idx, target_idx, action):
        return super().forward(context, context_idx, target_idx, action) + action.sum()


class DetachesContext(Pooled):
    def context(self, context):
        return context.detach()


class Flat(Pooled):
    def forward(self, context, context_idx, target_idx, action):
        return super().forward(context, context_idx, target_idx, action).flatten(1, 2)[:, None]


class FrozenCopy(Target):
    """The features of a frozen copy of the encoder, updated by EMA."""

    def __init__(self, config, encoder, predictor):
        super().__init__()
        self.copy = copy.deepcopy(encoder).requires_grad_(False)
        self._online = [encoder]

    def forward(self, images, target_idx):
        with torch.no_grad():
            return gather_tokens(self.copy(images), target_idx)

    def loss(self, prediction, target):
        return F.mse_loss(prediction, target)

    @property
    def momentum_pairs(self):
        return [(self._online[0], self.copy)]

    def momentum(self, step, total_steps):
        return 0.99


class Narrow(FrozenCopy):
    def forward(self, images, target_idx):
        return super().forward(images, target_idx)[..., :-1]


class TrainedCopy(FrozenCopy):
    def __init__(self, config, encoder, predictor):
        super().__init__(config, encoder, predictor)
        self.copy.requires_grad_(True)

    def forward(self, images, target_idx):
        return gather_tokens(self.copy(images), target_idx)


class Overshoots(FrozenCopy):
    def momentum(self, step, total_steps):
        return 1.0 + step / total_steps


@pytest.mark.parametrize("check, component, message", cases(
    (check_conditioner, SaysButIgnores, "conditioner 'c': overrides tokens.* but its output is the same for two "
                                        "different actions"),
    (check_conditioner, Unused, r"no finite gradient reaches trainable parameter\(s\) unused.weight, unused.bias"),
    (check_predictor, Pooled, None),
    (check_predictor, IgnoresConditioner, r"predictor 'c': its output ignores the action \(with a conditioner that "
                                          r"adds action tokens\)"),
    (check_predictor, ReadsTheAction, "its output depends on the action although its conditioner ignores it"),
    (check_predictor, DetachesContext, "no gradient reaches the context, so the encoder would not learn"),
    (check_predictor, Flat, r"predictor 'c': returned \(4, 1, 8, 32\) for target indices \(4, 2, 4\); the contract "
                            r"is \(4, 2, 4, D\), or \(4, 1, 1, D\) when it pools"),
    (check_target, FrozenCopy, None),
    (check_target, Narrow, r"target 'c': its features have shape \(4, 2, 3, 191\) .* the prediction \(4, 2, 3, 192\)"),
    (check_target, TrainedCopy, "momentum copy parameter .* is trainable"),
    (check_target, Overshoots, r"momentum\(step, 10\) at steps 0, 5, 10 gave \[1.0, 1.5, 2.0\]"),
))
def test_checks_of_modules(check, component, message):
    if message is None:
        check("c", component)
    else:
        with pytest.raises(ContractError, match=message):
            check("c", component)


# --------------------------------------------------------------------------- datasets


class Squares(torch.utils.data.Dataset):
    """Grey squares of 3 classes."""

    num_classes = 3

    def __init__(self, config, split):
        check_split(split)

    def __len__(self):
        return 6

    def __getitem__(self, index):
        return torch.full((3, 8, 8), 40 * index, dtype=torch.uint8), self.label(index)

    def label(self, index):
        return index % 3


class LabelTooLarge(Squares):
    def label(self, index):
        return index


class AnySplit(Squares):
    def __init__(self, config, split):
        pass


@pytest.mark.parametrize("dataset, message", cases(
    (Squares, None),
    (LabelTooLarge, r"dataset 'd': train\[5\]'s label 5 is not an integer in \[0, 3\)"),
    (AnySplit, "accepts split 'test'"),
))
def test_check_dataset(dataset, message):
    if message is None:
        check_dataset("d", dataset)
    else:
        with pytest.raises(ContractError, match=message):
            check_dataset("d", dataset)


# --------------------------------------------------------------------------- evaluators and loggers, on a run

RUN_PLUGIN = textwrap.dedent('''
    import itertools
    from pathlib import Path

    from jepa_core.api import Evaluator, hookimpl

    CALLS = itertools.count()


    class Calls(Evaluator):
        def evaluate(self, run):
            return {"value": float(next(CALLS))}  # how often it ran: another value every time


    class NotANumber(Evaluator):
        def evaluate(self, run):
            return {"value": float("nan")}


    class IntoTheWorkingDirectory(Evaluator):
        def evaluate(self, run):
            Path("plot.png").write_bytes(b"png")  # relative: lands wherever the command runs
            return {"value": 1.0}


    class LeavesATemporary(Evaluator):
        def evaluate(self, run):
            (run.run_dir / ".plot.png.tmp").write_bytes(b"png")
            return {"value": 1.0}


    class Nested(Evaluator):
        def evaluate(self, run):
            return {"top1": {"k1": 0.5}}


    class Appending:
        """Appends every step it is told about to a file, the ones a resume logs again included."""

        def __init__(self, config, run_dir):
            self.path = Path(run_dir) / "steps.txt"

        @hookimpl
        def jepa_after_step(self, step, metrics):
            with open(self.path, "a") as f:
                f.write(f"{step}\\n")


    @hookimpl
    def jepa_register_evaluators(registry):
        for cls in (Calls, NotANumber, IntoTheWorkingDirectory, LeavesATemporary, Nested):
            registry.register(cls.__name__.lower(), cls)


    @hookimpl
    def jepa_register_loggers(registry):
        registry.register("appending", Appending)
''')


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("broken")
    (root / "broken_plugin.py").write_text(RUN_PLUGIN)
    return resumed_run(root / "run", [{"name": "csv"}, {"name": "appending"}], plugins=[str(root / "broken_plugin.py")])


#: each broken evaluator of the plugin above, and the contract it breaks
BROKEN_EVALUATORS = {
    "calls": r"evaluator 'calls': is not deterministic: evaluated twice on the same run and seed, value changed",
    "notanumber": r"metric\(s\) value are not finite",
    "intotheworkingdirectory": r"wrote \['plot.png'\] into the working directory instead of the run directory",
    "leavesatemporary": r"left temporary file\(s\) \['.plot.png.tmp'\] in the run directory",
    "nested": "raised TypeError: float.* argument must be",
}


@pytest.mark.parametrize("name", BROKEN_EVALUATORS)
def test_check_evaluator(run, name):
    with pytest.raises(ContractError, match=BROKEN_EVALUATORS[name]):
        check_evaluator(run, name)


def test_check_logger(run):
    import csv

    with open(run / "metrics.csv", newline="") as f:
        check_logger(run, "csv", [int(row["step"]) for row in csv.DictReader(f)])  # csv truncates on resume
    steps = [int(line) for line in (run / "steps.txt").read_text().split()]
    assert steps == [1, 2, 3, 4, 5, 5, 6]
    with pytest.raises(ContractError, match="logger 'appending': step 5 arrived 2 times"):
        check_logger(run, "appending", steps)


# --------------------------------------------------------------------------- the documented example


def test_the_documented_plugin_passes_the_documented_check(tmp_path, monkeypatch):
    """docs/writing-a-plugin.md's plugin and the test file it shows for it, saved side by side and run."""
    saved = saved_files(ROOT / "docs" / "writing-a-plugin.md")
    tests = [name for name in saved if name.startswith("test_")]
    assert tests, "docs/writing-a-plugin.md shows no test file ('Save as `test_....py`')"
    for name, code in saved.items():
        (tmp_path / name).write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        for name in tests:
            module = runpy.run_path(str(tmp_path / name))
            checks = [f for key, f in module.items() if key.startswith("test_")]
            assert checks, f"{name} defines no test"
            for check in checks:
                check()
    finally:
        for name in saved:
            sys.modules.pop(Path(name).stem, None)
