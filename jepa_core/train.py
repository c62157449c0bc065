"""The training loop: small and readable, like the official I-JEPA one, but resumable.

Everything that changes during training (step, modules, optimizer, RNG) is
in the checkpoint, and everything else is a pure function of ``(seed, step)``:
the schedules, the batch order, the crops, the photometric parameters and the
masks. A resumed run therefore repeats an uninterrupted one step for step.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from jepa_core import checkpoint
from jepa_core.attention import training_attention
from jepa_core.data import build_loader, mix_seed
from jepa_core.distributed import DistInfo, Preempted
from jepa_core.errors import RunError
from jepa_core.experiment import Experiment, at
from jepa_core.health import HealthMonitor, alarms, prediction_cosine
from jepa_core.precision import Precision, choose
from jepa_core.registries.predictors import ActionConditionedPredictor, autoregress
from jepa_core.rundir import RunDir, write_json, write_text
from jepa_core.schedules import Schedule, total_steps, warmup_steps


class NonFiniteLoss(RunError):
    """The loss became NaN or infinite; the run stopped without saving over the last good checkpoint."""


# Attention kernels for the training step: every backend but cuDNN's. The masks give the
# encoder and predictor new sequence lengths almost every step, and cuDNN attention builds a
# plan per new shape: on an H200 (torch 2.11) an I-JEPA ViT-B/16 step at batch 128 took 181 ms
# with it against 64 ms with flash attention, though a shape seen before ran in 58 ms
# (docs/performance.md, "On a GPU"). No other device has a cuDNN backend.
TRAIN_ATTENTION = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
    return torch.device(name)


def param_groups(modules: list[nn.Module]) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on matrices only, never on biases and 1-D parameters."""
    decay, no_decay, seen = [], [], set()
    for module in modules:
        for name, param in module.named_parameters():
            if param.requires_grad and id(param) not in seen:  # a module may share another's parameters
                seen.add(id(param))
                (no_decay if param.ndim <= 1 or name.endswith(".bias") else decay).append(param)
    return [{"params": decay, "wd_scheduled": True}, {"params": no_decay, "weight_decay": 0.0}]


class Trainer:
    """One training run of an :class:`Experiment` into ``run_dir``."""

    def __init__(self, exp: Experiment, run_dir: str | Path, dist: DistInfo | None = None):
        self.exp = exp
        self.cfg = exp.config
        self.run = RunDir(run_dir)
        self.dist = dist or DistInfo()
        self.device = pick_device(self.cfg.train.device) if not self.dist.device else self.dist.device
        self.precision = self._choose_precision()
        self.dtype = self.precision.dtype
        for module in exp.modules().values():
            module.to(self.device)
        self.encoder = self.dist.wrap(exp.encoder)
        self.predictor = self.dist.wrap(exp.predictor)
        self.optimizer = torch.optim.AdamW(  # fused: one kernel for all parameters, CPU and CUDA
            param_groups(list(exp.modules().values())), lr=0.0, betas=self.cfg.optim.betas,
            eps=self.cfg.optim.eps, fused=True,
        )
        self.params = [p for group in self.optimizer.param_groups for p in group["params"]]
        self._saved_step: int | None = None
        health = self.cfg.health
        self.health_every = self.cfg.train.log_every if health.every is None else health.every
        self.health = HealthMonitor(exp, self.device, self.dtype) if self.health_every and self.dist.is_main else None
        self._alarmed = False
        self._ema = [(list(copy.parameters()), list(online.parameters()))
                     for online, copy in exp.target.momentum_pairs]
        if self.cfg.train.compile:
            self._compile_blocks()

    def _choose_precision(self) -> Precision:
        """``train.precision``, with ``auto`` measured here; every rank trains in the same one.

        A resumed ``auto`` run keeps what its first launch measured (``precision.json``):
        a machine near the threshold could otherwise measure the other way and the
        resumed run would not repeat the uninterrupted one.
        """
        recorded = self.run.precision
        if self.cfg.train.precision == "auto" and recorded.exists() and self.run.latest_checkpoint() is not None:
            first = Precision(**json.loads(recorded.read_text()))
            if first.requested == "auto":
                kept = "kept from the run's first launch: "
                return attrs.evolve(first, reason=first.reason if first.reason.startswith(kept) else kept + first.reason)
        tokens = self.cfg.data.batch_size * self.exp.encoder.num_tokens
        choice = choose(self.cfg.train.precision, self.device, tokens, self.exp.encoder.embed_dim)
        if self.dist.any(choice.name != "bf16") and choice.name == "bf16":
            choice = attrs.evolve(choice, name="fp32", reason=f"{choice.reason}; another rank measured otherwise")
        return choice

    # ------------------------------------------------------------------ state
    def state_dict(self, step: int) -> dict[str, Any]:
        state = {name: module.state_dict() for name, module in self.exp.modules().items()}
        state.update(step=step, optimizer=self.optimizer.state_dict(), torch_rng=torch.get_rng_state())
        if torch.cuda.is_available():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        return state

    def resume(self) -> int:
        path = self.run.latest_checkpoint()
        if path is None:
            return 0
        state = checkpoint.load(path)
        checkpoint.load_modules(self.exp.modules(), state, str(path))
        self._saved_step = int(state["step"])
        if "optimizer" not in state:  # weights only (jepa_core.interop import): train on from them
            return int(state["step"])
        self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        return int(state["step"])

    def _truncate_metrics(self, step: int) -> None:
        """Drop metrics logged after the checkpoint we resume from (they will be redone) and any torn line."""
        path = self.run.metrics
        if not path.exists():
            return
        keep = [line for line in path.read_text().splitlines() if (s := _step_of(line)) is not None and s <= step]
        write_text(path, "".join(line + "\n" for line in keep))

    def _log(self, metrics: dict[str, float]) -> None:
        """Append one line with a single ``write``: a killed process leaves whole lines."""
        fd = os.open(self.run.metrics, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (json.dumps(metrics) + "\n").encode())
        finally:
            os.close(fd)

    def _check_finite(self, first_bad: torch.Tensor) -> None:
        """Stop, saving nothing, once any rank's loss has been NaN or infinite (one sync)."""
        bad = int(first_bad.item())
        if not self.dist.any(bad > 0):
            return
        where = f"at step {bad}" if bad else "on another rank"
        if self._saved_step is None:
            kept = "no checkpoint was written before it"
        else:
            kept = f"the last good checkpoint, {self.run.checkpoint} (step {self._saved_step}), is untouched"
        raise NonFiniteLoss(f"loss became non-finite {where}; the run stopped and {kept}; "
                            "lower optim.lr or set optim.clip_grad")

    # ------------------------------------------------------------------- step
    def _forward_loss(self, views, steps: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        if isinstance(self.exp.predictor, ActionConditionedPredictor):
            return self._world_model_loss(views.source, steps["actions"], steps.get("states"))
        loss, prediction, target = self._predict_loss(views.source, views.target, views.masks, views.action)
        self._fit = (prediction.detach(), target.detach())  # the health monitors' pred_target_cos
        if self.exp.target.symmetric:
            loss = loss + self._predict_loss(views.target, views.source, views.masks, None)[0]
        for index, masks in enumerate(views.more_masks, start=1):  # V-JEPA: the mean over mask samplers
            loss = loss + self._predict_loss(views.source, views.target, masks, views.action, index)[0]
        return loss / (1 + len(views.more_masks))

    def _predict_loss(self, source, target_view, masks, action,
                      mask_index: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The loss of one mask sampler's masks; ``mask_index`` > 0 picks the predictor's mask token of a later one."""
        extra = {"mask_index": mask_index} if mask_index else {}
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
            context = self.encoder(source, masks.context)
            prediction = self.predictor(context, masks.context, masks.targets, action, **extra)
            target = self.exp.target(target_view, masks.targets)
        prediction, target = prediction.float(), target.float()
        return self.exp.target.loss(prediction, target), prediction, target

    def _world_model_loss(self, clips: torch.Tensor, actions: torch.Tensor,
                          states: torch.Tensor | None) -> torch.Tensor:
        """V-JEPA 2-AC: teacher forcing over every step plus a rollout of ``auto_steps`` from the first frame.

        The predictor reads the target's (frozen, frame-wise) features of every
        frame and predicts each next frame's.
        """
        batch, frames = clips.shape[:2]
        auto = min(self.exp.predictor.auto_steps, frames - 1)
        idx = torch.arange(frames * self.exp.encoder.num_tokens, device=clips.device).expand(batch, 1, -1)
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
            h = self.exp.target(clips, idx).view(batch, frames, self.exp.encoder.num_tokens, -1)
            past_states = None if states is None else states[:, :-1]
            teacher = self.predictor(h[:, :-1], actions, past_states).float()
            rolled = autoregress(self.predictor, h[:, :1], actions, states, auto).float()
        h = h.float()
        self._fit = (teacher.detach(), h[:, 1:])
        return self.exp.target.loss(teacher, h[:, 1:]) + self.exp.target.loss(rolled, h[:, 1:auto + 1])

    def _compile_blocks(self) -> None:
        """``train.compile``: compile every transformer block, with dynamic sequence lengths.

        The multi-block masks change the context and target lengths every step, so
        compiling the whole step with static shapes recompiles each step (and dynamo
        falls back to eager after 8), while the whole step with dynamic shapes hits an
        inductor stride assertion in the backward (torch 2.14, the predictor's cat).
        Blocks compile once per width with symbolic lengths.
        """
        from timm.models.vision_transformer import Block

        for module in self.exp.modules().values():
            for block in module.modules():
                if isinstance(block, Block):
                    block.compile(dynamic=True)

    @torch.no_grad()
    def _momentum_update(self, step: int, total: int) -> None:
        m = self.exp.target.momentum(step, total)
        for copies, online in self._ema:
            torch._foreach_lerp_(copies, online, 1.0 - m)

    def train_step(self, images: torch.Tensor, step: int, total: int, lr: float, wd: float,
                   steps: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """One optimizer step on uint8 ``images`` or clips (on the device); returns the loss without syncing.

        ``steps``: a clip batch's per-step ``actions`` and per-frame ``states``, when its data has them.
        """
        for group in self.optimizer.param_groups:
            group["lr"] = lr
            if group.get("wd_scheduled"):
                group["weight_decay"] = wd
        generator = torch.Generator().manual_seed(mix_seed(self.cfg.train.seed, self.dist.rank, step))
        views = self.exp.views(images, generator)
        with sdpa_kernel(TRAIN_ATTENTION), training_attention(self.device, self.dtype):
            loss = self._forward_loss(views, steps)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.optim.clip_grad is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.cfg.optim.clip_grad, foreach=True)
        self.optimizer.step()
        self._momentum_update(step, total)
        return loss

    def _check_health(self, step: int) -> dict[str, float]:
        """Measure the monitors; warn and call ``jepa_on_collapse`` on going from healthy to alarmed."""
        health = {**self.health.measure(step), "pred_target_cos": prediction_cosine(*self._fit)}
        reasons = alarms(health, self.cfg.health)
        if reasons and not self._alarmed:
            print(f"warning: collapse alarm at step {step}: {'; '.join(reasons)} (docs/health.md)",
                  file=sys.stderr, flush=True)
            self.exp.pm.hook.jepa_on_collapse(step=step, health=health, reasons=reasons)
        self._alarmed = bool(reasons)
        return health

    def _save(self, step: int) -> None:
        if self.dist.is_main:
            path = checkpoint.save(self.run.path, self.state_dict(step))
            self._saved_step = step
            self.exp.pm.hook.jepa_on_checkpoint(step=step, path=str(path))

    # -------------------------------------------------------------------- run
    def fit(self) -> dict[str, float]:
        cfg, exp = self.cfg, self.exp
        dataset = exp.dataset("train")
        start = self.resume()
        with at(exp.loaded, "data.batch_size"):  # a split too small for one batch: one line, before any step
            loader, sampler = build_loader(
                dataset, image_size=cfg.data.image_size, batch_size=cfg.data.batch_size,
                crop_scale=cfg.data.crop_scale, flip_p=cfg.data.flip_p, seed=cfg.train.seed,
                num_workers=cfg.data.num_workers, rank=self.dist.rank, world_size=self.dist.world_size,
                pin_memory=self.device.type == "cuda", start_step=start,
            )
        total = total_steps(cfg, sampler.steps_per_epoch)
        schedule = Schedule(total, warmup_steps(cfg, sampler.steps_per_epoch, total), cfg.optim)
        if self.dist.is_main:
            self._truncate_metrics(start)
            write_json(self.run.precision, attrs.asdict(self.precision))
            print(self.precision.summary(), flush=True)
            exp.pm.hook.jepa_run_start(run_dir=str(self.run.path), config=cfg, start_step=start, total_steps=total)
        metrics: dict[str, float] = {}
        step = start
        bar = _progress(start, total) if self.dist.is_main else None
        tick, images_since = time.perf_counter(), 0
        # The first step whose loss was not finite (0: none), kept on the device so that
        # steps do not sync; read every step on a lone CPU process (free there), else at
        # log and checkpoint steps, always before anything is written.
        first_bad = torch.zeros((), dtype=torch.long, device=self.device)
        check_every_step = self.device.type == "cpu" and not self.dist.active
        for batch in _batches(loader):
            if step >= total:
                break
            lr, wd = schedule.lr(step), schedule.weight_decay(step)
            images = batch["image"].to(self.device, non_blocking=True)
            steps = {k: batch[k].to(self.device, non_blocking=True) for k in ("actions", "states") if k in batch}
            loss = self.train_step(images, step, total, lr, wd, steps)
            step += 1
            first_bad = torch.where((first_bad == 0) & ~torch.isfinite(loss.detach()), step, first_bad)
            images_since += images.shape[0] * self.dist.world_size
            log_now = step % cfg.train.log_every == 0 or step == total
            save_now = step % cfg.train.checkpoint_every == 0 or step == total
            if check_every_step or log_now or save_now:
                self._check_finite(first_bad)
            if log_now:
                now = time.perf_counter()
                metrics = {"step": step, "loss": self.dist.mean(loss.detach()).item(), "lr": lr, "wd": wd,
                           "momentum": exp.target.momentum(step, total),
                           "images_per_s": images_since / max(now - tick, 1e-9)}
                if self.health is not None and step % self.health_every == 0:  # at log steps only
                    metrics.update(self._check_health(step))
                tick, images_since = time.perf_counter(), 0  # images/s leaves the check out
                if self.dist.is_main:
                    self._log(metrics)
                    exp.pm.hook.jepa_after_step(step=step, metrics=metrics)
                    if bar is not None:
                        bar.set_postfix(loss=f"{metrics['loss']:.4f}", lr=f"{lr:.2e}",
                                        img_s=f"{metrics['images_per_s']:.1f}")
            if bar is not None:
                bar.update(1)
            if self.dist.should_stop(step, total):  # preemption / time-limit signal (jepa_core.slurm)
                self._check_finite(first_bad)
                self._save(step)
                raise Preempted(step)
            if save_now:
                self._save(step)
        if bar is not None:
            bar.close()
        if self.dist.is_main:
            exp.pm.hook.jepa_run_end(run_dir=str(self.run.path), step=step, metrics=metrics)
        return metrics


def _step_of(line: str) -> int | None:
    """The step of a metrics line, or None for a torn or foreign one."""
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None


def _batches(loader):
    """Iterate ``loader``, turning a worker that died (OOM killer, signal) into a one-line error."""
    try:
        yield from loader
    except RuntimeError as exc:
        if not str(exc).startswith("DataLoader worker"):
            raise
        raise RunError(f"{str(exc).splitlines()[0]}: killed by the OOM killer or a signal? "
                       "lower data.num_workers or data.batch_size, then relaunch to resume") from None


def _progress(start: int, total: int):
    """A tqdm bar only when a person is watching (a terminal), none in logs."""
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=start, unit="step", dynamic_ncols=True)
