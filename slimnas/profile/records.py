"""The records of a latency breakdown, and how they are aggregated and written.

A profiler (:mod:`.torch_profiler`, :mod:`.ort_profiler`) turns each profiled call into :class:`OpSample` rows
(operator, category, unit, time; the time between operators as ``framework`` samples, the profiler's own cost
removed); :func:`aggregate` turns the samples of the accepted calls into a :class:`ModelProfile`: per category and per
unit the mean time per call, their shares of the profiled sum, the overhead removed, and the comparison with the whole
network's latency measured without a profiler (:mod:`slimnas.latency.protocol`).
:func:`write_report` writes a :class:`ProfileReport` as CSV and JSON. Plain Python.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from slimnas._io import atomic_write_text

from .categories import CATEGORIES
from .structure import Unit

__all__ = ["OpSample", "ProfilerCost", "ProfiledCalls", "CategoryRow", "BlockRow", "OpRow", "ModelProfile",
           "ProfileReport", "aggregate", "write_report", "CATEGORY_CSV", "BLOCK_CSV", "REPORT_JSON"]

CATEGORY_CSV, BLOCK_CSV, REPORT_JSON = "categories.csv", "blocks.csv", "profile.json"


@dataclass(frozen=True)
class OpSample:
    """One operator's time in one profiled call."""

    op: str  # the operator (``aten::linear``, ONNX ``Gemm``)
    category: str  # one of CATEGORIES
    unit: Unit  # where it ran
    ms: float
    known: bool = True  # False: the operator has no category of its own (it is in "other")


@dataclass(frozen=True)
class ProfilerCost:
    """What recording costs a call, estimated on a calibration network (never on the profiled model): the wall time
    one recorded operator event adds, and what one module scope adds (its forward hooks' Python and its event)."""

    per_event_us: float
    per_scope_us: float
    how: str  # how it was estimated, in words


@dataclass(frozen=True)
class ProfiledCalls:
    """What a profiler gives for one model: each profiled call's samples (operators, and the time between them as
    ``framework`` samples where the profiler sees it), which calls are kept (not disturbed), each profiled call's wall
    time, the unprofiled calls timed between them (ms), the model's units, and per call the profiler overhead removed
    from the samples (ms) and the events recorded."""

    samples: list[list[OpSample]]
    kept: list[bool]
    walls: list[float]
    plain: list[float]  # plain[i]: the unprofiled call just before profiled call i
    units: list[Unit]
    removed: list[float] = field(default_factory=list)  # removed[i]: overhead subtracted from call i's samples (ms)
    events: list[int] = field(default_factory=list)  # events[i]: operator events recorded in call i
    scopes: list[int] = field(default_factory=list)  # scopes[i]: module scopes opened in call i
    cost: ProfilerCost | None = None  # the per-event cost subtracted (None: nothing subtracted)


@dataclass(frozen=True)
class CategoryRow:
    model: str
    category: str
    ms: float  # mean time per call
    share: float  # of the profiled sum (the shares of a model sum to 1)


@dataclass(frozen=True)
class BlockRow:
    model: str
    stage: int | None
    block: str  # block index within the stage, or stem / downsample / a head module / top
    module: str  # qualified module name
    type_name: str
    ms: float
    share: float


@dataclass(frozen=True)
class OpRow:
    """One operator name's total time per call, with its category (the JSON lists them; "other" ones are named)."""

    op: str
    category: str
    ms: float
    calls: float  # occurrences per network call


@dataclass(frozen=True)
class ModelProfile:
    """One model's breakdown on one backend."""

    model: str  # as the user named it
    source: str  # timm | preset | arch | winner
    backend: str
    device: str
    threads: int | None
    batch: int
    img_size: int
    form: str  # the module form profiled (slimnas networks: fused | eager; timm: eager)
    measured_ms: float  # the whole network's latency, measured without the profiler (protocol statistic)
    measured_spread: float  # the measurement's relative spread over its passes
    unprofiled_ms: float  # the median of the unprofiled calls interleaved with the profiled ones
    agreement: float  # median over kept calls of (categories' sum / the unprofiled call next to it) - 1
    profiled_ms: float  # the sum of the categories, framework included (mean per profiled call)
    profiled_wall_ms: float  # a profiled call's wall time, profiler included (mean)
    runs: int  # profiled calls kept
    dropped_runs: int  # profiled calls dropped as disturbed
    statistic: str
    categories: tuple[CategoryRow, ...]
    blocks: tuple[BlockRow, ...]
    ops: tuple[OpRow, ...]
    unknown_ops: tuple[str, ...]  # operators in "other"
    notes: tuple[str, ...] = ()
    overhead_removed_ms: float = 0.0  # profiler overhead subtracted from the samples, mean per kept call
    events_per_call: float = 0.0  # operator events recorded per profiled call (mean over kept calls)
    scopes_per_call: float = 0.0  # module scopes opened per profiled call
    cost: ProfilerCost | None = None  # the per-event cost behind overhead_removed_ms

    @property
    def profiler_overhead_ms(self) -> float:
        """What the profiler added to a call's wall time, observed (profiled wall time minus the unprofiled calls');
        compare ``overhead_removed_ms``, the estimate subtracted from the categories."""
        return self.profiled_wall_ms - self.unprofiled_ms

    def category_ms(self) -> dict[str, float]:
        return {row.category: row.ms for row in self.categories}

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["profiler_overhead_ms"] = self.profiler_overhead_ms
        return out


@dataclass(frozen=True)
class ProfileReport:
    """Several models profiled on one backend, and how."""

    backend: str
    device: str
    created: str
    command: str
    protocol: dict[str, Any]
    versions: dict[str, str]
    models: tuple[ModelProfile, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "device": self.device, "created": self.created, "command": self.command,
                "protocol": self.protocol, "versions": self.versions,
                "models": [m.to_dict() for m in self.models]}


def aggregate(profiled: ProfiledCalls, *, model: str, source: str, backend: str, device: str, threads: int | None,
              batch: int, img_size: int, form: str, measured_ms: float, measured_spread: float, statistic: str,
              notes: Sequence[str] = ()) -> ModelProfile:
    """The profile from each profiled call's samples, keeping the calls ``profiled.kept`` says; every unit gets a row
    (zero when nothing ran in it), and units seen only in the samples (the top level) follow."""
    samples, kept, units, wall_ms = profiled.samples, profiled.kept, profiled.units, profiled.walls
    calls = [s for s, ok in zip(samples, kept) if ok]
    n = max(len(calls), 1)
    by_category = dict.fromkeys(CATEGORIES, 0.0)
    by_unit: dict[Unit, float] = dict.fromkeys(units, 0.0)
    by_op: dict[tuple[str, str], list[float]] = {}
    unknown: dict[str, None] = {}
    for call in calls:
        for s in call:
            by_category[s.category] += s.ms / n
            by_unit[s.unit] = by_unit.get(s.unit, 0.0) + s.ms / n
            entry = by_op.setdefault((s.op, s.category), [0.0, 0.0])
            entry[0] += s.ms / n
            entry[1] += 1.0 / n
            if not s.known:
                unknown[s.op] = None
    total = sum(by_category.values())

    def share(ms: float) -> float:
        return ms / total if total > 0 else 0.0

    categories = tuple(CategoryRow(model, c, ms, share(ms)) for c, ms in by_category.items())
    blocks = tuple(BlockRow(model, u.stage, u.block, u.module, u.type_name, ms, share(ms))
                   for u, ms in by_unit.items())
    ops = tuple(sorted((OpRow(op, c, v[0], v[1]) for (op, c), v in by_op.items()), key=lambda r: -r.ms))
    kept_wall = [w for w, ok in zip(wall_ms, kept) if ok]
    pairs = [(sum(x.ms for x in call), plain) for call, plain, ok in zip(samples, profiled.plain, kept) if ok]
    plain_kept = sorted(p for _, p in pairs) or [measured_ms]
    ratios = sorted(s / p for s, p in pairs if p > 0) or [total / measured_ms if measured_ms > 0 else float("nan")]

    def mean_kept(values: Sequence[float]) -> float:
        chosen = [v for v, ok in zip(values, kept) if ok]
        return sum(chosen) / len(chosen) if chosen else 0.0
    return ModelProfile(model=model, source=source, backend=backend, device=device, threads=threads, batch=batch,
                        img_size=img_size, form=form, measured_ms=measured_ms, measured_spread=measured_spread,
                        unprofiled_ms=_median(plain_kept), agreement=_median(ratios) - 1.0,
                        profiled_ms=total, profiled_wall_ms=sum(kept_wall) / max(len(kept_wall), 1),
                        runs=len(calls), dropped_runs=len(samples) - len(calls), statistic=statistic,
                        categories=categories, blocks=blocks, ops=ops, unknown_ops=tuple(unknown),
                        notes=tuple(notes), overhead_removed_ms=mean_kept(profiled.removed),
                        events_per_call=mean_kept(profiled.events), scopes_per_call=mean_kept(profiled.scopes),
                        cost=profiled.cost)


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _csv(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def category_csv(report: ProfileReport) -> str:
    """One row per model and category: ``model, category, ms, share``."""
    return _csv(["model", "category", "ms", "share"],
                [[r.model, r.category, f"{r.ms:.6f}", f"{r.share:.6f}"] for m in report.models for r in m.categories])


def block_csv(report: ProfileReport) -> str:
    """One row per model and unit: ``model, stage, block, module, type, ms, share``."""
    return _csv(["model", "stage", "block", "module", "type", "ms", "share"],
                [[r.model, "" if r.stage is None else r.stage, r.block, r.module, r.type_name, f"{r.ms:.6f}",
                  f"{r.share:.6f}"] for m in report.models for r in m.blocks])


def write_report(report: ProfileReport, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``categories.csv``, ``blocks.csv`` and ``profile.json`` into ``out_dir`` (each atomically)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return {"categories": atomic_write_text(out / CATEGORY_CSV, category_csv(report)),
            "blocks": atomic_write_text(out / BLOCK_CSV, block_csv(report)),
            "json": atomic_write_text(out / REPORT_JSON, json.dumps(report.to_dict(), indent=1) + "\n")}
