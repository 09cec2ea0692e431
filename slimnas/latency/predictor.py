"""A calibrated latency predictor: the table's per-kind sums, each with a fitted correction. Plain Python + NumPy.

The plain sum of isolated part timings misses whatever the parts do to each other inside a network (caches warmed or
evicted by neighbours, allocator behaviour, operator scheduling). :class:`CalibratedPredictor` models

    latency(arch) = b + sum_g c_g * S_g(arch)

where ``S_g`` is the table's summed latency of the arch's parts in group ``g`` (stem, downsample, MB4D, MB3D,
reshapes, head) and ``c_g``, ``b`` are fitted on a few measured whole networks. The fit minimises the *relative* error
(latencies span 10x), with a ridge penalty pulling each ``c_g`` toward 1 and ``b`` toward the table's per-network
overhead, so a group the fitting networks barely exercise keeps the table's own numbers. With all ``c_g = 1`` and ``b``
the overhead it is the table's own prediction. (On ``tiny`` with parts timed in context it did not beat the table at
any number of fitting networks: ``docs/design.md``.)

:func:`fit_part_calibration` is the finer model a table of parts timed alone stores when it was calibrated on at
least as many networks as it has parts: one coefficient per part instead of per group,

    latency(arch) = b + sum_p c_p * v_p(arch)

(``v_p``: what the table counts for part ``p`` in ``arch``), fitted the same way (relative error, each ``c_p`` pulled
toward 1). ONNX Runtime runs parts of one kind differently inside a graph than alone, by amounts that differ from part
to part; a group's single coefficient cannot follow that, one per part can once the networks pin it down
(``docs/design.md`` §3).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from slimnas.config import atomic_write_text, read_json_file
from slimnas.errors import InputError
from slimnas.search_spaces import Arch, Part

from .table import LatencyTable

__all__ = ["CalibratedPredictor", "fit_part_calibration", "PART_RIDGE"]

_FORMAT = "slimnas-calibrated-predictor"
#: The per-part fit's ridge, per network: chosen on the learning curve of `tiny` with ONNX Runtime (1e-3 and 3e-4 did
#: equally well at 150-200 networks, 1e-2 worse; ``docs/benchmarks.md``).
PART_RIDGE = 1e-3



class CalibratedPredictor:
    """``predict(arch) -> ms`` and ``predict_many(archs)`` from a table and fitted per-group corrections."""

    def __init__(self, table: LatencyTable, coef: dict[str, float] | None = None,
                 intercept: float | None = None) -> None:
        self.table = table
        family = table.space.space_family
        #: The part-kind groups corrected together: the family's, else one per part kind.
        self.groups: dict[str, tuple[str, ...]] = dict(family.part_groups) or {k: (k,) for k in family.part_kinds}
        self.coef = {g: 1.0 for g in self.groups} | dict(coef or {})
        unknown = set(self.coef) - set(self.groups)
        if unknown:
            raise ValueError(f"coef: unknown group(s) {sorted(unknown)}")
        self.intercept = table.meta.overhead_ms if intercept is None else float(intercept)

    def features(self, archs: Sequence[Arch] | Iterable[Arch]) -> np.ndarray:
        """``(n, groups)``: each arch's table latency summed per group (the table's own prediction, less its
        per-network constant)."""
        by_kind = self.table.predict_by_kind(list(archs))
        if not by_kind:
            return np.zeros((0, len(self.groups)))
        return np.stack([sum(by_kind[k] for k in kinds) for kinds in self.groups.values()], axis=1)

    def fit(self, archs: Sequence[Arch], measured_ms: Sequence[float], ridge: float = 0.05) -> CalibratedPredictor:
        """Fit the corrections on measured whole networks (see the module docstring)."""
        y = np.asarray(measured_ms, dtype=np.float64)
        if len(archs) != len(y) or len(y) == 0:
            raise ValueError("fit: need as many measured latencies as archs, at least one")
        theta = _fit_relative(self.features(archs), y, self.table.meta.overhead_ms, ridge)
        self.coef = {g: float(c) for g, c in zip(self.groups, theta[:-1])}
        self.intercept = float(theta[-1])
        return self

    def predict_many(self, archs: Sequence[Arch] | Iterable[Arch]) -> np.ndarray:
        x = self.features(archs)
        return x @ np.array([self.coef[g] for g in self.groups]) + self.intercept

    def predict(self, arch: Arch) -> float:
        return float(self.predict_many([arch])[0])

    def coefficients(self) -> dict[str, Any]:
        """What a table stores to predict with this calibration (``TableMeta.calibration``)."""
        return {"coef": dict(self.coef), "intercept": self.intercept}

    def to_dict(self) -> dict[str, Any]:
        return {"format": _FORMAT, "coef": dict(self.coef), "intercept": self.intercept,
                "table": self.table.meta.identity()}

    def save(self, path: str | os.PathLike) -> Path:
        return atomic_write_text(path, json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: str | os.PathLike, table: LatencyTable) -> CalibratedPredictor:
        file = Path(path)
        data = read_json_file(file, "calibration", _FORMAT, "slimnas calibration file")
        if data.get("table") != json.loads(json.dumps(table.meta.identity())):
            raise InputError(f"calibration: {file} was fitted for a table measured under other settings")
        return cls(table, data["coef"], data["intercept"])


def fit_part_calibration(table: LatencyTable, archs: Sequence[Arch], measured_ms: Sequence[float],
                         ridge: float = PART_RIDGE) -> dict[str, Any]:
    """Fit one coefficient per part and an intercept on measured whole networks (see the module docstring); returns
    what the table stores (``TableMeta.calibration``): ``{"coef": {}, "intercept": ms, "parts": [[kind, stage, c_in,
    c_out, c], ...]}`` for every part the networks contain. ``table`` must be uncalibrated."""
    y = np.asarray(measured_ms, dtype=np.float64)
    if len(archs) != len(y) or len(y) == 0:
        raise ValueError("fit: need as many measured latencies as archs, at least one")
    if table.meta.calibration:
        raise ValueError("fit: the table is calibrated already")
    index: dict[Part, int] = {}
    rows: list[dict[Part, float]] = []
    for arch in archs:
        row: dict[Part, float] = {}
        for part, value in table.contributions(arch)[0]:
            row[part] = row.get(part, 0.0) + value
            index.setdefault(part, len(index))
        rows.append(row)
    x = np.zeros((len(y), len(index)))
    for i, row in enumerate(rows):
        for part, value in row.items():
            x[i, index[part]] = value
    theta = _fit_relative(x, y, table.meta.overhead_ms, ridge)
    return {"coef": {}, "intercept": float(theta[-1]),
            "parts": [[p.kind, p.stage, p.c_in, p.c_out, float(c)] for p, c in zip(index, theta[:-1])]}


def _fit_relative(x: np.ndarray, y: np.ndarray, overhead_ms: float, ridge: float) -> np.ndarray:
    """``latency = x @ c + b`` fitted for the relative error on ``y``, each ``c`` pulled toward 1 and ``b`` toward
    ``overhead_ms`` by ``ridge`` per network; returns ``[c..., b]``."""
    design = np.concatenate([x, np.ones((len(y), 1))], axis=1) / y[:, None]
    prior = np.array([1.0] * x.shape[1] + [overhead_ms])
    scale = np.array([1.0] * x.shape[1] + [1.0 / float(np.mean(y)) ** 2])
    penalty = ridge * len(y) * np.diag(scale)
    return np.linalg.solve(design.T @ design + penalty, design.T @ np.ones(len(y)) + penalty @ prior)
