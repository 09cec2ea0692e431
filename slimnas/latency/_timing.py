"""Timing statistics of many single-call samples (plain Python + NumPy)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["Timing", "STATS", "STATISTICS"]

#: The statistics every measurement records (milliseconds, except ``count``).
STATS = ("median", "mean", "p10", "p25", "p90", "min", "std")
#: The statistics a measurement protocol may predict and validate with (see :mod:`slimnas.latency.protocol`).
STATISTICS = ("median", "mean", "p25", "p10", "min")


@dataclass(frozen=True)
class Timing:
    """Statistics of repeated timings of one module, in milliseconds.

    ``p25`` and ``min`` are ``nan`` in tables written before they were recorded (format version 1).
    """

    median: float
    mean: float
    p10: float
    p90: float
    std: float
    count: int
    p25: float = float("nan")
    min: float = float("nan")

    @classmethod
    def from_samples(cls, samples_ms: Sequence[float]) -> Timing:
        values = np.asarray(samples_ms, dtype=np.float64)
        if values.size == 0 or not np.all(np.isfinite(values)):
            raise ValueError("samples: need at least one finite timing")
        return cls(
            median=float(np.median(values)),
            mean=float(values.mean()),
            p10=float(np.percentile(values, 10)),
            p90=float(np.percentile(values, 90)),
            std=float(values.std(ddof=1)) if values.size > 1 else 0.0,
            count=int(values.size),
            p25=float(np.percentile(values, 25)),
            min=float(values.min()),
        )

    def get(self, stat: str) -> float:
        if stat not in STATS:
            raise ValueError(f"stat: expected one of {STATS}, got {stat!r}")
        return float(getattr(self, stat))

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)
