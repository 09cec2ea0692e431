"""Helpers for slimnas's tests and for users testing code built on slimnas (torch-free at import)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from slimnas.search_spaces import Arch, SearchSpace

if TYPE_CHECKING:
    import torch

__all__ = ["perturb", "TOY_SPACE", "toy_latency", "toy_accuracy", "wobbly_fraction", "toy_eval_trainable",
           "ToyEvaluation", "toy_evaluation", "run_search", "FailOnce", "RankRecorder", "tiny_train_config"]

_TRAIN = ("FailOnce", "RankRecorder", "tiny_train_config")


def __getattr__(name: str):
    # the training fakes need torch: imported on first use, so the search fakes stay torch-free
    if name in _TRAIN:
        from . import _train

        return getattr(_train, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

#: A toy space for search tests: 4 stages at most 32 wide; 1, 1, 2, 2 slots (max arch: 4d | 4d | 4d 4d | 3d 3d).
TOY_SPACE = SearchSpace(name="toy", img_size=32, max_widths=(32, 32, 32, 32), slots=(1, 1, 2, 2))


def toy_latency(archs: Sequence[Arch]) -> list[float]:
    """An additive latency oracle: 1 ms per 16 channels of each stage, 2 ms per MB4D, 3 ms per MB3D."""
    return [sum(w // 16 for w in a.widths) + 2.0 * sum(a.depths[s] - a.num_3d[s] for s in range(4))
            + 3.0 * sum(a.num_3d) for a in archs]


def toy_accuracy(arch: Arch) -> float:
    """An accuracy oracle: 70 + 3 per MB3D + 1.5 per MB4D + 0.25 per 16 channels of each stage."""
    n3 = sum(arch.num_3d)
    n4 = sum(arch.depths) - n3
    return 70 + 3 * n3 + 1.5 * n4 + 0.25 * sum(w // 16 for w in arch.widths)


TOY_IMAGES, TOY_BATCHES = 2000, 10


def wobbly_fraction(arch: Arch) -> float:
    """The toy accuracy plus a deterministic per-arch wobble, as a top-1 fraction over 2000 images."""
    import random

    value = toy_accuracy(arch) + random.Random(arch.to_json()).uniform(-1.5, 1.5)
    return round(value / 100.0 * TOY_IMAGES) / TOY_IMAGES


def toy_eval_trainable(config: dict) -> None:
    """A Tune trainable with the protocol of a real evaluation: 2000 images in 10 batches, counts after each,
    the final ``accuracy`` equal to :func:`wobbly_fraction` of the candidate's arch."""
    import time

    from ray import tune

    correct_total = round(wobbly_fraction(Arch.from_dict(config["arch"])) * TOY_IMAGES)
    for done in range(1, TOY_BATCHES + 1):
        time.sleep(float(config.get("sleep_s", 0.02)))
        report = {"correct": correct_total * done // TOY_BATCHES, "seen": TOY_IMAGES * done // TOY_BATCHES,
                  "total": TOY_IMAGES, "batches_done": done, "batches_total": TOY_BATCHES}
        if done == TOY_BATCHES:
            report["accuracy"] = correct_total / TOY_IMAGES
        tune.report(report)


class ToyEvaluation:
    """An evaluator's :class:`~slimnas.platform.tune.evaluators.Evaluation` with :func:`toy_eval_trainable`'s
    protocol (10 batches of 200 images, the final top-1 :func:`wobbly_fraction`), ``sleep_s`` per batch."""

    images, batches = TOY_IMAGES, TOY_BATCHES

    def __init__(self, sleep_s: float = 0.02) -> None:
        self.sleep_s = sleep_s

    def progress(self, arch: dict):
        import time

        correct_total = round(wobbly_fraction(Arch.from_dict(arch)) * TOY_IMAGES)
        for done in range(1, TOY_BATCHES + 1):
            time.sleep(self.sleep_s)
            yield correct_total * done // TOY_BATCHES, TOY_IMAGES * done // TOY_BATCHES, done


def toy_evaluation(payload: dict) -> ToyEvaluation:
    """An evaluator pool's ``build``: a :class:`ToyEvaluation` (``payload["sleep_s"]`` per batch)."""
    return ToyEvaluation(float(payload.get("sleep_s", 0.02)))


def run_search(search, evaluate=toy_accuracy, max_rounds: int = 100_000):
    """Drive an ask/tell search to the end, evaluating each candidate with ``evaluate(arch)``."""
    for _ in range(max_rounds):
        if search.finished:
            return search
        asked = search.ask()
        if not asked and not search.finished:
            raise RuntimeError(f"{search.name}: ask() returned nothing while no result was outstanding")
        for candidate in asked:
            search.tell(candidate.id, evaluate(candidate.arch))
    raise RuntimeError(f"{search.name}: did not finish in {max_rounds} rounds")


def perturb(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give norms, BN statistics, layer scales and attention biases non-trivial values, in place.

    Fresh inits make them near no-ops (layer scale 1e-5, unit BN statistics, zero attention bias), which would let a
    wrong fold or a wrong channel slice pass a comparison unnoticed.
    """
    import torch

    gen = torch.Generator().manual_seed(seed)

    def uniform(t: torch.Tensor, lo: float, hi: float) -> None:
        t.copy_(torch.rand(t.shape, generator=gen) * (hi - lo) + lo)

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                uniform(module.running_mean, -0.5, 0.5)
                uniform(module.running_var, 0.5, 2.0)
                uniform(module.weight, 0.5, 1.5)
                uniform(module.bias, -0.2, 0.2)
            elif isinstance(module, torch.nn.LayerNorm):
                uniform(module.weight, 0.5, 1.5)
                uniform(module.bias, -0.2, 0.2)
        for name, param in model.named_parameters():
            if name.endswith("gamma"):
                uniform(param, 0.05, 0.3)
            elif name.endswith("attention_biases"):
                param.copy_(torch.randn(param.shape, generator=gen))
    return model
