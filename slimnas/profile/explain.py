"""``slimnas lut explain``: a latency table's entries next to the measured in-network time of the same parts.

For one arch, every part (:mod:`slimnas.latency._parts`) gets the table's entry as its prediction counts it
(:meth:`LatencyTable.contributions <slimnas.latency.table.LatencyTable.contributions>`: with the working-set term or the
calibration) and its time inside the running network, measured on the table's own backend and settings:

- backends that time modules in context (``torch-cpu``, ``torch-cuda``): the context harness the tables are built with
  (:func:`slimnas.latency.context.measure_in_context`, one covering network: the arch itself), so the time is what the
  table's entry estimates;
- ``onnxruntime``: the network runs as one session, so a part's time is the sum of its nodes' kernel times from ONNX
  Runtime's profiler (:mod:`.ort_profiler`), mapped to the part by module path; the whole network is measured under the
  protocol alongside.

The difference per part (summed over its occurrences in the arch) says where the table misses; the per-network
constant (overhead) is compared too, since a table adds it once. The largest absolute differences are named.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from slimnas.errors import InputError
from slimnas.latency.protocol import Progress, Protocol
from slimnas.search_spaces import Arch, Part

__all__ = ["PartRow", "Explanation", "explain", "format_explanation"]


@dataclass(frozen=True)
class PartRow:
    """One distinct part of the arch: the table's view and the measurement, summed over its ``count`` occurrences."""

    part: str
    kind: str
    stage: int
    count: int
    entry_ms: float  # the table's entry for one occurrence (its statistic)
    predicted_ms: float  # what the prediction adds for all occurrences
    measured_ms: float  # measured inside the running network, all occurrences

    @property
    def error_ms(self) -> float:
        return self.predicted_ms - self.measured_ms

    @property
    def error_pct(self) -> float:
        return 100.0 * self.error_ms / self.measured_ms if self.measured_ms > 0 else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"error_ms": self.error_ms, "error_pct": self.error_pct}


@dataclass(frozen=True)
class Explanation:
    """The table against the network, part by part."""

    arch: str
    table: str  # the table's description
    how: str  # how parts were timed in the network
    predicted_ms: float  # the table's prediction for the arch
    measured_ms: float  # the whole network, measured
    predicted_constant_ms: float  # the table's per-network constant (overhead or calibration intercept)
    measured_constant_ms: float  # the whole network minus its measured parts
    parts: tuple[PartRow, ...]
    device: str = ""  # where the parts were measured now
    notes: tuple[str, ...] = ()

    @property
    def error_pct(self) -> float:
        return 100.0 * (self.predicted_ms - self.measured_ms) / self.measured_ms

    def largest(self, count: int = 3) -> list[PartRow]:
        """The parts whose prediction is furthest from the measurement (absolute ms)."""
        return sorted(self.parts, key=lambda r: -abs(r.error_ms))[:count]

    def to_dict(self) -> dict[str, Any]:
        return {"arch": self.arch, "table": self.table, "how": self.how, "predicted_ms": self.predicted_ms,
                "measured_ms": self.measured_ms, "error_pct": self.error_pct,
                "predicted_constant_ms": self.predicted_constant_ms,
                "measured_constant_ms": self.measured_constant_ms, "device": self.device, "notes": list(self.notes),
                "parts": [r.to_dict() for r in self.parts],
                "largest_errors": [r.part for r in self.largest()]}


def explain(table: Any, arch: Arch, protocol: Protocol | None = None, runs: int = 20,
            on_progress: Callable[[Progress], None] | None = None) -> Explanation:
    """Explain ``table``'s prediction for ``arch`` (see the module docstring); the backend is the table's own
    (:func:`slimnas.latency.validate.backend_for`), checked before any timing."""
    from slimnas.latency.validate import backend_for

    contributions, constant = table.contributions(arch)
    backend = backend_for(table)
    backend.check()
    protocol = protocol or table.meta.measurement_protocol()
    if backend.supports_context:
        per_part, whole, how = _in_context(table, arch, backend, protocol, on_progress)
    elif backend.name == "onnxruntime":
        per_part, whole, how = _ort_nodes(table, arch, backend, protocol, runs)
    else:
        raise InputError(f"--lut: backend {backend.name} cannot time parts inside a running network here")
    predicted: dict[Part, float] = {}
    counts: dict[Part, int] = {}
    for part, value in contributions:
        predicted[part] = predicted.get(part, 0.0) + value
        counts[part] = counts.get(part, 0) + 1
    rows = tuple(PartRow(str(p), p.kind, p.stage, counts[p], table.entry(p), predicted[p], per_part[p] * counts[p])
                 for p in predicted)
    inside = sum(r.measured_ms for r in rows)
    device = backend.device_name()
    notes = () if device == table.meta.device else (
        f"measured on {device}; the table was built on {table.meta.device}: differences include the machines'",)
    return Explanation(arch=str(arch), table=table.meta.describe(), how=how,
                       predicted_ms=sum(predicted.values()) + constant, measured_ms=whole,
                       predicted_constant_ms=constant, measured_constant_ms=whole - inside, parts=rows,
                       device=device, notes=notes)


def _in_context(table: Any, arch: Arch, backend: Any, protocol: Protocol,
                on_progress: Callable[[Progress], None] | None) -> tuple[dict[Part, float], float, str]:
    from slimnas.latency import repeat_key
    from slimnas.latency.context import measure_in_context

    meta = table.meta
    result = measure_in_context([arch], backend, protocol, batch=meta.batch, form=meta.form,
                                num_classes=meta.num_classes, in_chans=meta.in_chans, on_progress=on_progress)
    entries = {p: t.get(protocol.statistic) for p, t in result.entries.items()}
    parts = table.parts(arch)
    # entries are a run's first block (slimnas.latency.context, step 6): each occurrence as it ran in the network
    ran: dict[Part, list[float]] = {}
    for i, part in enumerate(parts):
        factor = result.repeat_factors.get(repeat_key(part), 1.0) if i and parts[i - 1] == part else 1.0
        ran.setdefault(part, []).append(entries[part] * factor)
    whole = sum(sum(v) for v in ran.values()) + result.overhead_ms
    return ({p: sum(v) / len(v) for p, v in ran.items()}, whole,
            f"in context ({protocol.passes} passes, {result.disturbed} disturbed; the table's harness)")


def _ort_nodes(table: Any, arch: Arch, backend: Any, protocol: Protocol,
               runs: int) -> tuple[dict[Part, float], float, str]:
    from slimnas.latency.modules import network_parts

    from .ort_profiler import profile_session

    meta = table.meta
    network, modules, example = network_parts(arch, meta.batch, meta.form, meta.num_classes, meta.in_chans)
    parts = table.parts(arch)
    names = {id(m): n for n, m in network.named_modules()}
    index_of = {names[id(m)]: i for i, m in enumerate(modules) if id(m) in names}
    rest = [i for i, m in enumerate(modules) if id(m) not in names]  # the eager head: a wrapper of the network
    whole = backend.measure(network, example, protocol).value
    profiled = profile_session(backend, network, example, runs, protocol)
    calls = [s for s, ok in zip(profiled.samples, profiled.kept) if ok]
    times = [0.0] * len(parts)
    for call in calls:
        for s in call:
            i = index_of.get(s.unit.module)
            if i is None:
                i = rest[0] if rest else len(parts) - 1  # the head and top-level glue
            times[i] += s.ms / len(calls)
    per_part: dict[Part, list[float]] = {}
    for part, value in zip(parts, times):
        per_part.setdefault(part, []).append(value)
    return ({p: sum(v) / len(v) for p, v in per_part.items()}, whole,
            f"ONNX Runtime node kernel times of {len(calls)} profiled calls")


def format_explanation(e: Explanation, top: int = 3) -> str:
    """The explanation as text: one line per part, then the largest errors."""
    lines = [f"arch {e.arch}", f"table: {e.table}", f"parts timed {e.how} on {e.device}", *e.notes,
             f"{'part':<34} {'n':>3} {'entry ms':>9} {'table ms':>9} {'in-net ms':>9} {'error ms':>9} {'error':>7}"]
    for r in e.parts:
        lines.append(f"{r.part:<34} {r.count:>3} {r.entry_ms:>9.4f} {r.predicted_ms:>9.4f} {r.measured_ms:>9.4f} "
                     f"{r.error_ms:>+9.4f} {r.error_pct:>+6.1f}%")
    lines.append(f"{'per-network constant':<34} {'':>3} {'':>9} {e.predicted_constant_ms:>9.4f} "
                 f"{e.measured_constant_ms:>9.4f} {e.predicted_constant_ms - e.measured_constant_ms:>+9.4f}")
    lines.append(f"{'network':<34} {'':>3} {'':>9} {e.predicted_ms:>9.4f} {e.measured_ms:>9.4f} "
                 f"{e.predicted_ms - e.measured_ms:>+9.4f} {e.error_pct:>+6.1f}%")
    named = ", ".join(f"{r.part} ({r.error_ms:+.4f} ms, {r.error_pct:+.0f}%)" for r in e.largest(top))
    lines.append(f"largest errors: {named}")
    return "\n".join(lines)
