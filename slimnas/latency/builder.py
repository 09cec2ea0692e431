"""Building a latency table: time every part of a space on one backend under the measurement protocol, resumably.

Everything is timed one at a time in one process (parallel timing on one device corrupts itself), round-robin in the
protocol's interleaved passes, disturbed passes re-measured (:mod:`slimnas.latency.protocol`): the covering networks
of the ``context`` harness (:mod:`slimnas.latency.context`), and the parts timed alone (the ``isolated`` harness, or
what a partial cover leaves), each part rebuilt for each pass (bounded memory: an ``l7`` part with its weight-rotation
copies holds up to 32 MiB). Every pass is appended to a journal next to the output (``<out>.partial.jsonl``, one JSON
line per item and pass, flushed and fsynced) whose first line records the table's identity, protocol and cover. An
interrupted build run again with the same settings resumes from the journal; a journal made under other settings is
refused (never mixed). At the end the table is written atomically and the journal removed, or kept as
``<out>.journal.jsonl`` when asked (``keep_journal``: every sample of the build, for analyses such as
``benchmarks/context_heldout.py``).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import torch
from torch import nn

from slimnas.errors import InputError
from slimnas.search_spaces import Arch, SearchSpace

from ._parts import Part, parts_of_space
from ._timing import Timing
from .backends import Backend, building, table_options
from .context import FILLS, HARNESSES, combine, covering_archs, fit_uncovered, journal_record, measure_in_context
from .modules import FORMS, network_module, part_module, part_weight_mib, resolve_rotation_mb
from .predictor import CalibratedPredictor, fit_part_calibration
from .protocol import ContextSamples, Progress, Protocol, measure_items, session_spread
from .reference import QUIET, ReferenceClock, reference_archs
from .table import LatencyTable, TableMeta
from .validate import validation_archs

__all__ = ["build_table", "Progress", "journal_path", "table_meta"]

log = logging.getLogger(__name__)

#: Whole networks a table of parts timed alone is calibrated on per part kind (groups): the learning curve on ``tiny``
#: with ONNX Runtime (``docs/benchmarks.md``) reached 95% within +-10% at 20 and flattened after; 24 leaves a margin.
DEFAULT_CALIBRATE_NETWORKS = 24
#: A space of at most this many parts is calibrated per part (one coefficient each, :func:`fit_part_calibration`) on
#: PART_NETWORKS_PER_PART networks per part: on ``tiny`` (144 parts) with ONNX Runtime, tau against measurements made
#: the day before rose with the networks up to 150-200 and then flattened (``docs/benchmarks.md``). Larger spaces
#: would need too many networks and keep the per-group calibration on DEFAULT_CALIBRATE_NETWORKS.
PER_PART_MAX_PARTS = 300
PART_NETWORKS_PER_PART = 1.4


def default_calibrate_networks(parts: int) -> int:
    """The whole networks a complete table of ``parts`` parts timed alone is calibrated on by default."""
    return math.ceil(PART_NETWORKS_PER_PART * parts) if parts <= PER_PART_MAX_PARTS else DEFAULT_CALIBRATE_NETWORKS


def resolve_harness(harness: str | None, backend: Backend) -> str:
    """``harness``, or the backend's default: ``context`` where it can time parts inside a running network."""
    return harness or ("context" if backend.supports_context else "isolated")


def resolve_calibrate_networks(calibrate_networks: int | None, space: SearchSpace, harness: str,
                               num_classes: int = 1000, in_chans: int = 3, complete: bool = True) -> int:
    """``calibrate_networks``, or its default: :func:`default_calibrate_networks` for a ``complete`` table of parts
    timed alone, else 0 (the builder and the pipeline's table stage both ask here)."""
    if calibrate_networks is not None:
        return calibrate_networks
    if harness != "isolated" or not complete:
        return 0
    return default_calibrate_networks(len(parts_of_space(space, num_classes, in_chans)))


#: The calibration networks' seed (validation uses small seeds: the sets differ).
CALIBRATION_SEED = 20_000


def calibration_archs(space: SearchSpace, count: int) -> list[Arch]:
    """The seeded whole networks a calibration of ``count`` networks times: fewer where the space has fewer distinct
    archs (their number is what the table records)."""
    return [a for name, a in validation_archs(space, count, CALIBRATION_SEED) if name.startswith("random")]


#: The largest batch a table may be built for (a bound that catches typos like 1e12 before any memory is allocated).
MAX_BATCH = 65536


def journal_path(out: str | os.PathLike) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".partial.jsonl")


def kept_journal_path(out: str | os.PathLike) -> Path:
    """Where a finished build keeps its journal when asked to (``keep_journal``)."""
    out = Path(out)
    return out.with_name(out.name + ".journal.jsonl")


def table_meta(space: SearchSpace, backend: Backend, batch: int, form: str, num_classes: int = 1000,
               in_chans: int = 3, rotation_mb: float = 0.0, protocol: Protocol | None = None,
               harness: str = "isolated") -> TableMeta:
    info = backend.describe()
    return TableMeta(
        backend=backend.name, device=info["device"], batch=batch, dtype=backend.dtype, img_size=space.img_size,
        threads=backend.threads, space=space.to_dict(), form=form, num_classes=num_classes, in_chans=in_chans,
        options=table_options(backend, rotation_mb), versions=info["versions"],
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        protocol=(protocol or Protocol()).to_dict(), harness=harness,
    )


@dataclass
class _Journal:
    """The build's journal: what each stage measured, by ``(item, pass)``."""

    isolated: dict[tuple[Part, int], list[float]] = field(default_factory=dict)
    context: dict[tuple[int, int], ContextSamples] = field(default_factory=dict)
    overhead: dict[tuple[int, int], list[float]] = field(default_factory=dict)
    reference: dict[int, list[tuple[str, list[float]]]] = field(default_factory=dict)
    calibration: dict[tuple[int, int], list[float]] = field(default_factory=dict)


def _read_journal(path: Path, header_wanted: dict) -> _Journal:
    lines = path.read_text().splitlines()
    try:
        header = json.loads(lines[0]) if lines else {}
    except json.JSONDecodeError:
        header = {}
    if header != json.loads(json.dumps(header_wanted)):
        raise InputError(f"lut: {path} holds measurements made under other settings; remove it or build with "
                         f"--no-resume")
    journal = _Journal()
    for number, line in enumerate(lines[1:], start=2):
        try:
            record = json.loads(line)
            key = (int(record["index"]), int(record["pass"]))
            if record["stage"] == "isolated":
                journal.isolated[(Part(*record["part"]), key[1])] = [float(v) for v in record["samples"]]
            elif record["stage"] == "context":
                journal.context[key] = ContextSamples.from_dict(record)
            elif record["stage"] == "overhead":
                journal.overhead[key] = [float(v) for v in record["samples"]]
            elif record["stage"] == "calibration":
                journal.calibration[key] = [float(v) for v in record["samples"]]
            elif record["stage"] == "reference":
                journal.reference.setdefault(key[0], []).append((str(record.get("during", "")),
                                                                 [float(v) for v in record["samples"]]))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            # A line cut short by the interruption: everything before it is intact.
            log.warning("lut: ignoring unreadable line %d of %s", number, path)
    return journal


class _Empty(nn.Module):
    """The empty part: what timing one call costs on a backend, besides the part (see :func:`build_table`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 1.0


def build_table(
    space: SearchSpace,
    backend: Backend,
    out: str | os.PathLike,
    batch: int = 1,
    form: str | None = None,
    num_classes: int = 1000,
    in_chans: int = 3,
    parts: Sequence[Part] | None = None,
    protocol: Protocol | None = None,
    rotation_mb: float | str = 0.0,
    harness: str | None = None,
    cover: int = 2,
    max_networks: int = 96,
    calibrate_networks: int | None = None,
    fill: str = "fitted",
    keep_journal: bool = False,
    resume: bool = True,
    overwrite: bool = False,
    on_progress: Callable[[Progress], None] | None = None,
) -> LatencyTable:
    """Time every part of ``space`` (or ``parts``) on ``backend`` and write the table to ``out`` (Parquet).

    ``form`` defaults to the backend's (``fused`` for torch, ``eager`` for ONNX Runtime and Core ML); ``protocol``
    (default :class:`Protocol`) says how anything is timed. ``harness`` (default: ``context`` where the backend
    supports it, else ``isolated``) says where parts are timed: inside ``cover``-fold covering networks (at most
    ``max_networks``; :mod:`slimnas.latency.context`), or each alone in a loop, then with ``rotation_mb`` (MiB, or
    ``"auto"``) of rotating weight copies (:mod:`slimnas.latency.modules`) and the cost of timing an empty module
    taken off every part and added once per network (``overhead_ms``), then ``calibrate_networks`` whole networks
    timed and a calibration fitted on them stored as the table's predictor (``TableMeta.calibration``): one
    coefficient per part (:func:`~slimnas.latency.predictor.fit_part_calibration`) when there are at least as many
    networks as parts, else one per group of part kinds (:class:`~slimnas.latency.CalibratedPredictor`). Default for a
    complete table of parts timed alone: :func:`default_calibrate_networks` (1.4 networks per part up to 300 parts,
    else 24; decided by learning curves: ``docs/benchmarks.md``), else 0. ``fill`` says how a partial cover's left-out
    parts get entries: ``fitted`` from the covered parts of their kind and stage (falling back to ``isolated`` where a
    kind and stage has too few), ``isolated`` by timing every part alone too (:mod:`slimnas.latency.context`, step 3).
    ``keep_journal`` keeps the journal of a finished build as ``<out>.journal.jsonl`` (else it is removed).
    ``on_progress`` is called after each measured pass; raising from it (e.g. ``KeyboardInterrupt``) stops the
    build, and the next call with ``resume=True`` continues from the journal.
    """
    form = form or backend.default_form
    protocol = protocol or Protocol()
    harness = resolve_harness(harness, backend)
    if form not in FORMS:
        raise InputError(f"form: expected one of {FORMS}, got {form!r}")
    if harness not in HARNESSES:
        raise InputError(f"harness: expected one of {HARNESSES}, got {harness!r}")
    if fill not in FILLS:
        raise InputError(f"fill: expected one of {FILLS}, got {fill!r}")
    if harness == "context" and not backend.supports_context:
        raise InputError(f"harness: backend {backend.name} cannot time parts inside a running network; use "
                         f"'isolated'")
    if not isinstance(batch, int) or not 1 <= batch <= MAX_BATCH:
        raise InputError(f"batch: must be an integer from 1 to {MAX_BATCH}, got {batch!r}")
    calibrate_networks = resolve_calibrate_networks(calibrate_networks, space, harness, num_classes, in_chans,
                                                    complete=parts is None)
    for name, value, low in (("cover", cover, 1), ("max_networks", max_networks, 1),
                             ("calibrate_networks", calibrate_networks, 0)):
        if not isinstance(value, int) or not low <= value <= 100_000:
            raise InputError(f"{name}: must be an integer from {low} to 100000, got {value!r}")
    rotation_mb = resolve_rotation_mb(rotation_mb, space, form, num_classes, in_chans)
    out = Path(out)
    if out.exists() and not overwrite:
        raise InputError(f"lut: {out} exists; choose another --out or pass --force to replace it")
    backend.check()
    meta = table_meta(space, backend, batch, form, num_classes, in_chans, rotation_mb, protocol, harness)
    todo = list(parts) if parts is not None else parts_of_space(space, num_classes, in_chans)
    archs = covering_archs(space, num_classes, in_chans, cover, max_networks) if harness == "context" else []
    notes_context = {"cover": cover, "max_networks": max_networks, "fill": fill} if archs else {}
    header = {"identity": meta.identity(), "protocol": meta.protocol,
              "context": {"cover": cover, "max_networks": max_networks} if archs else None,
              "calibrate_networks": calibrate_networks}
    journal = journal_path(out)
    done = _Journal()
    if journal.exists() and resume:
        done = _read_journal(journal, header)
        log.info("lut: resuming from %s", journal)
    else:
        journal.parent.mkdir(parents=True, exist_ok=True)
        journal.write_text(json.dumps(header) + "\n")
    with journal.open("a") as handle:
        stages = _Stages(space, backend, protocol, batch, form, num_classes, in_chans, done, handle, on_progress)
        entries, passes, overhead = {}, {}, 0.0
        slope = at = 0.0
        repeat_factors: dict[str, float] = {}
        result = None
        if archs:
            result = stages.in_context(archs, todo)
            entries = {p: t for p, t in result.entries.items() if p in set(todo)}
            overhead, slope, at = result.overhead_ms, result.slope_per_mib, result.at_mib
            repeat_factors = result.repeat_factors
        alone = [p for p in todo if p not in entries]
        fitted = (fit_uncovered(result.entries, alone, protocol.statistic)
                  if result is not None and alone and fill == "fitted" else None)
        if fitted is not None:
            entries.update(fitted[0])
            stages.notes.update(parts_fitted=len(alone), fit_loo_error_pct=fitted[1])
            alone = []
        if result is not None and alone:
            stages.notes["parts_scaled_from_isolated"] = len(alone)
        if alone:
            isolated, passes = stages.alone(todo if result else alone, rotation_mb)  # ratios need covered parts too
            if result:
                entries = combine(result, isolated, protocol.statistic)
            else:
                overhead = stages.empty_call()
                entries = {p: _minus(t, overhead) for p, t in isolated.items()}
        plain = replace(meta, overhead_ms=float(overhead), context_slope_per_mib=slope, context_at_mib=at,
                        repeat_factors=repeat_factors)
        calibration = stages.calibration(LatencyTable({p: entries[p] for p in todo}, plain, weights=stages.weights),
                                         calibrate_networks) if calibrate_networks else None
        reference = stages.reference("calibration" if calibration else "context" if result else None)
    meta = replace(plain, created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                   notes=notes_context | stages.notes, reference=reference, calibration=calibration)
    table = LatencyTable({p: entries[p] for p in todo}, meta, passes=passes, weights=stages.weights)
    table.save(out)
    if warning := meta.disturbed_build():
        log.warning("%s: %s", out, warning)
    if keep_journal:
        os.replace(journal, kept_journal_path(out))
    else:
        journal.unlink(missing_ok=True)
    return table


class _Stages:
    """The stages of a build, each measured under the protocol with the reference clock running and every pass
    journaled (see :func:`build_table`)."""

    def __init__(self, space: SearchSpace, backend: Backend, protocol: Protocol, batch: int, form: str,
                 num_classes: int, in_chans: int, done: _Journal, handle, on_progress) -> None:
        self.space, self.backend, self.protocol = space, backend, protocol
        self.shape = (batch, form, num_classes, in_chans)
        self.done, self.handle, self.on_progress = done, handle, on_progress
        self.notes: dict[str, object] = {}
        self.weights = {p: part_weight_mib(p, space.img_size, form, space.family)
                        for p in parts_of_space(space, num_classes, in_chans)}
        self.references = reference_archs(space, protocol.reference_networks)
        with building(backend):
            built = [network_module(a, *self.shape) for a in self.references]
        self.count = sum(len(v) for v in done.reference.values())
        self.clock = ReferenceClock([lambda net=net: net for net in built], backend, protocol,
                                    protocol.reference_every_s, done=done.reference, on_sample=self._reference_pass)

    def _writer(self, stage: str, names: Sequence[Part] | None = None) -> Callable[[int, int, object], None]:
        def write(i: int, pass_index: int, record) -> None:
            self._append(journal_record(stage, i, pass_index, record, None if names is None else names[i]))

        return write

    def _append(self, line: str) -> None:
        self.handle.write(line + "\n")
        self.handle.flush()
        os.fsync(self.handle.fileno())

    def _reference_pass(self, k: int, stage: str, samples: list[float]) -> None:
        self._append(journal_record("reference", k, self.count, samples, during=stage))
        self.count += 1

    def in_context(self, archs: Sequence[Arch], todo: Sequence[Part]):
        self.clock.stage = "context"
        result = measure_in_context(archs, self.backend, self.protocol, *self.shape, done=self.done.context,
                                    on_pass=self._writer("context"), on_progress=self.on_progress,
                                    tick=self.clock.tick, weights={p: self.weights[p] for p in todo})
        self.notes.update(context_networks=result.networks, context_passes=result.passes,
                          context_disturbed=result.disturbed)
        self._network_spread(result.spread)
        return result

    def _network_spread(self, spread: float) -> None:
        """Record how widely whole networks' passes spread in this build (the first whole-network stage's
        :func:`~slimnas.latency.protocol.session_spread`): this machine's normal, which a later session against the
        table is judged by (:func:`~slimnas.latency.protocol.unsettled`)."""
        if math.isfinite(spread) and "network_pass_spread" not in self.notes:
            self.notes["network_pass_spread"] = round(spread, 6)

    def alone(self, parts: Sequence[Part], rotation_mb: float
              ) -> tuple[dict[Part, Timing], dict[Part, tuple[int, int]]]:
        self.clock.stage = "isolated"
        batch, form = self.shape[0], self.shape[1]
        items = [partial(part_module, p, self.space.img_size, batch, form, rotation_mb, self.space.family)
                 for p in parts]
        position = {p: j for j, p in enumerate(parts)}
        done = {(position[p], k): v for (p, k), v in self.done.isolated.items() if p in position}
        measured = measure_items(items, self.backend, self.protocol, names=[str(p) for p in parts], done=done,
                                 on_pass=self._writer("isolated", parts), on_progress=self.on_progress,
                                 tick=self.clock.tick)
        return ({p: m.timing for p, m in zip(parts, measured)},
                {p: (m.passes, m.disturbed) for p, m in zip(parts, measured)})

    def empty_call(self) -> float:
        """What timing one call costs besides the part: an empty module's latency."""
        empty = measure_items([lambda: (_Empty(), torch.randn(self.shape[0], 8))], self.backend, self.protocol,
                              names=["empty module"], done=self.done.overhead, on_pass=self._writer("overhead"))[0]
        self.notes["empty_call_ms"] = empty.value
        return empty.value

    def calibration(self, plain: LatencyTable, count: int) -> dict[str, object]:
        """Time ``count`` seeded whole networks and fit the table's calibration on them: per part when they are at
        least as many as the table's parts, else per group."""
        self.clock.stage = "calibration"
        archs = calibration_archs(self.space, count)
        built = [network_module(a, *self.shape) for a in archs]
        measured = measure_items([lambda net=net: net for net in built], self.backend, self.protocol,
                                 names=[f"calibration network {i + 1}/{len(archs)}" for i in range(len(archs))],
                                 done=self.done.calibration, on_pass=self._writer("calibration"),
                                 on_progress=self.on_progress, tick=self.clock.tick)
        values = [m.value for m in measured]
        self._network_spread(session_spread(measured))
        if len(archs) >= len(plain.entries):  # enough networks to pin down one coefficient per part
            return fit_part_calibration(plain, archs, values) | {"networks": len(archs)}
        return CalibratedPredictor(plain).fit(archs, values).coefficients() | {"networks": len(archs)}

    def reference(self, anchor: str | None) -> dict[str, object] | None:
        """The reference networks and their latencies during ``anchor``, the stage the table's predictions are
        anchored to (see :mod:`.reference`), or over the whole build (timed once now if the journal held all)."""
        if not self.references:
            return None
        if not any(self.clock.samples):
            self.clock.tick(force=True)
        stage = anchor if anchor is not None and self.clock.has(anchor) else None
        return {"archs": [a.to_dict() for a in self.references], "ms": self.clock.latencies(stage, QUIET),
                "stage": stage or "build", "pooling": QUIET}


def _minus(timing: Timing, ms: float) -> Timing:
    """``timing`` less a constant (never below zero)."""
    def less(v: float) -> float:
        return max(v - ms, 0.0)

    return Timing(median=less(timing.median), mean=less(timing.mean), p10=less(timing.p10), p90=less(timing.p90),
                  std=timing.std, count=timing.count, p25=less(timing.p25), min=less(timing.min))
