"""The experiment config as an attrs tree: every key a YAML file may hold.

Sections are strict: an unknown key is an error, every value has a type and
ranges are checked by validators. Components are ``{name: ..., **params}``
mappings (:class:`Component`); their params are validated by the component's
own config class when the experiment is built.
"""

from __future__ import annotations

import re
from typing import Any, Optional, Union

import attrs

from jepa_core.registries.validators import in_range, interval, non_negative, one_of, positive, positive_int, probability


@attrs.define
class Component:
    """A registered component chosen by ``name``, with its parameters."""

    name: str
    params: dict[str, Any] = attrs.field(factory=dict)

    def to_yaml(self) -> dict[str, Any]:
        return {"name": self.name, **self.params}


def _component(name: str, **params: Any):
    return attrs.field(factory=lambda: Component(name, dict(params)))


@attrs.define
class DataConfig:
    dataset: Component = _component("shapes")
    image_size: int = attrs.field(default=224, validator=positive_int)
    #: images per process and step
    batch_size: int = attrs.field(default=16, validator=positive_int)
    num_workers: int = attrs.field(default=2, validator=non_negative)
    crop_scale: tuple[float, float] = attrs.field(default=(0.3, 1.0), validator=interval(0.0, 1.0))
    flip_p: float = attrs.field(default=0.0, validator=probability)


@attrs.define
class EncoderConfig:
    #: any timm Vision Transformer, e.g. vit_tiny_patch16_224, vit_huge_patch14_224
    name: str = "vit_tiny_patch16_224"
    drop_path_rate: float = attrs.field(default=0.0, validator=in_range(0.0, 1.0))
    #: override the named model's depth / patch size (small CPU runs)
    depth: Optional[int] = attrs.field(default=None, validator=attrs.validators.optional(positive_int))
    patch_size: Optional[int] = attrs.field(default=None, validator=attrs.validators.optional(positive_int))
    #: a video encoder (V-JEPA) over clips of this many frames; unset: an image encoder,
    #: which encodes a clip's frames one by one (docs/video.md)
    frames: Optional[int] = attrs.field(default=None, validator=attrs.validators.optional(positive_int))
    #: a run directory whose (target) encoder weights this run starts from, e.g. a V-JEPA run under
    #: an action-conditioned predictor (docs/planning.md); the architectures must match
    init: Optional[str] = None
    #: frames per tubelet of the video encoder (its Conv3d's temporal kernel and stride)
    tubelet: int = attrs.field(default=2, validator=positive_int)
    #: the video encoder's 3-D sin-cos split: equal widths for time, rows and columns (V-JEPA's
    #: released models); false: half for time, a quarter per axis (V-JEPA's code default)
    uniform_power: bool = True
    #: V-JEPA 2's 3-D rotary positions: no added pos_embed, every block's attention rotates queries and
    #: keys by the (time, row, col) of the tokens present (an image is one frame); import-vjepa of V-JEPA 2
    rope: bool = False
    #: override the named model's attention heads (V-JEPA 2's ViT-g: 22 heads of 64; timm's vit_giant has 16)
    num_heads: Optional[int] = attrs.field(default=None, validator=attrs.validators.optional(positive_int))

    @property
    def patch(self) -> Optional[int]:
        """The patch side: ``patch_size``, else the timm name's (vit_tiny_patch16_224: 16); None if unnamed."""
        named = re.search(r"patch(\d+)", self.name)
        return self.patch_size or (int(named[1]) if named else None)


@attrs.define
class ViewsConfig:
    #: ops applied to the target view y (photometric transformations)
    target: list[Component] = attrs.field(factory=list)
    #: ops applied to the source view x, after the shared crop and flip
    source: list[Component] = attrs.field(factory=list)
    #: a mask sampler, or a list of them: every step trains on each (V-JEPA's pair), with its own mask token
    masking: Union[Component, list[Component]] = _component("multiblock")


@attrs.define
class OptimConfig:
    lr: float = attrs.field(default=1e-3, validator=positive)
    start_lr: float = attrs.field(default=2e-4, validator=non_negative)
    final_lr: float = attrs.field(default=1e-6, validator=non_negative)
    warmup_epochs: float = attrs.field(default=40.0, validator=non_negative)
    #: overrides warmup_epochs when set (tiny runs)
    warmup_steps: Optional[int] = attrs.field(default=None)
    weight_decay: float = attrs.field(default=0.04, validator=non_negative)
    final_weight_decay: float = attrs.field(default=0.4, validator=non_negative)
    betas: tuple[float, float] = attrs.field(default=(0.9, 0.999), validator=interval(0.0, 1.0))
    eps: float = attrs.field(default=1e-8, validator=positive)
    #: clip the global gradient norm to this value (null: no clipping)
    clip_grad: Optional[float] = attrs.field(default=None)

    @warmup_steps.validator
    def _warmup_steps(self, attribute, value):
        if value is not None and (isinstance(value, bool) or value < 0):
            raise ValueError(f"'warmup_steps' must be >= 0 or null, got {value!r}", attribute)

    @clip_grad.validator
    def _clip(self, attribute, value):
        if value is not None and value <= 0:
            raise ValueError(f"'clip_grad' must be > 0 or null, got {value!r}", attribute)


@attrs.define
class TrainConfig:
    epochs: int = attrs.field(default=300, validator=positive_int)
    #: total optimizer steps; overrides epochs when set
    steps: Optional[int] = attrs.field(default=None)
    seed: int = 0
    log_every: int = attrs.field(default=10, validator=positive_int)
    checkpoint_every: int = attrs.field(default=1000, validator=positive_int)
    #: auto: bf16 autocast on CUDA, and on a CPU where bf16 matmul measures faster; else fp32
    precision: str = attrs.field(default="auto", validator=one_of("auto", "fp32", "bf16"))
    device: str = attrs.field(default="auto", validator=one_of("auto", "cpu", "cuda"))
    compile: bool = False

    @steps.validator
    def _steps(self, attribute, value):
        if value is not None and (isinstance(value, bool) or value < 1):
            raise ValueError(f"'steps' must be an integer >= 1 or null, got {value!r}", attribute)


@attrs.define
class HealthConfig:
    """Training-health monitors on a fixed held-out batch (docs/health.md)."""

    #: checks run at the log steps that are multiples of this; null: every log step; 0: monitors off
    every: Optional[int] = attrs.field(default=None)
    #: held-out images (the first of the val split, centre-cropped)
    n_images: int = attrs.field(default=32, validator=positive_int)
    #: collapse alarm when RankMe of the target encoder's pooled embeddings falls below this
    rankme_min: float = attrs.field(default=2.0, validator=non_negative)
    #: collapse alarm when feature_std * sqrt(D) falls below this (0 at collapse, ~1 isotropic)
    feature_std_min: float = attrs.field(default=0.05, validator=non_negative)
    #: online k-NN probe at the checks whose step is a multiple of this (0: off); needs labels
    probe_every: int = attrs.field(default=0, validator=non_negative)
    #: the label the probe predicts: null for the dataset's main label, or a named task (shapes: colour)
    probe_task: Optional[str] = None
    probe_train: int = attrs.field(default=512, validator=positive_int)
    probe_val: int = attrs.field(default=256, validator=positive_int)
    probe_k: int = attrs.field(default=20, validator=positive_int)

    @every.validator
    def _every(self, attribute, value):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise ValueError(f"'every' must be an integer >= 0 or null, got {value!r}", attribute)


@attrs.define
class SlurmConfig:
    partition: Optional[str] = None
    account: Optional[str] = None
    qos: Optional[str] = None
    nodes: int = attrs.field(default=1, validator=positive_int)
    gpus_per_node: int = attrs.field(default=0, validator=non_negative)
    tasks_per_node: int = attrs.field(default=1, validator=positive_int)
    cpus_per_task: int = attrs.field(default=2, validator=positive_int)
    mem_gb: Optional[float] = None
    timeout_min: int = attrs.field(default=60, validator=positive_int)
    constraint: Optional[str] = None
    exclude: Optional[str] = None
    array_parallelism: int = attrs.field(default=64, validator=positive_int)
    #: how many times a job may be requeued after preemption or timeout
    max_num_timeout: int = attrs.field(default=3, validator=non_negative)
    #: shell lines run before the job (module load, conda activate, ...)
    setup: list[str] = attrs.field(factory=list)
    #: extra #SBATCH parameters, e.g. {mail_type: END}
    additional_parameters: dict[str, Any] = attrs.field(factory=dict)


@attrs.define
class ExperimentConfig:
    """The whole experiment; ``base:`` and ``--set`` are resolved before this."""

    name: str = "experiment"
    #: extra plugins: module paths or .py files (relative to the YAML file)
    plugins: list[str] = attrs.field(factory=list)
    data: DataConfig = attrs.field(factory=DataConfig)
    encoder: EncoderConfig = attrs.field(factory=EncoderConfig)
    views: ViewsConfig = attrs.field(factory=ViewsConfig)
    conditioning: Component = _component("none")
    predictor: Component = _component("vit")
    target: Component = _component("ema")
    optim: OptimConfig = attrs.field(factory=OptimConfig)
    train: TrainConfig = attrs.field(factory=TrainConfig)
    health: HealthConfig = attrs.field(factory=HealthConfig)
    #: evaluators run at the end of training and by jepa_core.evaluate
    eval: list[Component] = attrs.field(factory=list)
    #: also evaluate the same architecture at random initialisation after training
    #: (eval_random_init.json) and print both side by side: what training added
    eval_random_init: bool = False
    #: runtime-hook loggers, e.g. [{name: csv}]
    loggers: list[Component] = attrs.field(factory=list)
    slurm: SlurmConfig = attrs.field(factory=SlurmConfig)
