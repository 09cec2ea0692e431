"""Validating a table against measured whole networks, and two tables against each other.

A table is only as good as its agreement with end-to-end latency (``docs/design.md``). :func:`validate_table` measures
the space's presets and ``N`` random archs end to end on the table's own backend and settings, under the table's own
measurement protocol (:mod:`slimnas.latency.protocol`: the same statistic the table predicts), and reports per arch
the predicted and measured latency with the measurement's spread over its passes, and overall: mean absolute
percentage error, maximum error, the share of archs within +-5% and +-10% (nn-Meter's measure, Zhang et al., MobiSys
2021) and Kendall's tau (ranking agreement, what the search relies on). It also fits a :class:`CalibratedPredictor`
on a random part of the archs and reports both predictors on the held-out rest (the presets are always held out).

:func:`compare_tables` is the repeatability check: two tables of one space (e.g. built at different times) predict
the same random archs, and their disagreement is reported with the same measures.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from slimnas._io import atomic_write, atomic_write_text
from slimnas.errors import InputError
from slimnas.search_spaces import Arch, SearchSpace

from ._timing import Timing
from .predictor import CalibratedPredictor
from .protocol import (
    Measurement,
    Progress,
    Protocol,
    measure_items,
    session_spread,
    unsettled,
    unsettled_items,
    unsettled_reason,
)
from .table import LatencyTable

if TYPE_CHECKING:
    from .backends import Backend

log = logging.getLogger(__name__)

#: Seconds a session left unsettled waits before it measures again (``Protocol.settle_retries``).
SETTLE_PAUSE_S = 10.0

__all__ = ["validation_archs", "error_metrics", "kendall_tau", "ValidationReport", "validate_table",
           "validate_measured", "NetworkResult", "measure_networks", "compare_tables", "check_backend_matches"]


@dataclass
class NetworkResult:
    """One validation network: its measurement (the protocol's statistic, and its spread) and the predictions."""

    name: str
    arch: Arch
    measured: Measurement
    predicted_ms: float
    split: str = "holdout"
    calibrated_ms: float | None = None

    @property
    def measured_ms(self) -> float:
        return self.measured.value

    @property
    def error_pct(self) -> float:
        return 100.0 * (self.predicted_ms - self.measured_ms) / self.measured_ms

    @property
    def calibrated_error_pct(self) -> float | None:
        if self.calibrated_ms is None:
            return None
        return 100.0 * (self.calibrated_ms - self.measured_ms) / self.measured_ms



def validation_archs(space: SearchSpace, num_archs: int, seed: int) -> list[tuple[str, Arch]]:
    """The family's named archs that lie in the space (:meth:`~slimnas.search_spaces.SpaceFamily.reference_archs`)
    and ``num_archs`` distinct random archs."""
    out: list[tuple[str, Arch]] = list(space.space_family.reference_archs(space))
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
    """Per-network results and summary measures of a validation (and the calibrated predictor, when fitted)."""

    meta: dict[str, Any]
    rows: list[NetworkResult]
    calibration: CalibratedPredictor | None = None
    summary: dict[str, dict[str, float]] = field(default_factory=dict)

    def compute(self) -> ValidationReport:
        rows = self.rows
        hold = [r for r in rows if r.split == "holdout"]
        self.summary = {
            "plain_all": error_metrics([r.predicted_ms for r in rows], [r.measured_ms for r in rows]),
            "plain_holdout": error_metrics([r.predicted_ms for r in hold], [r.measured_ms for r in hold]),
        }
        if self.calibration is not None:
            self.summary["calibrated_holdout"] = error_metrics([r.calibrated_ms for r in hold],
                                                               [r.measured_ms for r in hold])
        self.summary["raw_all"] = error_metrics([r.predicted_ms for r in rows], [r.measured.raw for r in rows])
        self.summary["measurement"] = {
            "n": len(rows), "median_pass_spread_pct": 100 * session_spread([r.measured for r in rows]),
            "disturbed_passes": int(sum(r.measured.disturbed for r in rows)),
            "passes": int(sum(r.measured.passes + r.measured.disturbed for r in rows)),
            "speed_factor": float(rows[0].measured.speed) if rows else 1.0,
            # how settled it was: the sessions it took, and networks left with too many disturbed passes
            "attempts": int(rows[0].measured.attempts) if rows else 1,
            "unsettled_networks": unsettled_items([r.measured for r in rows]),
            # why the kept session was still disturbed as a whole ("" if it was not)
            "unsettled": rows[0].measured.unsettled if rows else "",
        }
        return self

    def to_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        stat = self.meta.get("statistic", "median")
        writer.writerow(["name", "split", "predicted_ms", "calibrated_ms", f"measured_{stat}_ms", "measured_low_ms",
                         "measured_high_ms", "measured_raw_ms", "speed_factor", "passes", "disturbed", "error_pct",
                         "calibrated_error_pct", "arch"])
        for r in self.rows:
            low, high = r.measured.pass_range()
            writer.writerow([r.name, r.split, f"{r.predicted_ms:.4f}",
                             "" if r.calibrated_ms is None else f"{r.calibrated_ms:.4f}",
                             f"{r.measured_ms:.4f}", f"{low:.4f}", f"{high:.4f}", f"{r.measured.raw:.4f}",
                             f"{r.measured.speed:.4f}", r.measured.passes,
                             r.measured.disturbed, f"{r.error_pct:.2f}",
                             "" if r.calibrated_error_pct is None else f"{r.calibrated_error_pct:.2f}",
                             r.arch.to_json()])
        return buffer.getvalue()

    def to_dict(self) -> dict[str, Any]:
        return {"meta": self.meta, "summary": self.summary,
                "calibration": None if self.calibration is None else self.calibration.to_dict()}

    def plot(self, path: str | os.PathLike) -> Path:
        """Predicted against measured latency, one panel per predictor, written atomically as PNG.

        The first panel is the table's plain sum over every network; the second (when a calibration was fitted) the
        calibrated predictor, its fitting networks drawn apart from the held-out ones it is judged on. Horizontal
        error bars span each network's accepted passes (its measurement's own spread); the band is +-10%.
        """
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        panels = [("plain", _table_predictor_name(self.meta), "plain_all")]
        if self.calibration is not None:
            panels.append(("calibrated", "the table + a calibration fitted here", "calibrated_holdout"))
        fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 6), dpi=110, squeeze=False)
        stat = self.meta.get("statistic", "median")
        measured = np.array([r.measured_ms for r in self.rows])
        predicted = [r.predicted_ms for r in self.rows] + [r.calibrated_ms for r in self.rows
                                                           if r.calibrated_ms is not None]
        top = float(max(measured.max(), max(predicted))) * 1.08
        for ax, (kind, title, key) in zip(axes[0], panels):
            grid = np.array([0.0, top])
            ax.plot(grid, grid, color="black", lw=1, label="predicted = measured")
            ax.fill_between(grid, grid * 0.9, grid * 1.1, color="grey", alpha=0.2, label="+-10%")
            for split, marker, color, label in (("holdout", "o", "tab:blue", "held out"),
                                                ("fit", "s", "tab:orange", "fitted on")):
                rows = [r for r in self.rows if r.split == split]
                if not rows or (kind == "plain" and split == "fit" and self.calibration is None):
                    continue
                values = [r.predicted_ms if kind == "plain" else r.calibrated_ms for r in rows]
                x = np.array([r.measured_ms for r in rows])
                spans = np.array([r.measured.pass_range() for r in rows])
                xerr = np.stack([x - spans[:, 0], spans[:, 1] - x])
                if kind == "plain" and self.calibration is None:
                    label = "networks"
                elif kind == "plain":
                    label = f"{label} by the calibration"
                ax.errorbar(x, values, xerr=np.clip(xerr, 0, None), fmt=marker, ms=4, color=color, ecolor=color,
                            elinewidth=0.8, alpha=0.85, label=label)
            for r in self.rows:
                if not r.name.startswith("random"):
                    y = r.predicted_ms if kind == "plain" else r.calibrated_ms
                    ax.annotate(r.name, (r.measured_ms, y), fontsize=8, xytext=(4, -10), textcoords="offset points")
            s = self.summary.get(key, {})
            nan = float("nan")
            held = " (held out)" if kind != "plain" else ""
            speed = self.summary.get("measurement", {}).get("speed_factor", 1.0)
            at = "" if speed == 1.0 else f"; measured / x{speed:.3f} (reference networks now vs. at the build)"
            ax.set_title(f"{title}\n{self.meta.get('backend')} {self.meta.get('img_size')}px batch "
                         f"{self.meta.get('batch')}{at}\n{s.get('n', 0)} networks{held}: "
                         f"MAPE {s.get('mape_pct', nan):.1f}%, within 10% {100 * s.get('within_10pct', nan):.0f}%, "
                         f"tau {s.get('kendall_tau', nan):.3f}",
                         fontsize=9)
            ax.set_xlabel(f"measured latency (ms, {stat}; bars: spread over passes)")
            ax.set_ylabel("predicted latency (ms)")
            ax.set_xlim(0, top)
            ax.set_ylim(0, top)
            ax.legend(fontsize=8, loc="upper left")
        fig.tight_layout()
        try:
            return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
        finally:
            plt.close(fig)

    def write(self, out_dir: str | os.PathLike) -> dict[str, Path]:
        """``validation.csv``, ``validation.png``, ``validation.json`` and (when fitted) ``calibration.json``."""
        out = Path(out_dir)
        paths = {"csv": atomic_write_text(out / "validation.csv", self.to_csv()),
                 "png": self.plot(out / "validation.png"),
                 "json": atomic_write_text(out / "validation.json", json.dumps(self.to_dict(), indent=2))}
        if self.calibration is not None:
            paths["calibration"] = self.calibration.save(out / "calibration.json")
        return paths


def _table_predictor_name(meta: dict[str, Any]) -> str:
    """Which predictor a table is, in words (for plot titles)."""
    if meta.get("calibration"):
        return f"table: parts timed alone, calibrated on {meta['calibration'].get('networks')} networks"
    if meta.get("harness") == "context":
        return "table: parts timed in context, working-set term"
    return "table: sum of parts timed alone"


def _split(rows: list[NetworkResult], fraction: float, seed: int) -> list[int]:
    """Indices of the random archs used to fit the calibration (presets are always held out)."""
    candidates = [i for i, r in enumerate(rows) if r.name.startswith("random")]
    k = int(round(fraction * len(rows)))
    if fraction <= 0 or len(candidates) < 6:
        return []
    k = min(max(k, 3), len(candidates) - 3)
    return sorted(random.Random(seed + 1).sample(candidates, k))


def validate_measured(table: LatencyTable, measured: Sequence[tuple[str, Arch, Measurement | Timing]],
                      calibrate_fraction: float = 0.3, seed: int = 0) -> ValidationReport:
    """Validation from already measured networks (e.g. a Core ML bundle timed on a phone: plain timings are taken
    at the table's statistic, as one pass)."""
    archs = [a for _, a, _ in measured]
    predicted = table.predict_many(archs)
    rows = [NetworkResult(name, arch, _as_measurement(timing, table.stat), float(p))
            for (name, arch, timing), p in zip(measured, predicted)]
    fit_idx = _split(rows, calibrate_fraction, seed)
    calibration = None
    if fit_idx:
        for i in fit_idx:
            rows[i].split = "fit"
        calibration = CalibratedPredictor(table).fit([rows[i].arch for i in fit_idx],
                                                     [rows[i].measured_ms for i in fit_idx])
        for r, c in zip(rows, calibration.predict_many(archs)):
            r.calibrated_ms = float(c)
    meta = table.meta.to_dict() | {"num_networks": len(rows), "seed": seed, "statistic": table.stat}
    return ValidationReport(meta, rows, calibration).compute()


def _as_measurement(timing: Measurement | Timing, stat: str) -> Measurement:
    if isinstance(timing, Measurement):
        return timing
    value = timing.get(stat)
    return Measurement(value=value, timing=timing, passes=1, disturbed=0, pass_values=(value,), accepted=(True,),
                       pooled=(True,))


def check_backend_matches(table: LatencyTable, backend: Backend) -> None:
    """Raise ``InputError`` naming the first setting in which ``backend`` differs from the table's measurements."""
    from .backends import backend_options

    meta = table.meta
    if backend.name != meta.backend:
        raise InputError(f"backend: the table was measured with {meta.backend!r}, not {backend.name!r}")
    if meta.threads is not None and backend.threads not in (None, meta.threads):
        raise InputError(f"threads: the table was measured with {meta.threads} threads, not {backend.threads}")
    for key, value in backend_options(meta.options).items():
        if backend.options().get(key) != value:
            raise InputError(f"{key}: the table was measured with {key} {value!r}, the backend has "
                             f"{backend.options().get(key)!r}")


def backend_for(table: LatencyTable) -> Backend:
    """A backend with the table's own settings (backend, threads, dtype, options)."""
    from .backends import backend_options, get_backend

    meta = table.meta
    return get_backend(meta.backend, threads=meta.threads, dtype=meta.dtype, **backend_options(meta.options))


def measure_networks(table: LatencyTable, backend: Backend, archs: Sequence[Arch], protocol: Protocol | None = None,
                     warmup: bool = False, names: Sequence[str] | None = None,
                     on_progress: Callable[[Progress], None] | None = None) -> list[Measurement]:
    """Time ``archs`` end to end on ``backend`` in the form and settings of ``table``'s entries, under ``protocol``
    (default: the table's own, so that measurements estimate what the table predicts).

    When the table has reference networks (:mod:`slimnas.latency.reference`) and the protocol asks for them, they are
    timed alongside, and each measurement's ``value`` is brought to the table's machine speed (``raw`` keeps what was
    measured, ``speed`` the factor). ``warmup`` times the first network for one pass and discards it (for a process
    that has just taken the cores back from other work: the first timings after Ray Tune's workers ran up to 1.9x
    slow).

    A session left unsettled (:func:`~slimnas.latency.protocol.unsettled`, judged against the spread the table's
    build recorded: the machine disturbed for much of it) is measured again after :data:`SETTLE_PAUSE_S`, up to
    ``protocol.settle_retries`` times; the first settled attempt is returned, or else the one with the fewest
    unsettled networks and then the narrowest spread (the first among equals), each measurement's ``attempts`` saying
    how many were made.
    """
    from .backends import building
    from .modules import network_module
    from .reference import ReferenceClock, speed_factor

    meta = table.meta
    protocol = protocol or meta.measurement_protocol()
    if protocol.statistic != table.stat:
        raise InputError(f"protocol.statistic: the table predicts the {table.stat}; measure that, not the "
                         f"{protocol.statistic}")
    references = meta.reference_archs() if protocol.reference_networks else []
    with building(backend):
        networks = [network_module(a, meta.batch, meta.form, meta.num_classes, meta.in_chans) for a in archs]
        refs = [network_module(a, meta.batch, meta.form, meta.num_classes, meta.in_chans) for a in references]
    if warmup and networks:
        backend.sample(*networks[0], protocol)
    items = [(lambda net=net: net) for net in networks]

    def session() -> list[Measurement]:
        clock = ReferenceClock([(lambda net=net: net) for net in refs], backend, protocol,
                               protocol.reference_every_s, every_pass=False)
        measured = measure_items(items, backend, protocol, names=names, on_progress=on_progress, tick=clock.tick)
        if not refs:
            return measured
        clock.tick(force=True)  # and once more at the end, so that the session's speed spans all of it
        factor = speed_factor(clock.latencies(pooling=meta.reference_pooling()), meta.reference_ms())
        return [m.at_speed(factor) for m in measured]

    usual = meta.notes.get("network_pass_spread")
    usual = float(usual) if isinstance(usual, (int, float)) else None

    def disturbed(attempt: list[Measurement]) -> bool:
        return unsettled(attempt, protocol, usual)

    attempts = [session()]
    while (reason := unsettled_reason(attempts[-1], protocol, usual)) and len(attempts) <= protocol.settle_retries:
        log.warning("the machine was disturbed for much of the measurement (of the %d networks, %s); measuring again "
                    "in %g s (retry %d of %d)", len(networks), reason, SETTLE_PAUSE_S, len(attempts),
                    protocol.settle_retries)
        time.sleep(SETTLE_PAUSE_S)
        attempts.append(session())
    best = min(attempts, key=lambda a: (disturbed(a), unsettled_items(a), session_spread(a)))
    reason = unsettled_reason(best, protocol, usual) or ""
    if reason:
        log.warning("the machine was disturbed for much of every one of %d measurement(s) of %d networks; kept the "
                    "most settled (%s): its figures say more about the machine than about the networks",
                    len(attempts), len(networks), reason)
    return [dataclasses.replace(m, attempts=len(attempts), unsettled=reason) for m in best]


def validate_table(
    table: LatencyTable,
    backend: Backend,
    num_archs: int = 50,
    seed: int = 0,
    calibrate_fraction: float = 0.3,
    protocol: Protocol | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> ValidationReport:
    """Measure the presets and ``num_archs`` random archs end to end on ``backend`` and compare with ``table``.

    ``protocol`` defaults to the table's own; one with another statistic is refused (a prediction of the median
    compared with a measured minimum says nothing about the table).
    """
    check_backend_matches(table, backend)
    if not isinstance(num_archs, int) or not 0 <= num_archs <= 100_000:
        raise InputError(f"num_archs: must be an integer from 0 to 100000, got {num_archs!r}")
    backend.check()
    archs = validation_archs(table.space, num_archs, seed)
    if not archs:
        raise InputError("num_archs: nothing to validate on (the space has no presets; ask for some random archs)")
    table.predict_many([a for _, a in archs])  # fail fast on missing entries, before any measuring
    measured = measure_networks(table, backend, [a for _, a in archs], protocol, names=[n for n, _ in archs],
                                on_progress=on_progress)
    report = validate_measured(table, [(n, a, m) for (n, a), m in zip(archs, measured)], calibrate_fraction, seed)
    report.meta["protocol"] = (protocol or table.meta.measurement_protocol()).to_dict()
    return report


def compare_tables(table: LatencyTable, other: LatencyTable, num_archs: int = 50, seed: int = 0) -> dict[str, Any]:
    """How far two tables of one space disagree on the presets and ``num_archs`` random archs (repeatability: the
    same table built twice at different times). Measures as :func:`error_metrics`, ``table`` taken as the
    prediction and ``other`` as the reference; when both recorded the same reference networks, ``other`` is first
    brought to ``table``'s machine speed (``speed_factor``; the ``raw`` entry compares them as built)."""
    from .reference import speed_factor

    if table.space.to_dict() | {"name": ""} != other.space.to_dict() | {"name": ""}:
        raise InputError("--against: the two tables are for different search spaces")
    for key in ("img_size", "batch", "num_classes", "in_chans"):
        if getattr(table.meta, key) != getattr(other.meta, key):
            raise InputError(f"--against: the tables differ in {key} ({getattr(table.meta, key)} vs "
                             f"{getattr(other.meta, key)})")
    if not isinstance(num_archs, int) or not 1 <= num_archs <= 100_000:
        raise InputError(f"num_archs: must be an integer from 1 to 100000, got {num_archs!r}")
    archs = [a for _, a in validation_archs(table.space, num_archs, seed)]
    mine, theirs = table.predict_many(archs), other.predict_many(archs)
    factor = 1.0
    pooling = [table.meta.reference_pooling(), other.meta.reference_pooling()]
    if table.meta.reference and (other.meta.reference or {}).get("archs") == table.meta.reference.get("archs"):
        factor = speed_factor(other.meta.reference_ms(), table.meta.reference_ms())
        if pooling[0] != pooling[1]:
            log.warning("the two tables pooled their reference networks differently (%s and %s: one was built "
                        "before 2026-12-01), so their speed factor compares unlike figures; the raw comparison "
                        "does not depend on it", *pooling)
    metrics = error_metrics(mine, theirs / factor)
    return {"archs": len(archs), "statistic": [table.stat, other.stat],
            "created": [table.meta.created, other.meta.created], "speed_factor": factor,
            "reference_pooling": pooling, **metrics, "raw": error_metrics(mine, theirs)}
