"""How an export is checked: the exported model run on its runtime against the eager network, on the same inputs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from slimnas.errors import ExportError

__all__ = ["Check", "ATOL", "CHECK_BATCH", "inputs", "compare"]

#: Largest absolute difference allowed between the exported model's outputs and the eager network's, per unit of
#: the largest output (float32; logits of order 1 allow 1e-4).
ATOL = 1e-4
#: The batch an ONNX export is checked on in ONNX Runtime (besides batch 1: the batch dimension is dynamic).
CHECK_BATCH = 8


@dataclass(frozen=True)
class Check:
    """What was checked: the largest absolute output difference (``None``: the format cannot run here), on what
    (``on``: runtime and batches), and a one-line ``note`` (empty, or why it was not run)."""

    max_abs_diff: float | None
    on: str
    note: str = ""


def inputs(shape: tuple[int, ...], seed: int = 0) -> Any:
    """A reproducible float32 input of ``shape`` (standard normal)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator)


def compare(what: str, reference: Callable[[Any], Any], exported: Callable[[Any], Any],
            shapes: list[tuple[int, ...]]) -> float:
    """The largest absolute difference of ``exported(x)`` from ``reference(x)`` (both numpy-convertible) over one
    input per shape; :class:`ExportError` naming ``what`` when it exceeds :data:`ATOL` (scaled by the outputs)."""
    import numpy as np
    import torch

    worst = 0.0
    for i, shape in enumerate(shapes):
        x = inputs(shape, seed=i)
        with torch.no_grad():
            want = np.asarray(reference(x), dtype=np.float64)
            got = np.asarray(exported(x), dtype=np.float64)
        if got.shape != want.shape:
            raise ExportError(f"{what}: output shape {tuple(got.shape)} at input {shape}, expected "
                              f"{tuple(want.shape)}")
        diff = float(np.max(np.abs(got - want))) if want.size else 0.0
        limit = ATOL * max(1.0, float(np.max(np.abs(want))) if want.size else 1.0)
        if not diff <= limit:
            raise ExportError(f"{what}: outputs differ from the network's by {diff:.3g} at input {shape} "
                              f"(allowed {limit:.3g})")
        worst = max(worst, diff)
    return worst
