"""``train_supernet`` and ``train_arch``: plain functions that run one training job, with or without Ray.

Both build the data for this process's rank, the model, the optional teacher, and hand them to the loop in
:mod:`._engine`. They return a :class:`~slimnas.trainers.Result`. Ray Train calls the same functions on every worker
(:mod:`slimnas.trainers.ray_train`), passing the distributed context, the checkpoint to resume from and a report hook.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from slimnas.config import load_config
from slimnas.errors import InputError

from ._callbacks import Callback, CallbackList, Result
from ._checkpoint import latest_checkpoint, load_checkpoint
from ._config import ArchTrainConfig, SupernetTrainConfig
from ._data import build_data
from ._dist import DistContext, resolve_device
from ._engine import Engine, Report, seed_all
from ._loss import load_teacher

__all__ = ["train_supernet", "train_arch", "checkpoint_dir", "model_from_checkpoint"]

log = logging.getLogger(__name__)

ConfigSource = str | os.PathLike | Mapping[str, Any]


def checkpoint_dir(cfg: SupernetTrainConfig | ArchTrainConfig) -> Path:
    """``<run.out_dir>/<run.name>/checkpoints``."""
    return cfg.run.run_dir / "checkpoints"


def _resume_source(cfg, resume_from, folder: Path):
    if resume_from is not None:
        return resume_from
    if cfg.run.resume:
        return latest_checkpoint(folder)
    return None


def _context(cfg, dist: DistContext | None) -> DistContext:
    if dist is not None:
        return dist
    return DistContext.current(resolve_device(cfg.run.device))


def train_supernet(cfg: SupernetTrainConfig | ConfigSource, callbacks: Iterable[Callback] | None = None, *,
                   dist: DistContext | None = None, resume_from: str | Path | dict[str, Any] | None = None,
                   report: Report | None = None, checkpoint_to: str | Path | None = None) -> Result:
    """Train the supernet of ``cfg.space`` with the paper's recipe (Sec. 4.2 Eq. 8, Sec. 5.1).

    Args:
        cfg: a :class:`SupernetTrainConfig`, a YAML path or a mapping.
        callbacks: event handlers (progress, tracking).
        dist: rank, world size and device (default: a single process, or the initialised process group).
        resume_from: a checkpoint (path or loaded dict); default: the latest one of this run when ``run.resume``.
        report: called on every rank after each epoch's checkpoint (Ray Train's report).
        checkpoint_to: where epoch checkpoints go (default ``<out_dir>/<name>/checkpoints``).
    """
    from slimnas.search_spaces import SearchSpace

    cfg = load_config(SupernetTrainConfig, cfg)
    dist = _context(cfg, dist)
    space = SearchSpace.resolve(cfg.space)
    aug = cfg.augment.resolve(cfg.data.kind)
    alpha_fraction = cfg.alpha.split_fraction if cfg.alpha.update == "separate_split" else None
    data = build_data(cfg.data, aug, space.img_size, rank=dist.rank, world_size=dist.world_size, seed=cfg.run.seed,
                      alpha_fraction=alpha_fraction, pin_memory=dist.device.type == "cuda")
    seed_all(cfg.run.seed)  # the same initial weights on every rank
    g = cfg.gumbel
    net = space.space_family.supernet(space, num_classes=data.num_classes, mode=g.mode, tau=g.tau_max,
                                      noise=g.noise, drop_rate=cfg.model.drop_rate,
                                      drop_path_rate=cfg.model.drop_path_rate)
    if cfg.model.timm_weights:
        if not hasattr(net, "load_timm"):
            raise InputError(f"model.timm_weights: the {space.family!r} family cannot load timm weights")
        try:
            net.load_timm(Path(cfg.model.timm_weights).expanduser())
        except ValueError as exc:
            raise InputError(f"model.timm_weights: {exc}") from None
    teacher = load_teacher(cfg.distill, data.num_classes, dist.device) if cfg.distill.enabled else None
    net.distilled_training = teacher is not None
    folder = Path(checkpoint_to) if checkpoint_to is not None else checkpoint_dir(cfg)
    engine = Engine(kind="supernet", cfg=cfg, model=net, space=space, arch=space.max_arch(), data=data, dist=dist,
                    callbacks=CallbackList(callbacks, dist.rank), checkpoint_dir=folder, report=report,
                    teacher=teacher)
    return engine.fit(_resume_source(cfg, resume_from, folder))


def checkpoint_classes(ckpt: dict[str, Any]) -> int:
    """The class count of a checkpoint's model: recorded in it (``num_classes``), or, in checkpoints written before it
    was, read from the classifier's weights (``head.weight``, 0 without a classifier)."""
    if "num_classes" in ckpt:
        return int(ckpt["num_classes"])
    head = ckpt["model"].get("head.weight")
    return int(head.shape[0]) if head is not None else 0


def _model_from_supernet(cfg: ArchTrainConfig, arch, num_classes: int):
    from slimnas.search_spaces import SearchSpace

    ckpt = load_checkpoint(cfg.supernet_checkpoint, "supernet_checkpoint")
    if ckpt.get("kind") != "supernet":
        raise InputError(f"supernet_checkpoint: {cfg.supernet_checkpoint} is not a supernet checkpoint")
    space = SearchSpace.from_dict(ckpt["space"])
    try:
        space.check(arch)
    except ValueError as exc:
        raise InputError(f"arch: not in the supernet's space ({exc})") from None
    classes = checkpoint_classes(ckpt)
    if classes != num_classes:
        raise InputError(f"supernet_checkpoint: the supernet has {classes} classes, the data {num_classes}")
    net = space.space_family.supernet(space, num_classes=classes)
    net.load_state_dict(ckpt["model"])
    model = space.space_family.build_model(arch, num_classes=num_classes, drop_rate=cfg.model.drop_rate,
                                           drop_path_rate=cfg.model.drop_path_rate)
    with torch.random.fork_rng(devices=[]):
        model.load_state_dict(net.extract(arch).state_dict())
    return model, space


def _load_weights(model: torch.nn.Module, path: str) -> None:
    """``init: weights``: the state_dict file ``path`` (``weights_only=True``) loaded into ``model``, every key; an
    unreadable file or one of another network is an :class:`InputError` naming ``weights``."""
    file = Path(path).expanduser()
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InputError(f"weights: no such file {file}") from None
    except Exception as exc:  # noqa: BLE001 - any unreadable or unsafe file is the same user error
        raise InputError(f"weights: {file} is not a state_dict torch loads with weights_only=True "
                         f"({type(exc).__name__})") from None
    if not isinstance(state, dict):
        raise InputError(f"weights: {file} holds a {type(state).__name__}, not a state_dict")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = next((line.strip() for line in str(exc).splitlines()[1:] if line.strip()), str(exc))
        raise InputError(f"weights: {file} does not fit the arch's network ({first})") from None


def train_arch(cfg: ArchTrainConfig | ConfigSource, callbacks: Iterable[Callback] | None = None, *,
               dist: DistContext | None = None, resume_from: str | Path | dict[str, Any] | None = None,
               report: Report | None = None, checkpoint_to: str | Path | None = None) -> Result:
    """Retrain one arch with the same recipe and loop, from scratch, from the supernet's weights or from a saved
    network's (``init: weights``; both fine-tuning).

    Arguments as for :func:`train_supernet`; ``cfg`` is an :class:`ArchTrainConfig`.
    """
    from slimnas.search_spaces import Arch

    cfg = load_config(ArchTrainConfig, cfg)
    dist = _context(cfg, dist)
    arch = Arch.from_dict(cfg.arch)
    aug = cfg.augment.resolve(cfg.data.kind)
    data = build_data(cfg.data, aug, arch.img_size, rank=dist.rank, world_size=dist.world_size, seed=cfg.run.seed,
                      pin_memory=dist.device.type == "cuda")
    seed_all(cfg.run.seed)
    space = None
    if cfg.init == "supernet":
        model, space = _model_from_supernet(cfg, arch, data.num_classes)
    else:
        model = arch.space_family.build_model(arch, num_classes=data.num_classes, drop_rate=cfg.model.drop_rate,
                                              drop_path_rate=cfg.model.drop_path_rate)
        if cfg.init == "weights":
            _load_weights(model, cfg.weights)
    teacher = load_teacher(cfg.distill, data.num_classes, dist.device) if cfg.distill.enabled else None
    model.distilled_training = teacher is not None
    folder = Path(checkpoint_to) if checkpoint_to is not None else checkpoint_dir(cfg)
    engine = Engine(kind="arch", cfg=cfg, model=model, space=space, arch=arch, data=data, dist=dist,
                    callbacks=CallbackList(callbacks, dist.rank), checkpoint_dir=folder, report=report,
                    teacher=teacher)
    return engine.fit(_resume_source(cfg, resume_from, folder))


def model_from_checkpoint(source: str | Path | dict[str, Any]):
    """The trained model of a checkpoint: its family's supernet (supernet runs) or standalone network (arch runs;
    EfficientFormer: a ``SuperNet`` or an ``EfficientFormer``), in eval mode on the CPU. Loaded with
    ``weights_only=True``."""
    from slimnas.search_spaces import Arch, SearchSpace

    ckpt = source if isinstance(source, dict) else load_checkpoint(source)
    num_classes = checkpoint_classes(ckpt)
    with torch.random.fork_rng(devices=[]):
        if ckpt["kind"] == "supernet":
            space = SearchSpace.from_dict(ckpt["space"])
            model = space.space_family.supernet(space, num_classes=num_classes)
        else:
            arch = Arch.from_dict(ckpt["arch"])
            model = arch.space_family.build_model(arch, num_classes=num_classes)
    model.load_state_dict(ckpt["model"])
    return model.eval()
