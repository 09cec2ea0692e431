"""The training loop shared by supernet training and arch retraining (paper Sec. 5.1 recipe, Eq. 8 sampling).

One straight loop; what differs for the supernet is marked. Per step: set the Gumbel temperature from the schedule
and seed the supernet's sampling generator with ``seed + global_step`` (so every data-parallel rank samples the same
paths), mix up the batch, forward under bf16 autocast on GPU (channels_last), compute the loss (with hard
distillation when a teacher is given), backward, clip the weights' gradients, step the weights (timm AdamW, cosine
schedule stepped per update) and the architecture parameters (their own optimizer; on the same batch, or on a batch
of the held-out alpha split, and not during the alpha warm-up). Per epoch: validation top-1 (the supernet's max arch
after BN recalibration, see :mod:`._evaluate`), alpha entropy, temperature and images/s, then an atomic checkpoint
that holds everything needed to continue exactly (weights, alpha, optimizers, scheduler, step counters, every
rank's RNG states, config, space). After the last epoch the supernet's channels are sorted by importance
(function-preserving, with the optimizer state permuted alike) before the final checkpoint, so that narrower subnets
keep the most important channels.

Data parallel: the model, alpha included, is wrapped in ``DistributedDataParallel``, so alpha's gradients are
all-reduced and every rank ends with identical alpha. In hard mode the unsampled paths get no gradient, so DDP runs
with ``find_unused_parameters=True``.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from slimnas.errors import InputError

from ._callbacks import CallbackList, Result, TrainState
from ._checkpoint import capture_rng, epoch_dir_name, load_checkpoint, prune_checkpoints, restore_rng, save_checkpoint
from ._data import DataBundle
from ._dist import DistContext
from ._evaluate import Evaluator, count_correct
from ._loss import DistillationLoss, base_criterion
from ._schedule import alpha_entropy, gumbel_tau, scaled_lr

__all__ = ["Engine", "seed_all"]

log = logging.getLogger(__name__)

#: Called on every rank after each epoch with the metrics and (rank 0) the checkpoint folder; may return where the
#: checkpoint is stored for good (Ray Train: the run's storage).
Report = Callable[[dict[str, float], "Path | None"], "str | None"]


def seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


def _weight_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weights only (alpha has its own optimizer); no decay for biases, norms, layer scales, attention biases."""
    skip = model.no_weight_decay() if hasattr(model, "no_weight_decay") else set()
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if name.endswith(".alpha") or not param.requires_grad:
            continue
        (no_decay if param.ndim <= 1 or name in skip else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class Engine:
    """Builds the optimizers and schedule for ``model`` and runs the loop. See the module docstring."""

    def __init__(self, *, kind: str, cfg: Any, model: nn.Module, space: Any, arch: Any, data: DataBundle,
                 dist: DistContext, callbacks: CallbackList, checkpoint_dir: Path, report: Report | None = None,
                 teacher: nn.Module | None = None) -> None:
        from timm.optim import create_optimizer_v2
        from timm.scheduler import CosineLRScheduler, StepLRScheduler

        self.kind, self.cfg, self.space, self.arch, self.data, self.dist = kind, cfg, space, arch, data, dist
        self.callbacks, self.checkpoint_dir, self.report = callbacks, checkpoint_dir, report
        self.supernet = kind == "supernet"
        run, optim = cfg.run, cfg.optim
        self.device = dist.device
        on_gpu = self.device.type == "cuda"
        self.bf16 = run.precision == "bf16" or (run.precision == "auto" and on_gpu)
        self.channels_last = on_gpu if run.channels_last is None else run.channels_last
        self.model = model.to(self.device)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.steps_per_epoch = len(data.train)
        if run.max_steps_per_epoch:
            self.steps_per_epoch = min(self.steps_per_epoch, run.max_steps_per_epoch)
        self.total_steps = self.steps_per_epoch * run.epochs
        self.global_batch = cfg.data.batch_size * dist.world_size
        self.lr = scaled_lr(optim.lr, self.global_batch, optim.lr_ref_batch)
        self.optimizer = create_optimizer_v2(_weight_groups(self.model, optim.weight_decay), opt=optim.opt,
                                             lr=self.lr, weight_decay=optim.weight_decay)
        self.alpha_optimizer = None
        if self.supernet:
            a = cfg.alpha
            self.alpha_optimizer = create_optimizer_v2(self.model.arch_parameters(), opt=a.opt, lr=a.lr,
                                                       weight_decay=a.weight_decay, betas=tuple(a.betas))
        warmup = round(optim.warmup_epochs * self.steps_per_epoch)
        if optim.sched == "cosine":
            self.scheduler = CosineLRScheduler(self.optimizer, t_initial=self.total_steps, lr_min=optim.min_lr,
                                               warmup_t=warmup, warmup_lr_init=optim.warmup_lr, t_in_epochs=False)
        else:
            self.scheduler = StepLRScheduler(self.optimizer, decay_t=self.total_steps + 1, decay_rate=1.0,
                                             warmup_t=warmup, warmup_lr_init=optim.warmup_lr, t_in_epochs=False)
        self.criterion = DistillationLoss(base_criterion(data.augment, data.mixup is not None), teacher,
                                          cfg.distill.alpha)
        self.plain_criterion = DistillationLoss(base_criterion(data.augment, False), teacher, cfg.distill.alpha)
        self.weight_params = [p for g in self.optimizer.param_groups for p in g["params"]]
        reduce = dist.all_reduce_sum if dist.distributed else None
        small = cfg.data.kind in ("digits", "synthetic")
        self.evaluator = (Evaluator(self.model, data.val, data.calib, cache=small, reduce=reduce, bf16=self.bf16,
                                    channels_last=self.channels_last) if self.supernet else None)
        self.epoch = self.global_step = 0
        self.history: list[dict[str, float]] = []
        self.last_checkpoint: Path | None = None
        self.state = TrainState(kind, cfg, self.model, space, arch, dist.rank, dist.world_size, epochs=run.epochs,
                                steps_per_epoch=self.steps_per_epoch)
        seed_all(run.seed * 1000 + 1 + dist.rank)  # per-rank augmentation streams (the model is already built)

    # ------------------------------------------------------------------ resume
    def resume(self, source: str | Path | dict[str, Any]) -> None:
        ckpt = source if isinstance(source, dict) else load_checkpoint(source, "resume checkpoint")
        where = source if not isinstance(source, dict) else "the checkpoint"
        if ckpt.get("kind") != self.kind:
            raise InputError(f"run.resume: {where} is a {ckpt.get('kind')} checkpoint, not a {self.kind} one")
        if self.space is not None and ckpt.get("space") not in (None, self.space.to_dict()):
            raise InputError(f"space: differs from the space of {where}")
        if self.kind == "arch" and ckpt.get("arch") != self.arch.to_dict():
            raise InputError(f"arch: differs from the arch of {where}")
        if ckpt["config"].get("run", {}).get("epochs") != self.cfg.run.epochs:
            log.warning("run.epochs changed since %s: the learning-rate and temperature schedules change", where)
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.alpha_optimizer is not None:
            self.alpha_optimizer.load_state_dict(ckpt["alpha_optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.epoch, self.global_step = int(ckpt["epoch"]), int(ckpt["global_step"])
        self.history = list(ckpt.get("history", []))
        rng = ckpt["rng"]
        if len(rng) == self.dist.world_size:
            restore_rng(rng[self.dist.rank])
        else:
            log.warning("resume: checkpoint from %d processes, now %d: random streams reseeded", len(rng),
                        self.dist.world_size)
            seed_all(self.cfg.run.seed * 1000 + 7 * self.epoch + self.dist.rank)
        self.scheduler.step_update(self.global_step)
        if isinstance(source, (str, Path)):
            self.last_checkpoint = Path(source)
        log.info("resumed at epoch %d (step %d) from %s", self.epoch, self.global_step, where)

    # ------------------------------------------------------------------ one epoch
    def _tau(self) -> float:
        g = self.cfg.gumbel
        return gumbel_tau(self.global_step / max(self.total_steps, 1), g.tau_max, g.tau_min, g.schedule)

    def _forward_loss(self, net: nn.Module, x: torch.Tensor, y: torch.Tensor, criterion: nn.Module):
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            return criterion(x, net(x), y)

    def _to_device(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y

    def _alpha_batches(self):
        while True:
            yield from self.data.alpha

    def train_epoch(self, net: nn.Module, epoch: int) -> dict[str, float]:
        from timm.utils import dispatch_clip_grad

        cfg = self.cfg
        net.train()
        self.data.set_epoch(epoch)
        alpha_on = self.supernet and epoch >= cfg.alpha.warmup_epochs
        separate = self.supernet and cfg.alpha.update == "separate_split"
        alpha_batches = self._alpha_batches() if separate and alpha_on else None
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        steps = 0
        start = time.perf_counter()
        for x, y in self.data.train:
            if steps >= self.steps_per_epoch:
                break
            if self.supernet:
                self.model.set_sampling(tau=self._tau())
                self.model.seed_sampling(cfg.run.seed * 1_000_003 + self.global_step)
            x, y = self._to_device(x, y)
            inputs, targets = self.data.mixup(x, y) if self.data.mixup is not None else (x, y)
            loss = self._forward_loss(net, inputs, targets, self.criterion)
            self.optimizer.zero_grad(set_to_none=True)
            if self.alpha_optimizer is not None:
                self.alpha_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.optim.clip_grad:
                dispatch_clip_grad(self.weight_params, cfg.optim.clip_grad, mode=cfg.optim.clip_mode)
            self.optimizer.step()
            if alpha_on and not separate:
                self.alpha_optimizer.step()
            elif alpha_batches is not None:
                xa, ya = self._to_device(*next(alpha_batches))
                alpha_loss = self._forward_loss(net, xa, ya, self.plain_criterion)
                self.optimizer.zero_grad(set_to_none=True)
                self.alpha_optimizer.zero_grad(set_to_none=True)
                alpha_loss.backward()
                self.alpha_optimizer.step()
            self.global_step += 1
            steps += 1
            self.scheduler.step_update(self.global_step)
            loss_sum += loss.detach().double()
            if self.global_step % cfg.run.log_every == 0:
                self.state.global_step = self.global_step
                self.callbacks.on_step_end(self.state, self._step_metrics(epoch, steps, float(loss.detach())))
        self.dist.broadcast_buffers(self.model)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        elapsed = self.dist.all_reduce_max(time.perf_counter() - start)
        total_loss, total_steps = self.dist.all_reduce_sum([float(loss_sum), float(steps)])
        images = steps * self.global_batch
        return {"train_loss": total_loss / max(total_steps, 1), "images_per_s": images / max(elapsed, 1e-9),
                "epoch_time_s": elapsed, "steps": float(steps)}

    def _step_metrics(self, epoch: int, steps: int, loss: float) -> dict[str, float]:
        metrics = {"step": float(self.global_step), "epoch": epoch + steps / self.steps_per_epoch, "loss": loss,
                   "lr": self.optimizer.param_groups[0]["lr"]}
        if self.supernet:
            metrics["tau"] = self.model.tau
        return metrics

    def validate(self) -> float:
        if self.evaluator is not None:
            return self.evaluator.evaluate(self.arch)
        correct, total = count_correct(self.model, self.data.val, bf16=self.bf16, channels_last=self.channels_last)
        correct, total = self.dist.all_reduce_sum([correct, total])
        return correct / max(total, 1)

    # ------------------------------------------------------------------ the end of training
    def sort_channels(self) -> None:
        """``supernet.sort_channels()`` with the weights' optimizer state permuted the same way (a family's supernet
        without ``sort_channels`` keeps its channel order)."""
        if not hasattr(self.model, "sort_channels"):
            return
        groups = self.model.channel_groups()
        perms = self.model.sort_channels()
        for group in groups:
            perm = perms[group.name]
            if torch.equal(perm, torch.arange(group.size)):
                continue
            for module, name, dim, _ in group.entries:
                state = self.optimizer.state.get(getattr(module, name))
                for key, value in (state or {}).items():
                    if torch.is_tensor(value) and value.shape == getattr(module, name).shape:
                        state[key] = value.index_select(dim, perm.to(value.device))

    def checkpoint(self, channels_sorted: bool) -> Path | None:
        rng = self.dist.all_gather_object(capture_rng())
        if not self.dist.is_main:
            return None
        payload = {
            "kind": self.kind,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "alpha_optimizer": None if self.alpha_optimizer is None else self.alpha_optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch,
            "global_step": self.global_step,
            "rng": rng,
            "config": self.cfg.model_dump(mode="json"),
            "space": None if self.space is None else self.space.to_dict(),
            "arch": None if self.arch is None else self.arch.to_dict(),
            "num_classes": self.data.num_classes,
            "history": self.history,
            "channels_sorted": channels_sorted,
        }
        path = save_checkpoint(payload, self.checkpoint_dir / epoch_dir_name(self.epoch))
        prune_checkpoints(self.checkpoint_dir, self.cfg.run.keep_checkpoints)
        return path

    # ------------------------------------------------------------------ the loop
    def fit(self, resume_from: str | Path | dict[str, Any] | None = None) -> Result:
        run = self.cfg.run
        if resume_from is not None:
            self.resume(resume_from)
        start_epoch = self.epoch
        net: nn.Module = self.model
        if self.dist.distributed:
            from torch.nn.parallel import DistributedDataParallel

            hard = self.supernet and self.cfg.gumbel.mode == "hard"
            net = DistributedDataParallel(self.model, device_ids=[self.device.index] if self.device.type == "cuda"
                                          else None, find_unused_parameters=hard)
        st = self.state
        st.epoch, st.start_epoch, st.global_step, st.history = self.epoch, start_epoch, self.global_step, self.history
        st.checkpoint = self.last_checkpoint
        self.callbacks.on_train_start(st)
        for epoch in range(start_epoch, run.epochs):
            metrics: dict[str, float] = {"epoch": float(epoch + 1)}
            metrics.update(self.train_epoch(net, epoch))
            if not math.isfinite(metrics["train_loss"]):
                raise FloatingPointError(f"training diverged in epoch {epoch + 1} (loss {metrics['train_loss']})")
            last = epoch + 1 == run.epochs
            if last or (epoch + 1) % run.eval_every == 0:
                metrics["val_top1"] = self.validate()
            metrics["lr"] = self.optimizer.param_groups[0]["lr"]
            if self.supernet:
                metrics["tau"] = self.model.tau
                metrics["alpha_entropy"] = alpha_entropy(self.model.arch_parameters())
            self.epoch = epoch + 1
            self.history.append(metrics)
            if last and self.supernet:
                self.sort_channels()
            path = self.checkpoint(channels_sorted=last and self.supernet)
            self.last_checkpoint = path if path is not None else self.last_checkpoint
            st.epoch, st.global_step, st.checkpoint = self.epoch, self.global_step, self.last_checkpoint
            if self.dist.is_main:
                log.debug("epoch %d/%d %s", self.epoch, run.epochs,
                         " ".join(f"{k}={v:.4g}" for k, v in metrics.items() if k != "epoch"))
            stored = self.report(metrics, None if path is None else path.parent) if self.report else None
            st.stored_checkpoint = stored or (None if path is None else str(path))
            self.callbacks.on_epoch_end(st, metrics)
        result = Result(self.model, self.history, self.last_checkpoint, self.epoch, start_epoch)
        self.callbacks.on_train_end(st, result)
        return result
