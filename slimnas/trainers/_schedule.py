"""Small pure helpers of the recipe: the scaled learning rate, the Gumbel temperature schedule, alpha entropy."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = ["scaled_lr", "gumbel_tau", "alpha_entropy"]


def scaled_lr(base_lr: float, global_batch: int, ref_batch: int = 1024) -> float:
    """The linear scaling rule of the paper's recipe (Sec. 5.1): ``lr = base_lr x batch / 1024``."""
    return base_lr * global_batch / ref_batch


def gumbel_tau(progress: float, tau_max: float, tau_min: float, schedule: str = "exponential") -> float:
    """Temperature at ``progress`` in [0, 1] (finished steps / total steps). The paper gives no schedule.

    ``exponential`` (FBNet/GDAS-style annealing): ``tau_max * (tau_min / tau_max) ** progress``; ``linear``;
    ``cosine``: ``tau_min + (tau_max - tau_min) * (1 + cos(pi * progress)) / 2``; ``constant``: ``tau_max``.
    """
    p = min(max(progress, 0.0), 1.0)
    if schedule == "exponential":
        return tau_max * (tau_min / tau_max) ** p
    if schedule == "linear":
        return tau_max + (tau_min - tau_max) * p
    if schedule == "cosine":
        return tau_min + (tau_max - tau_min) * (1 + math.cos(math.pi * p)) / 2
    if schedule == "constant":
        return tau_max
    raise ValueError(f"gumbel.schedule: unknown schedule {schedule!r}")


def alpha_entropy(alphas: Sequence[torch.Tensor]) -> float:
    """Mean entropy (nats) of ``softmax(alpha)`` over the MetaPaths: log(kinds) at the start, 0 once decided."""
    values = []
    for alpha in alphas:
        logp = torch.log_softmax(alpha.detach().double().flatten(), dim=0)
        values.append(float(-(logp.exp() * logp).sum()))
    return sum(values) / max(len(values), 1)
