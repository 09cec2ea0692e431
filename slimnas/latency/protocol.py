"""The measurement protocol: how every latency in slimnas is measured (table entries, whole networks, winners).

A shared machine cannot be made quiet, so the protocol is built to be repeatable on one (the evidence is in
``docs/benchmarks.md``, "Measurement protocol"; the reasoning in ``docs/design.md``):

1. **Many short samples.** Each sample is one call (``module(example)``), timed alone, after a warm-up of
   ``warmup_ms``. A pass over an item takes single-call samples for at least ``pass_ms`` and at least ``samples``
   calls (no more than :data:`MAX_SAMPLES` once ``samples`` are taken). Interference then lands in a few samples
   instead of biasing all of them.
2. **Interleaved passes.** The items (the parts of a table, the networks of a validation) are measured round-robin in
   ``passes`` passes, so each item's samples are spread over the whole measurement instead of one moment of it: on
   the 2-core VMs slimnas is developed on, the machine's speed drifts by up to +-7% over tens of seconds.
3. **Disturbed passes are detected and re-measured.** A pass whose statistic lies further than ``tolerance`` from the
   median of the item's passes is *disturbed* (a burst of interference, or of unusual speed) and its samples are
   dropped. An item with more than a quarter of its passes disturbed gets up to ``extra_passes`` more passes, again
   round-robin over the items that need them.
4. **A statistic chosen by measured repeatability:** the ``median`` by default. Low quantiles and the minimum are the
   textbook choice where interference only adds time, but on these VMs the speed also jumps *up* by ~1.6x for tens of
   milliseconds at a time (seen in single-call traces), so a low quantile records whether such a burst happened
   during the measurement. Across processes, the median was the most repeatable statistic here (figures in
   ``docs/benchmarks.md``). The others are options (``median | mean | p25 | p10 | min``); a table predicts with the
   statistic its protocol names and validation measures that same statistic.
5. **The quietest passes.** Interference only adds time, and on a shared VM it also comes in spells of seconds that
   no single pass can tell from the network's own speed: while a spell lasts, every pass in it runs slow, and slow
   unevenly (larger working sets suffer more), so what the median pools depends on how long the spells happened to
   last. A pass's statistic is robust to bursts of tens of milliseconds (point 4); the lowest pass statistics of an
   item are its least interfered-with periods. So the statistic pools the samples of the ``quiet_passes`` passes
   with the lowest statistic (3 of 8 by default), chosen among all of the item's passes: when a spell covers most of
   them, its quiet passes are the ones point 3 calls disturbed (too fast). An item with no more passes than that
   pools its accepted passes, and ``quiet_passes`` 0 pools every accepted pass (how a protocol recorded before this
   field is read). Chosen on the journals of 14 ``tiny`` builds on two kinds of VM (``docs/benchmarks.md``, "The
   quietest passes"): rebuilt that way, the tables rank 50 networks against the consensus of 16-22 measurements as
   well as before or better; the two worst builds went from Kendall tau 0.927 and 0.951 to 0.964 and 0.977, and no
   build moved down by more than 0.007.
6. **A disturbed session is measured again.** A session was disturbed as a whole (:func:`unsettled`) when more than
   a quarter of its items still have too many disturbed passes after the extra passes, or when its items' accepted
   passes spread, at the median over the items, wider than ``SPREAD_FACTOR`` (1.5) times what whole networks' passes
   spread during the table's build on the same machine, and wider than ``tolerance``. No choice of passes within it
   can recover it: one validation on the EPYC VM measured every network 14-100% slow, all 50 with more than half
   their passes disturbed; in two others, partly disturbed, a few large networks ran 10-20% slow in nearly every
   pass while the median spread of the passes was 10.3% and 12.1%, against 6.4% and 7.4% in their tables' builds.
   The validations minutes before and after were normal. Among the 25 validations there with this protocol whose
   table's journal was kept, those three were the only misses and the only sessions above their limits; on the Xeon
   VMs, whose builds spread by 12-14%, the limits are 19.5-21.5% and no validation with a kept journal reached its own
   (``docs/benchmarks.md``, "A disturbed session, by its spread"). Sessions that time networks against a table
   (validation, a search job's winners) then measure again after a pause, up to ``settle_retries`` times, and keep
   the first settled attempt, or else the one with the fewest unsettled items and then the narrowest spread. A table
   built before its build recorded the spread (``notes.network_pass_spread``) is judged by its unsettled items only.

The protocol is recorded in a table's metadata (``TableMeta.protocol``) and reused by whatever measures against that
table (validation, a search job's winners), so a prediction and a measurement always estimate the same quantity.

Plain Python + NumPy; backends do the timing (``Backend.sample``).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from typing import Protocol as _Protocol

import numpy as np

from slimnas.errors import InputError
from slimnas.progress import Progress  # re-exported: the progress event of measurements

from ._timing import STATISTICS, Timing

__all__ = ["Protocol", "Measurement", "ContextSamples", "Progress", "assess", "needs_more", "unsettled",
           "unsettled_items", "unsettled_reason", "session_spread", "spread_limit", "SPREAD_MIN_PASSES",
           "SPREAD_FACTOR", "measure_items", "run_passes", "statistic_of", "STATISTICS", "MAX_SAMPLES"]

#: Samples per item and pass stop at this count once ``samples`` are taken, even before ``pass_ms`` (a 2 us part
#: would otherwise take 20,000 samples a pass: more than any statistic needs, and a journal of hundreds of MB).
MAX_SAMPLES = 500
#: An item needs extra passes when more than this share of its passes are disturbed.
_DISTURBED_SHARE = 0.25
#: A session's spread (:func:`session_spread`) is judged only when most of its items have this many accepted passes:
#: the max/min of two or three passes is their sampling noise as much as the machine's state.
SPREAD_MIN_PASSES = 4
#: A session whose spread exceeds this many times the machine's usual one (and the tolerance) was disturbed.
SPREAD_FACTOR = 1.5


def statistic_of(samples: Sequence[float], statistic: str) -> float:
    """``statistic`` (one of :data:`STATISTICS`) of ``samples``."""
    values = np.asarray(samples, dtype=np.float64)
    if statistic == "median":
        return float(np.median(values))
    if statistic == "mean":
        return float(values.mean())
    if statistic == "p25":
        return float(np.percentile(values, 25))
    if statistic == "p10":
        return float(np.percentile(values, 10))
    if statistic == "min":
        return float(values.min())
    raise InputError(f"protocol.statistic: expected one of {STATISTICS}, got {statistic!r}")


@dataclass(frozen=True)
class Protocol:
    """How one latency is measured (see the module docstring). Bad settings raise ``InputError`` naming the field."""

    statistic: str = "median"  # what a latency is: median | mean | p25 | p10 | min of the accepted samples
    passes: int = 8  # round-robin passes over the items
    samples: int = 5  # at least this many single-call samples per item and pass
    pass_ms: float = 40.0  # ... and at least this much sampling time per item and pass
    warmup_ms: float = 20.0  # untimed calls before each item's samples, in every pass (at least 3 calls)
    tolerance: float = 0.10  # a pass whose statistic is off the median of the item's passes by more is disturbed
    extra_passes: int = 4  # at most this many re-measurement passes for items with too many disturbed passes
    quiet_passes: int = 3  # the statistic pools the passes with the lowest statistic, this many; 0: every accepted
    settle_retries: int = 2  # a session of network timings left unsettled is measured again this many times at most
    reference_networks: int = 4  # fixed networks timed alongside, for the machine's speed (slimnas.latency.reference)
    reference_every_s: float = 5.0  # ... at pass starts and at least this often

    def __post_init__(self) -> None:
        checks = {
            "statistic": self.statistic in STATISTICS,
            "passes": isinstance(self.passes, int) and 1 <= self.passes <= 1000,
            "samples": isinstance(self.samples, int) and 1 <= self.samples <= 10**6,
            "pass_ms": math.isfinite(self.pass_ms) and 0 <= self.pass_ms <= 600_000,
            "warmup_ms": math.isfinite(self.warmup_ms) and 0 <= self.warmup_ms <= 600_000,
            "tolerance": math.isfinite(self.tolerance) and 0 < self.tolerance <= 10,
            "extra_passes": isinstance(self.extra_passes, int) and 0 <= self.extra_passes <= 1000,
            "quiet_passes": isinstance(self.quiet_passes, int) and 0 <= self.quiet_passes <= 1000,
            "settle_retries": isinstance(self.settle_retries, int) and 0 <= self.settle_retries <= 10,
            "reference_networks": isinstance(self.reference_networks, int) and 0 <= self.reference_networks <= 16,
            "reference_every_s": math.isfinite(self.reference_every_s) and 0 < self.reference_every_s <= 86_400,
        }
        limits = {"statistic": f"one of {STATISTICS}", "passes": "an integer from 1 to 1000",
                  "samples": "an integer from 1 to 1000000", "pass_ms": "between 0 and 600000",
                  "warmup_ms": "between 0 and 600000", "tolerance": "above 0 and at most 10",
                  "extra_passes": "an integer from 0 to 1000", "quiet_passes": "an integer from 0 to 1000",
                  "settle_retries": "an integer from 0 to 10", "reference_networks": "an integer from 0 to 16",
                  "reference_every_s": "above 0 and at most 86400"}
        for name, ok in checks.items():
            if not ok:
                raise InputError(f"protocol.{name}: must be {limits[name]}, got {getattr(self, name)!r}")

    def replace(self, **changes: Any) -> Protocol:
        """This protocol with some fields changed (``None`` values are ignored)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Protocol:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"protocol: unknown field(s) {unknown}")
        # a protocol recorded before ``quiet_passes`` existed pooled every accepted pass
        return cls(**{"quiet_passes": 0, **dict(data)})

    def describe(self) -> str:
        pooled = f"the {self.quiet_passes} quietest passes" if self.quiet_passes else "every accepted pass"
        return (f"{self.statistic} of single calls over {pooled}, {self.passes} interleaved passes of >= "
                f"{self.samples} samples and >= {self.pass_ms:g} ms, disturbed passes (> {self.tolerance:.0%} off) "
                "re-measured")


@dataclass(frozen=True)
class Measurement:
    """One item's measurement: its latency under the protocol and what it took to get it."""

    value: float  # the protocol's statistic of the pooled samples: those of the quietest passes (ms)
    timing: Timing  # all statistics of the pooled samples
    passes: int  # accepted passes
    disturbed: int  # passes dropped as disturbed
    pass_values: tuple[float, ...]  # each pass's statistic, in measurement order (ms)
    accepted: tuple[bool, ...]  # whether each pass was kept (not disturbed)
    pooled: tuple[bool, ...] = ()  # whether each pass's samples are in ``value`` (among the quietest)
    speed: float = 1.0  # the machine's speed factor this was divided by (slimnas.latency.reference); 1: raw
    attempts: int = 1  # sessions it took (a session left unsettled is measured again, point 6)
    raw_value: float | None = None  # the value before that division (None: the same as value)
    unsettled: str = ""  # why the session it came from was still disturbed as a whole after its retries ("": it
    # was not; :func:`unsettled_reason`): its figures say more about the machine than about what was measured

    def at_speed(self, factor: float) -> Measurement:
        """This measurement brought to another machine speed: values divided by ``factor`` (raw kept)."""
        return dataclasses.replace(self, value=self.value / factor, speed=factor, raw_value=self.raw,
                                   pass_values=tuple(v / factor for v in self.pass_values))

    @property
    def raw(self) -> float:
        """The value as measured (before any speed factor)."""
        return self.value if self.raw_value is None else self.raw_value

    def pass_range(self) -> tuple[float, float]:
        """Lowest and highest statistic among the accepted passes (ms): the measurement's own spread."""
        kept = [v for v, ok in zip(self.pass_values, self.accepted) if ok]
        return min(kept), max(kept)

    @property
    def spread(self) -> float:
        """Relative spread of the accepted passes (max/min - 1)."""
        low, high = self.pass_range()
        return high / low - 1.0 if low > 0 else float("nan")


def assess(pass_samples: Sequence[Sequence[float]], protocol: Protocol) -> Measurement:
    """The measurement from an item's passes: disturbed passes marked, and the statistic of the samples of the
    ``protocol.quiet_passes`` passes with the lowest statistic (of the accepted passes when ``quiet_passes`` is 0 or
    the item has no more passes than that; point 5 of the module docstring)."""
    if not pass_samples:
        raise ValueError("pass_samples: need at least one pass")
    values = [statistic_of(s, protocol.statistic) for s in pass_samples]
    center = float(np.median(values))
    kept = [abs(v - center) <= protocol.tolerance * center for v in values]
    if not any(kept):  # an even count split far apart: keep the pass nearest the median, the rest are disturbed
        nearest = min(range(len(values)), key=lambda i: abs(values[i] - center))
        kept = [i == nearest for i in range(len(values))]
    used = list(kept)
    if 0 < protocol.quiet_passes < len(values):
        chosen = set(sorted(range(len(values)), key=lambda i: (values[i], i))[:protocol.quiet_passes])
        used = [i in chosen for i in range(len(values))]
    pooled = [x for s, ok in zip(pass_samples, used) if ok for x in s]
    timing = Timing.from_samples(pooled)
    return Measurement(value=statistic_of(pooled, protocol.statistic), timing=timing, passes=sum(kept),
                       disturbed=len(kept) - sum(kept), pass_values=tuple(values), accepted=tuple(kept),
                       pooled=tuple(used))


def needs_more(measurement: Measurement) -> bool:
    """Whether too many of an item's passes were disturbed for its value to stand."""
    total = measurement.passes + measurement.disturbed
    return measurement.disturbed > _DISTURBED_SHARE * total


def unsettled_items(measurements: Sequence[Measurement]) -> int:
    """How many of a session's items still have too many disturbed passes (:func:`needs_more`) after its extra
    passes."""
    return sum(needs_more(m) for m in measurements)


def session_spread(measurements: Sequence[Measurement]) -> float:
    """The median over a session's items of the spread of their accepted passes (:attr:`Measurement.spread`:
    max/min - 1); NaN for an empty session."""
    spreads = [m.spread for m in measurements]
    return float(np.median(spreads)) if spreads else float("nan")


def spread_limit(protocol: Protocol, usual: float) -> float:
    """The widest :func:`session_spread` a settled session has on a machine whose sessions usually spread by
    ``usual``: ``SPREAD_FACTOR`` times that, and at least ``protocol.tolerance``."""
    return max(protocol.tolerance, SPREAD_FACTOR * usual)


def unsettled(measurements: Sequence[Measurement], protocol: Protocol | None = None,
              usual_spread: float | None = None) -> bool:
    """Whether a session of measurements was disturbed as a whole (point 6 of the module docstring; see
    :func:`unsettled_reason`)."""
    return unsettled_reason(measurements, protocol, usual_spread) is not None


def unsettled_reason(measurements: Sequence[Measurement], protocol: Protocol | None = None,
                     usual_spread: float | None = None) -> str | None:
    """Why a session of measurements was disturbed as a whole, in words, or ``None`` if it was not: more than a
    quarter of its items are unsettled (:func:`unsettled_items`); or, given its ``protocol`` and how widely sessions
    on this machine usually spread (``usual_spread``: a table's build records it), the median spread of its items'
    accepted passes (:func:`session_spread`) is wider than :func:`spread_limit`, judged when most items have at least
    :data:`SPREAD_MIN_PASSES` accepted passes."""
    count = unsettled_items(measurements)
    if count > _DISTURBED_SHARE * len(measurements):
        return (f"{count} of {len(measurements)} still had over a quarter of their passes disturbed after the extra "
                "passes")
    if protocol is None or usual_spread is None or not math.isfinite(usual_spread):
        return None
    if 2 * sum(m.passes >= SPREAD_MIN_PASSES for m in measurements) <= len(measurements):
        return None
    spread, limit = session_spread(measurements), spread_limit(protocol, usual_spread)
    if spread > limit:
        return (f"their passes spread by {100 * spread:.1f}% at the median, beyond {100 * limit:.1f}% "
                f"({SPREAD_FACTOR:g} times the {100 * usual_spread:.1f}% of the table's build)")
    return None


@dataclass(frozen=True)
class ContextSamples:
    """One pass of a network timed in context (:mod:`slimnas.latency.context`): whole calls, and calls timed module
    by module, alternating."""

    network: list[float]  # single-call times of the whole network (ms)
    parts: list[list[float]]  # parts[i]: module i's times inside the instrumented calls (ms)

    def to_dict(self) -> dict[str, Any]:
        return {"network": self.network, "parts": self.parts}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ContextSamples:
        return cls([float(v) for v in data["network"]], [[float(v) for v in row] for row in data["parts"]])


class Sampler(_Protocol):
    """What :func:`measure_items` needs from a backend: one pass of samples of one item."""

    def sample(self, module: Any, example: Any, protocol: Protocol) -> list[float]: ...


R = TypeVar("R")


def run_passes(
    count: int,
    sample_pass: Callable[[int], R],
    protocol: Protocol,
    *,
    times: Callable[[R], Sequence[float]] = lambda r: r,  # type: ignore[assignment,return-value]
    names: Sequence[str] | None = None,
    done: Mapping[tuple[int, int], R] | None = None,
    on_pass: Callable[[int, int, R], None] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    tick: Callable[[bool], None] | None = None,
) -> list[list[R]]:
    """The protocol's pass schedule over ``count`` items; returns every item's passes, in order.

    ``sample_pass(i)`` measures one pass of item ``i`` and returns its record, whose single-call times
    ``times(record)`` decide disturbed passes and extra passes. ``done`` holds passes measured before, as
    ``{(item, pass): record}`` (a build resuming from its journal); ``on_pass(item, pass, record)`` is called after each
    new pass (the journal's write). Extra passes are numbered from ``protocol.passes`` on; which items get them
    depends only on the samples, so a resumed measurement takes the same decisions. ``tick(pass_start)`` is called
    before each item measured (``True`` for a pass's first): the reference clock (:mod:`slimnas.latency.reference`).
    """
    names = list(names) if names is not None else [f"item {i}" for i in range(count)]
    records: list[list[R]] = [[] for _ in range(count)]
    done = dict(done or {})
    start = time.perf_counter()
    counter = {"new": 0, "done": 0, "total": count * protocol.passes}

    def run(i: int, pass_index: int, first: bool) -> None:
        if (i, pass_index) in done:
            records[i].append(done[(i, pass_index)])
            counter["done"] += 1
            return
        if tick is not None:
            tick(first)
        record = sample_pass(i)
        records[i].append(record)
        counter["new"] += 1
        counter["done"] += 1
        if on_pass is not None:
            on_pass(i, pass_index, record)
        if on_progress is not None:
            elapsed = time.perf_counter() - start
            left = max(counter["total"] - counter["done"], 0)
            label = names[i] if protocol.passes == 1 else f"pass {pass_index + 1}/{protocol.passes}: {names[i]}"
            on_progress(Progress(counter["done"], max(counter["total"], counter["done"]), label, elapsed,
                                 elapsed / counter["new"] * left))

    for pass_index in range(protocol.passes):
        for i in range(count):
            run(i, pass_index, i == 0)
    for extra in range(protocol.extra_passes):
        pending = [i for i in range(count)
                   if needs_more(assess([times(r) for r in records[i]], protocol))]
        if not pending:
            break
        counter["total"] += len(pending)
        for n, i in enumerate(pending):
            run(i, protocol.passes + extra, n == 0)
    return records


def measure_items(
    items: Sequence[Callable[[], tuple[Any, Any]]],
    backend: Sampler,
    protocol: Protocol,
    *,
    names: Sequence[str] | None = None,
    done: Mapping[tuple[int, int], Sequence[float]] | None = None,
    on_pass: Callable[[int, int, list[float]], None] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    tick: Callable[[bool], None] | None = None,
) -> list[Measurement]:
    """Measure every item under ``protocol`` (see the module docstring); returns one measurement per item.

    ``items[i]()`` returns ``(module, example)`` for item ``i``; it is called once per pass, so it may build the
    module anew (parts: bounded memory) or return one built up front (networks). ``done``, ``on_pass`` and
    ``on_progress`` as in :func:`run_passes`.
    """
    def sample_pass(i: int) -> list[float]:
        module, example = items[i]()
        return backend.sample(module, example, protocol)

    passes = run_passes(len(items), sample_pass, protocol, names=names, done=done, on_pass=on_pass,
                        on_progress=on_progress, tick=tick)
    return [assess(p, protocol) for p in passes]
