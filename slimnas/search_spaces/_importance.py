"""MetaPath and stage importance from architecture parameters (Li et al., NeurIPS 2022, Sec. 4.2). Plain Python.

Shared by every space family: a slot's score is the probability of its active kinds over that of its identity.

The paper defines the importance of MetaPath ``i`` as ``alpha_4D / alpha_I`` in stages 1-2 and
``(alpha_3D + alpha_4D) / alpha_I`` in stages 3-4, and a stage's importance as the sum over its MetaPaths; it says
alpha "represents the probability of choosing a block". slimnas therefore takes alpha as logits and uses the
probabilities ``p = softmax(alpha)``: the score is ``(p_4D + p_3D) / p_I`` over the kinds a slot has (a ratio of raw
logits would change sign with them and mean nothing). A slot that cannot be an identity scores ``inf``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ._family import IDENTITY

__all__ = ["Importance", "softmax", "metapath_importance", "importance_from_alphas"]


def softmax(logits: Sequence[float]) -> list[float]:
    top = max(logits)
    exps = [math.exp(v - top) for v in logits]
    total = sum(exps)
    return [e / total for e in exps]


def metapath_importance(kinds: Sequence[str], logits: Sequence[float]) -> float:
    """``sum(p_k for active kinds k) / p_I`` with ``p = softmax(logits)``."""
    probs = dict(zip(kinds, softmax(logits)))
    if IDENTITY not in probs:
        return math.inf
    active = sum(p for kind, p in probs.items() if kind != IDENTITY)
    return active / probs[IDENTITY] if probs[IDENTITY] > 0 else math.inf


@dataclass(frozen=True)
class Importance:
    """Importance scores: ``metapaths[stage][slot]`` and ``stages[stage]`` (sum over the stage's MetaPaths)."""

    metapaths: tuple[tuple[float, ...], ...]
    stages: tuple[float, ...]
    probs: tuple[tuple[dict[str, float], ...], ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "metapaths": [list(s) for s in self.metapaths],
            "stages": list(self.stages),
            "probs": [[dict(p) for p in s] for s in self.probs],
        }


def importance_from_alphas(
    kinds: Sequence[Sequence[str]], alphas: Sequence[Sequence[Sequence[float]]]
) -> Importance:
    """Scores from per-stage kinds and per-stage, per-slot alpha logits (ordered like ``kinds``)."""
    metapaths, stages, probs = [], [], []
    for stage_kinds, stage_alphas in zip(kinds, alphas):
        scores = tuple(metapath_importance(stage_kinds, a) for a in stage_alphas)
        metapaths.append(scores)
        stages.append(sum(scores))
        probs.append(tuple(dict(zip(stage_kinds, softmax(a))) for a in stage_alphas))
    return Importance(tuple(metapaths), tuple(stages), tuple(probs))
