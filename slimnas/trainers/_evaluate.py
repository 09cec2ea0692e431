"""Fair evaluation of subnets: top-1 after re-calibrating BatchNorm statistics (Once-for-All; paper Sec. 4.2).

A supernet's BatchNorm running statistics describe the mixture of paths it was trained on, not any one subnet: a
narrower or shallower subnet sees different activation statistics, and its accuracy with the supernet's statistics
is not its accuracy. :func:`evaluate_arch` therefore (1) extracts the subnet as a standalone copy
(``supernet.extract(arch)``), so the supernet itself is never modified; (2) resets that copy's BN running statistics
and re-estimates them as a cumulative average (``momentum=None``) over calibration batches, with everything else in
eval mode (no dropout, no drop-path); (3) reports top-1 on the validation data. Once-for-All calibrates on 2000
images. :class:`Evaluator` holds the data for many calls (the search's accuracy function);
:meth:`Evaluator.calibrated` returns the very network it scores (a search job saves its winners from it), and
:func:`evaluation_data` builds the batches a search job evaluates on (the same in every worker and in the driver).

Extraction builds a fresh model, whose initialisation draws from torch's global generator, and iterating a
DataLoader draws a seed from it; evaluation runs under ``torch.random.fork_rng`` so it never changes the caller's
random stream.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = ["recalibrate_bn", "count_correct", "evaluate_arch", "evaluate_archs", "Evaluator", "EvaluationData",
           "evaluation_data"]


def _images(batch: Any) -> torch.Tensor:
    return batch[0] if isinstance(batch, (tuple, list)) else batch


def _autocast(device: torch.device, bf16: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()


def _prepare(x: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable[Any], *, bf16: bool = False,
                   channels_last: bool = False) -> int:
    """Re-estimate every BatchNorm's running statistics of ``model`` in place; returns the images used.

    ``batches`` yields image tensors or ``(images, labels)``. The model is left in eval mode.
    """
    device = next(model.parameters()).device
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average over all calibration batches
    model.eval()
    for bn in bns:
        bn.train()
    seen = 0
    try:
        for batch in batches:
            x = _prepare(_images(batch), device, channels_last)
            with _autocast(device, bf16):
                model(x)
            seen += x.shape[0]
    finally:
        for bn, momentum in zip(bns, momenta):
            bn.momentum = momentum
        model.eval()
    if bns and seen == 0:
        raise ValueError("calib_batches: no calibration images")
    return seen


@torch.no_grad()
def count_correct(model: nn.Module, data: Iterable[Any], *, bf16: bool = False,
                  channels_last: bool = False) -> tuple[int, int]:
    """``(correct top-1 predictions, images)`` of ``model`` in eval mode over ``(images, labels)`` batches."""
    device = next(model.parameters()).device
    model.eval()
    correct = total = 0
    for x, y in data:
        with _autocast(device, bf16):
            logits = model(_prepare(x, device, channels_last))
        correct += int((logits.argmax(dim=1).cpu() == y.cpu()).sum())
        total += int(y.shape[0])
    return correct, total



def evaluate_arch(supernet: nn.Module, arch, data: Iterable[Any], calib_batches: Iterable[Any] | None, *,
                  bf16: bool = False, channels_last: bool = False) -> float:
    """Top-1 of ``arch`` with the supernet's weights after BN recalibration on ``calib_batches``.

    ``data`` yields ``(images, labels)``; ``calib_batches=None`` skips recalibration (the supernet's statistics).
    The supernet is not modified.
    """
    return Evaluator(supernet, data, calib_batches, bf16=bf16, channels_last=channels_last).evaluate(arch)


def evaluate_archs(supernet: nn.Module, archs: Sequence[Any], data: Iterable[Any],
                   calib_batches: Iterable[Any] | None, **kwargs: Any) -> list[float]:
    """:func:`evaluate_arch` for many archs (the data is cached once when it fits, see :class:`Evaluator`)."""
    return Evaluator(supernet, data, calib_batches, **kwargs).evaluate_many(archs)


class Evaluator:
    """Top-1 of subnets of one supernet on fixed validation and calibration data.

    Args:
        supernet: a :class:`~slimnas.search_spaces.efficientformer.SuperNet` (never modified).
        data: ``(images, labels)`` batches (a loader, re-iterated for every arch).
        calib_batches: calibration batches (images or ``(images, labels)``); ``None``: no recalibration.
        cache: keep the batches in memory after the first pass (for data sets that fit, e.g. the digits).
        reduce: sums ``[correct, total]`` over processes (each evaluates its shard of the validation data).
        bf16, channels_last: the GPU settings of the training run.
    """

    def __init__(self, supernet: nn.Module, data: Iterable[Any], calib_batches: Iterable[Any] | None, *,
                 cache: bool = False, reduce: Callable[[list[float]], list[float]] | None = None,
                 bf16: bool = False, channels_last: bool = False) -> None:
        self.supernet, self.reduce = supernet, reduce
        self.bf16, self.channels_last, self.cache = bf16, channels_last, cache
        self._data, self._calib = data, calib_batches

    def _batches(self, name: str) -> Iterable[Any] | None:
        source = getattr(self, name)
        if self.cache and source is not None and not isinstance(source, list):
            source = list(source)
            setattr(self, name, source)
        return source

    def evaluate(self, arch) -> float:
        if self.reduce is not None:
            with torch.random.fork_rng(devices=[]):
                model = self._calibrated(arch)
                correct, total = count_correct(model, self._batches("_data"), bf16=self.bf16,
                                               channels_last=self.channels_last)
            correct, total = self.reduce([correct, total])
        else:
            correct = total = 0
            for correct, total, _ in self.evaluate_progress(arch):  # noqa: B007 - the last counts are the result
                pass
        if total == 0:
            raise ValueError("data: no validation images")
        return correct / total

    def calibrated(self, arch) -> nn.Module:
        """The network :meth:`evaluate` scores for ``arch``: the extracted subnet with its BatchNorm statistics
        re-estimated on the calibration batches, in eval mode (the caller's random stream is left unchanged)."""
        with torch.random.fork_rng(devices=[]):
            return self._calibrated(arch)

    def _calibrated(self, arch) -> nn.Module:
        model = self.supernet.extract(arch).eval()
        calib = self._batches("_calib")
        if calib is not None:
            recalibrate_bn(model, calib, bf16=self.bf16, channels_last=self.channels_last)
        return model

    def evaluate_progress(self, arch) -> Iterator[tuple[int, int, int]]:
        """``(correct, seen, batches)`` after each validation batch (one process; for early stopping).

        The last tuple is the whole evaluation: ``correct / seen`` equals :meth:`evaluate`.
        """
        with torch.random.fork_rng(devices=[]):
            model = self._calibrated(arch)
            device = next(model.parameters()).device
            correct = seen = batches = 0
            with torch.no_grad():
                for x, y in self._batches("_data"):
                    with _autocast(device, self.bf16):
                        logits = model(_prepare(x, device, self.channels_last))
                    correct += int((logits.argmax(dim=1).cpu() == y.cpu()).sum())
                    seen += int(y.shape[0])
                    batches += 1
                    yield correct, seen, batches

    def evaluate_many(self, archs: Sequence[Any]) -> list[float]:
        return [self.evaluate(arch) for arch in archs]


@dataclass
class EvaluationData:
    """The batches a search job evaluates every candidate on: ``val`` (``(images, labels)``, whole batches up to the
    requested image count), ``calib`` (the calibration batches) and ``images`` (validation images in ``val``)."""

    val: list[Any]
    calib: list[Any]
    images: int


def evaluation_data(data: Any, img_size: int, eval_images: int | None) -> EvaluationData:
    """The validation and calibration batches of a search job (``data``: a :class:`~slimnas.trainers.DataConfig`
    or its dict): the first batches of the validation loader until ``eval_images`` images (``None``: all), every
    calibration batch, evaluation transforms. Deterministic: every process that builds them gets the same images in
    the same order (the Tune workers that score candidates, the driver that saves the winners)."""
    from ._config import AugmentConfig, DataConfig
    from ._data import build_data

    cfg = data if isinstance(data, DataConfig) else DataConfig(**data)
    bundle = build_data(cfg, AugmentConfig().resolve(cfg.kind), img_size)
    val, images = [], 0
    for x, y in bundle.val:
        if eval_images is not None and images >= eval_images:
            break
        val.append((x, y))
        images += int(y.shape[0])
    return EvaluationData(val, list(bundle.calib), images)
