"""Run a training job from a validated config: locally in-process, or on Ray Train; with progress and MLflow.

:func:`run_training` checks the inputs first (data paths and shards, teacher and weight files, the supernet
checkpoint of a fine-tuning run) so that bad input fails in one line before any worker starts, then builds the
callback factories (progress output, :class:`TrainProgress`, and
:class:`~slimnas.platform.tracking.store.MLflowCallback` when ``tracking.enabled``) and runs
:func:`slimnas.trainers.train_supernet` / :func:`~slimnas.trainers.train_arch` in this process, or
:func:`slimnas.trainers.ray_train.fit_on_ray` when ``distributed.enabled``.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from slimnas.errors import InputError
from slimnas.progress import Echo, clock, eta, stdout_echo
from slimnas.trainers import ArchTrainConfig, Callback, Result, SupernetTrainConfig, TrainState, check_data

__all__ = ["TrainProgress", "check_inputs", "run_training"]


class TrainProgress(Callback):
    """Training progress under ``[label]`` (rank 0): the run's start, every ``run.log_every`` steps, every epoch (with
    the elapsed time and an ETA from the steps done so far) and the end; on stdout unless ``echo`` says else."""

    def __init__(self, label: str = "slimnas", echo: Echo = stdout_echo) -> None:
        self.label, self.echo = label, echo
        self._t0, self._step0 = time.perf_counter(), 0

    def _say(self, text: str) -> None:
        self.echo(f"[{self.label}] {text}")

    def _times(self, state: TrainState) -> str:
        elapsed = time.perf_counter() - self._t0
        total = state.epochs * max(state.steps_per_epoch, 1)
        left = eta(elapsed, state.global_step - self._step0, total - self._step0)
        return f"elapsed {clock(elapsed)}  ETA {clock(left)}"

    def on_train_start(self, state: TrainState) -> None:
        self._t0, self._step0 = time.perf_counter(), state.global_step
        cfg = state.config
        what = f"space {state.space.name}" if state.kind == "supernet" else f"arch {state.arch}"
        resumed = f", resuming after epoch {state.start_epoch}" if state.start_epoch else ""
        self._say(f"{state.kind} run '{cfg.run.name}': {what}; {state.epochs} epochs x {state.steps_per_epoch} "
                  f"steps, batch {cfg.data.batch_size} x {state.world_size} worker(s){resumed}")

    def on_step_end(self, state: TrainState, metrics: dict[str, float]) -> None:
        extra = f" tau {metrics['tau']:.3f}" if "tau" in metrics else ""
        self._say(f"  step {int(metrics['step'])} (epoch {metrics['epoch']:.2f}) loss {metrics['loss']:.4f} "
                  f"lr {metrics['lr']:.2e}{extra}  {self._times(state)}")

    def on_epoch_end(self, state: TrainState, metrics: dict[str, float]) -> None:
        parts = [f"epoch {state.epoch}/{state.epochs} done", f"loss {metrics['train_loss']:.4f}"]
        if "val_top1" in metrics:
            parts.append(f"val top-1 {metrics['val_top1']:.4f}")
        if "tau" in metrics:
            parts += [f"tau {metrics['tau']:.3f}", f"alpha entropy {metrics['alpha_entropy']:.3f}"]
        parts += [f"{metrics['images_per_s']:.0f} img/s", f"checkpoint {state.stored_checkpoint}"]
        self._say(" | ".join(parts) + f"  {self._times(state)}")

    def on_train_end(self, state: TrainState, result: Result) -> None:
        self._say(f"done in {time.perf_counter() - self._t0:.1f} s; final checkpoint {state.stored_checkpoint}")


def check_inputs(cfg: SupernetTrainConfig | ArchTrainConfig) -> int:
    """Everything a run reads, checked before it starts (one-line ``InputError`` naming the field). Returns the
    number of classes of the data."""
    num_classes = check_data(cfg.data)
    files = [("distill.teacher_weights", cfg.distill.teacher_weights if cfg.distill.enabled else None),
             ("model.timm_weights", cfg.model.timm_weights)]
    if isinstance(cfg, ArchTrainConfig) and cfg.init == "supernet":
        files.append(("supernet_checkpoint", cfg.supernet_checkpoint))
    if isinstance(cfg, ArchTrainConfig) and cfg.init == "weights":
        files.append(("weights", cfg.weights))
    for field, value in files:
        if value and not Path(value).expanduser().is_file():
            raise InputError(f"{field}: no such file {value}")
    if cfg.distill.enabled and not cfg.distill.teacher_weights:
        from slimnas.trainers import local_pretrained_file

        if local_pretrained_file(cfg.distill.teacher_model) is None:
            raise InputError(f"distill.teacher_model: no local pretrained weights for {cfg.distill.teacher_model!r} "
                             f"(nothing is downloaded); give distill.teacher_weights")
    return num_classes


def run_training(cfg: SupernetTrainConfig | ArchTrainConfig, progress: bool = True,
                 callback_factories: Sequence[Callable[[], Callback]] = ()) -> Result:
    """Check the inputs, then train (see the module docstring)."""
    kind = "supernet" if isinstance(cfg, SupernetTrainConfig) else "arch"
    check_inputs(cfg)
    factories: list[Callable[[], Callback]] = list(callback_factories)
    if progress:
        factories.append(functools.partial(TrainProgress, f"train-{kind}"))
    if cfg.tracking.enabled:
        from slimnas.platform.tracking.store import MLflowCallback, default_tracking_uri

        tracking: dict[str, Any] = cfg.tracking.model_dump(mode="json")
        tracking["tracking_uri"] = default_tracking_uri(tracking["tracking_uri"])  # the driver's, for workers
        if tracking["tracking_uri"].startswith("sqlite:") and not tracking["artifact_location"]:
            # A local store: artifacts next to it, not in whatever folder a Ray worker runs in.
            tracking["artifact_location"] = (Path.cwd() / "mlruns").resolve().as_uri()
        factories.append(functools.partial(MLflowCallback, tracking))
    if cfg.distributed.enabled:
        from slimnas.platform.runtime.ray_runtime import init_ray
        from slimnas.platform.stages.search_config import RaySection
        from slimnas.trainers.ray_train import fit_on_ray

        init_ray(RaySection(address=cfg.distributed.address), field="distributed.address")
        return fit_on_ray(cfg, kind, factories)
    from slimnas.trainers import train_arch, train_supernet

    train = train_supernet if kind == "supernet" else train_arch
    return train(cfg, [factory() for factory in factories])
