"""Validating a table against measured whole networks.

A table is only as good as its agreement with end-to-end latency (DESIGN.md). :func:`validate_table` measures the
space's presets and ``N`` random archs end to end on the table's own backend and settings, and reports per arch the
predicted and measured latency, and overall: mean absolute percentage error, maximum error, the share of archs within
+-5% and +-10% (nn-Meter's measure, Zhang et al., MobiSys 2021) and Kendall's tau (ranking agreement, what the search
relies on). It also fits a :class:`CalibratedPredictor` on a random part of the archs and reports both predictors on
the held-out rest (the presets are always held out).
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from slimnas.config import atomic_write_text
from slimnas.errors import InputError
from slimnas.search_spaces.efficientformer import PRESETS, Arch, SearchSpace

from ._timing import Timing
from .predictor import CalibratedPredictor
from .table import LatencyTable

__all__ = ["validation_archs", "error_metrics", "kendall_tau", "ValidationReport", "validate_table",
           "validate_measured", "NetworkResult"]


@dataclass
class NetworkResult:
    name: str
    arch: Arch
    measured: Timing
    predicted_ms: float
    split: str = "holdout"
    calibrated_ms: float | None = None

    @property
    def error_pct(self) -> float:
        return 100.0 * (self.predicted_ms - self.measured.median) / self.measured.median

    @property
    def calibrated_error_pct(self) -> float | None:
        if self.calibrated_ms is None:
            return None
        return 100.0 * (self.calibrated_ms - self.measured.median) / self.measured.median


def validation_archs(space: SearchSpace, num_archs: int, seed: int) -> list[tuple[str, Arch]]:
    """The space's presets (those it contains) and ``num_archs`` distinct random archs."""
    out: list[tuple[str, Arch]] = []
    for name in PRESETS:
        try:
            arch = Arch.preset(name, img_size=space.img_size, slots=space.slots)
        except ValueError:
            continue
        if space.contains(arch):
            out.append((name, arch))
    seen = {a.structure_key() for _, a in out}
    rng = random.Random(seed)
    count, attempts = 0, 0
    while count < num_archs and attempts < 100 * (num_archs + 1):
        attempts += 1
        arch = space.sample(rng)
        if arch.structure_key() in seen:
            continue
        seen.add(arch.structure_key())
        out.append((f"random-{count}", arch))
        count += 1
    return out


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b between two sequences (ties handled)."""
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(a) < 2:
        return float("nan")
    da = np.sign(a[:, None] - a[None, :])
    db = np.sign(b[:, None] - b[None, :])
    upper = np.triu_indices(len(a), k=1)
    concordance = (da * db)[upper].sum()
    pairs_a = np.count_nonzero(da[upper])
    pairs_b = np.count_nonzero(db[upper])
    if pairs_a == 0 or pairs_b == 0:
        return float("nan")
    return float(concordance / np.sqrt(pairs_a * pairs_b))


def error_metrics(predicted: Sequence[float], measured: Sequence[float]) -> dict[str, float]:
    p, m = np.asarray(predicted, dtype=np.float64), np.asarray(measured, dtype=np.float64)
    if len(p) == 0:
        return {"n": 0}
    err = 100.0 * (p - m) / m
    return {
        "n": int(len(p)),
        "mape_pct": float(np.mean(np.abs(err))),
        "max_abs_error_pct": float(np.max(np.abs(err))),
        "mean_error_pct": float(np.mean(err)),
        "within_5pct": float(np.mean(np.abs(err) <= 5.0)),
        "within_10pct": float(np.mean(np.abs(err) <= 10.0)),
        "kendall_tau": kendall_tau(p, m),
    }


@dataclass
class ValidationReport:
    meta: dict[str, Any]
    rows: list[NetworkResult]
    calibration: CalibratedPredictor | None = None
    summary: dict[str, dict[str, float]] = field(default_factory=dict)

    def compute(self) -> ValidationReport:
        rows = self.rows
        hold = [r for r in rows if r.split == "holdout"]
        self.summary = {
            "plain_all": error_metrics([r.predicted_ms for r in rows], [r.measured.median for r in rows]),
            "plain_holdout": error_metrics([r.predicted_ms for r in hold], [r.measured.median for r in hold]),
        }
        if self.calibration is not None:
            self.summary["calibrated_holdout"] = error_metrics([r.calibrated_ms for r in hold],
                                                               [r.measured.median for r in hold])
        return self

    def to_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["name", "split", "predicted_ms", "calibrated_ms", "measured_median_ms", "measured_p10_ms",
                         "measured_p90_ms", "error_pct", "calibrated_error_pct", "arch"])
        for r in self.rows:
            writer.writerow([r.name, r.split, f"{r.predicted_ms:.4f}",
                             "" if r.calibrated_ms is None else f"{r.calibrated_ms:.4f}",
                             f"{r.measured.median:.4f}", f"{r.measured.p10:.4f}", f"{r.measured.p90:.4f}",
                             f"{r.error_pct:.2f}",
                             "" if r.calibrated_error_pct is None else f"{r.calibrated_error_pct:.2f}",
                             r.arch.to_json()])
        return buffer.getvalue()

    def to_dict(self) -> dict[str, Any]:
        return {"meta": self.meta, "summary": self.summary,
                "calibration": None if self.calibration is None else self.calibration.to_dict()}

    def plot(self, path: str | os.PathLike) -> Path:
        """Scatter of predicted vs measured latency with the +-10% band, written atomically as PNG."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        measured = np.array([r.measured.median for r in self.rows])
        fig, ax = plt.subplots(figsize=(6, 6), dpi=110)
        top = float(max(measured.max(), max(r.predicted_ms for r in self.rows))) * 1.08
        grid = np.array([0.0, top])
        ax.plot(grid, grid, color="black", lw=1, label="predicted = measured")
        ax.fill_between(grid, grid * 0.9, grid * 1.1, color="grey", alpha=0.2, label="+-10%")
        ax.scatter(measured, [r.predicted_ms for r in self.rows], s=18, label="table sum", color="tab:blue")
        cal = [(r.measured.median, r.calibrated_ms) for r in self.rows if r.calibrated_ms is not None
               and r.split == "holdout"]
        if cal:
            ax.scatter(*zip(*cal), s=22, marker="x", label="calibrated (held out)", color="tab:orange")
        for r in self.rows:
            if not r.name.startswith("random"):
                ax.annotate(r.name, (r.measured.median, r.predicted_ms), fontsize=8, xytext=(4, -10),
                            textcoords="offset points")
        s = self.summary.get("plain_all", {})
        ax.set_title(f"{self.meta.get('backend')} {self.meta.get('img_size')}px batch {self.meta.get('batch')}: "
                     f"MAPE {s.get('mape_pct', float('nan')):.1f}%, tau {s.get('kendall_tau', float('nan')):.3f}",
                     fontsize=9)
        ax.set_xlabel("measured latency (ms, median)")
        ax.set_ylabel("predicted latency (ms)")
        ax.set_xlim(0, top)
        ax.set_ylim(0, top)
        ax.legend(fontsize=8, loc="upper left")
        fig.tight_layout()
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp.png")
        fig.savefig(tmp)
        plt.close(fig)
        os.replace(tmp, target)
        return target

    def write(self, out_dir: str | os.PathLike) -> dict[str, Path]:
        """``validation.csv``, ``validation.png``, ``validation.json`` and (when fitted) ``calibration.json``."""
        out = Path(out_dir)
        paths = {"csv": atomic_write_text(out / "validation.csv", self.to_csv()),
                 "png": self.plot(out / "validation.png"),
                 "json": atomic_write_text(out / "validation.json", json.dumps(self.to_dict(), indent=2))}
        if self.calibration is not None:
            paths["calibration"] = self.calibration.save(out / "calibration.json")
        return paths


def _split(rows: list[NetworkResult], fraction: float, seed: int) -> list[int]:
    """Indices of the random archs used to fit the calibration (presets are always held out)."""
    candidates = [i for i, r in enumerate(rows) if r.name.startswith("random")]
    k = int(round(fraction * len(rows)))
    if fraction <= 0 or len(candidates) < 6:
        return []
    k = min(max(k, 3), len(candidates) - 3)
    return sorted(random.Random(seed + 1).sample(candidates, k))


def validate_measured(table: LatencyTable, measured: Sequence[tuple[str, Arch, Timing]],
                      calibrate_fraction: float = 0.3, seed: int = 0) -> ValidationReport:
    """Validation from already measured networks (e.g. a Core ML bundle timed on a phone)."""
    archs = [a for _, a, _ in measured]
    predicted = table.predict_many(archs)
    rows = [NetworkResult(name, arch, timing, float(p)) for (name, arch, timing), p in zip(measured, predicted)]
    fit_idx = _split(rows, calibrate_fraction, seed)
    calibration = None
    if fit_idx:
        for i in fit_idx:
            rows[i].split = "fit"
        calibration = CalibratedPredictor(table).fit([rows[i].arch for i in fit_idx],
                                                     [rows[i].measured.median for i in fit_idx])
        for r, c in zip(rows, calibration.predict_many(archs)):
            r.calibrated_ms = float(c)
    meta = table.meta.to_dict() | {"num_networks": len(rows), "seed": seed}
    return ValidationReport(meta, rows, calibration).compute()


def measure_networks(table: LatencyTable, backend, archs: Sequence[Arch], passes: int = 1, warmup: bool = False,
                     on_step: Callable[[int, int, int], None] | None = None) -> list[Timing]:
    """Time ``archs`` end to end on ``backend`` in the form and settings of ``table``'s entries.

    The networks are measured round-robin in ``passes`` passes and each one's samples pooled (the remedy of
    :mod:`.builder` for a machine whose speed wanders). ``warmup`` times the first network once and discards it (for a
    process that has just taken the cores back from other work). ``on_step(done, pass_index, arch_index)`` after each.
    """
    from .modules import network_module

    meta = table.meta
    networks = [network_module(arch, meta.batch, meta.form, meta.num_classes, meta.in_chans) for arch in archs]
    if warmup and networks:
        backend.measure_samples(*networks[0])
    samples: list[list[float]] = [[] for _ in archs]
    done = 0
    for pass_index in range(passes):
        for i, (module, example) in enumerate(networks):
            samples[i] += backend.measure_samples(module, example)
            done += 1
            if on_step is not None:
                on_step(done, pass_index, i)
    return [Timing.from_samples(s) for s in samples]


def validate_table(
    table: LatencyTable,
    backend,
    num_archs: int = 50,
    seed: int = 0,
    calibrate_fraction: float = 0.3,
    passes: int = 1,
    on_progress: Callable[[Any], None] | None = None,
) -> ValidationReport:
    """Measure the presets and ``num_archs`` random archs end to end on ``backend`` and compare with ``table``.

    With ``passes > 1`` the networks are measured round-robin in several passes and each one's samples pooled (see
    :mod:`.builder`: the same remedy for a machine whose speed wanders).
    """
    import time

    from .builder import Progress

    meta = table.meta
    if backend.name != meta.backend:
        raise InputError(f"backend: the table was measured with {meta.backend!r}, not {backend.name!r}")
    if meta.threads is not None and backend.threads not in (None, meta.threads):
        raise InputError(f"threads: the table was measured with {meta.threads} threads, not {backend.threads}")
    for key, value in meta.options.items():
        if key != "rotation_mb" and backend.options().get(key) != value:
            raise InputError(f"{key}: the table was measured with {key} {value!r}, the backend has "
                             f"{backend.options().get(key)!r}")
    if passes < 1:
        raise ValueError(f"passes: must be at least 1, got {passes}")
    backend.check()
    archs = validation_archs(table.space, num_archs, seed)
    table.predict_many([a for _, a in archs])  # fail fast on missing entries, before any measuring
    start, total = time.perf_counter(), passes * len(archs)

    def step(done: int, pass_index: int, i: int) -> None:
        if on_progress is not None:
            elapsed = time.perf_counter() - start
            name = archs[i][0]
            label = name if passes == 1 else f"pass {pass_index + 1}/{passes}: {name}"
            on_progress(Progress(done, total, label, elapsed, elapsed / done * (total - done)))

    timings = measure_networks(table, backend, [a for _, a in archs], passes, on_step=step)
    measured = [(name, arch, timing) for (name, arch), timing in zip(archs, timings)]
    report = validate_measured(table, measured, calibrate_fraction, seed)
    report.meta["passes"] = passes
    return report
