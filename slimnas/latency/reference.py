"""The machine's speed, measured alongside every measurement: reference networks.

A shared VM's speed drifts as a whole: two builds of the same ``tiny`` table three minutes apart predicted every arch
14% apart (the ratio of their predictions 1.14 +- 0.01 over 50 archs, every part kind alike), while the protocol
within each build was repeatable. No statistic of one session can remove a slowdown that lasts the whole session;
measuring the machine's speed can. So every measurement session (a table's build, a validation, a search job's
winners) also times a few fixed **reference networks** of the table's space (:func:`reference_archs`, in the table's
form, batch and backend), interleaved with the rest: at the start of every pass and every ``reference_every_s``
seconds (less often when they are slow). A session that measures networks against a table (a validation, a search
job's winners) times them at pass starts only within ~10% of its time: a verification round of a dozen small networks
has passes of ~0.6 s, and timing the references at each took a third of it.

- A table records its reference networks and their latencies at build time (``TableMeta.reference``): the machine's
  speed its entries belong to. The latencies are those timed during the stage the table's predictions are anchored
  to (``stage``): the whole-network calibration of a calibrated table, the in-context stage of a context table (its
  other parts are scaled to it), the whole build otherwise. A build's stages can run at different speeds (two
  `tiny` onnxruntime builds agreed to 7% raw and still 4% apart after a factor pooled over their whole builds).
- A later session times the same networks; its *speed factor* is the geometric mean over the reference networks of
  ``session latency / table latency`` (1.10: the machine now runs 10% slower than when the table was built).
  Measurements against the table are reported at the table's speed (divided by the factor) and raw; validation and
  winner verification compare predictions with the former, and say what the factor was.
- Two tables are compared at equal speed (``compare_tables``).
- A reference network's latency pools its measurements the way an item's latency pools its passes (point 5 of
  :mod:`.protocol`): the samples of its quietest measurements, the same share of them (``quiet_passes`` of
  ``passes``, 3 of 8 by default) whatever their count, since a build times the references at every pass start and a
  validation only within a tenth of its time. The median over every measurement, what a speed factor was until
  2026-12-01, measured the session's disturbance instead of its speed: a `tiny` build on the Xeon VM with 57% of its
  passes disturbed recorded references 46% slower than their quietest measurements, and two builds whose predictions
  agreed within 4.1% raw came out 22.4% apart after that factor, 2.2% apart with the quiet one; over the nine
  pairs of builds whose journals were kept, the mean absolute gap after the factor is 0.8% against 3.4%
  (``benchmarks/reference_pooling_offline.py``; ``docs/benchmarks.md``, "The speed factor pooled like the
  passes"). A table records how its references were pooled (``pooling``: ``quiet``; absent in tables built
  before, read as ``median``), and a later session pools its own reference timings the same way, so the factor
  compares like with like.

On a dedicated device the factor stays near 1 and changes nothing. ``reference_networks: 0`` switches it off.
"""

from __future__ import annotations

import math
import random
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from slimnas.search_spaces import Arch, SearchSpace

from .protocol import Protocol, assess, statistic_of

__all__ = ["reference_archs", "ReferenceClock", "speed_factor", "pooled_latency", "QUIET", "MEDIAN"]

#: How a reference network's measurements are pooled into its latency (recorded in ``TableMeta.reference``):
#: the quietest share of them, as an item's passes (the default since 2026-12-01), or the median of every
#: measurement's statistic (tables built before).
QUIET, MEDIAN = "quiet", "median"

_SEED = 1000
_POOL = 64
#: The reference networks take at most about this share of a session's time (ticks are spaced accordingly).
_SHARE = 0.1


def reference_archs(space: SearchSpace, count: int) -> list[Arch]:
    """The space's reference networks: ``count`` archs spread over the space's sizes (the same on every machine and
    every run): from a seeded pool of random archs, those at evenly spaced quantiles of their weight volume (a
    proxy: the sum over stages of blocks x width^2), so that the speed factor weighs small and large networks alike.
    """
    rng = random.Random(_SEED)
    pool = sorted({space.sample(rng) for _ in range(_POOL)},
                  key=lambda a: (sum(d * w * w for d, w in zip(a.depths, a.widths)), a.to_json()))
    return [pool[min(len(pool) - 1, int((k + 0.5) / count * len(pool)))] for k in range(count)]


def pooled_latency(measurements: Sequence[Sequence[float]], protocol: Protocol, pooling: str = QUIET) -> float:
    """One reference network's latency from its ``measurements`` (each one pass of single-call samples).

    ``quiet``: the protocol's statistic of the samples of its quietest measurements, as many as the protocol's share
    of quiet passes (``quiet_passes`` of ``passes``, at least one), chosen among all of them (:func:`.assess`).
    ``median``: the median of every measurement's statistic (how tables built before 2026-12-01 recorded theirs), also
    what ``quiet`` is under a protocol that pools every pass (``quiet_passes`` 0, or not fewer than ``passes``). NaN
    without measurements."""
    if pooling not in (QUIET, MEDIAN):
        raise ValueError(f"pooling: expected {QUIET!r} or {MEDIAN!r}, got {pooling!r}")
    if not measurements:
        return float("nan")
    if pooling == MEDIAN or not 0 < protocol.quiet_passes < protocol.passes:
        return float(statistics.median(statistic_of(s, protocol.statistic) for s in measurements))
    quiet = max(1, round(protocol.quiet_passes / protocol.passes * len(measurements)))
    return assess(measurements, protocol.replace(quiet_passes=quiet)).value


def speed_factor(session_ms: Sequence[float], table_ms: Sequence[float]) -> float:
    """Geometric mean of ``session / table`` over the reference networks (1.0 when there are none)."""
    pairs = [(s, t) for s, t in zip(session_ms, table_ms) if s > 0 and t > 0]
    if not pairs:
        return 1.0
    return math.exp(sum(math.log(s / t) for s, t in pairs) / len(pairs))


@dataclass
class ReferenceClock:
    """Times the reference networks during a measurement session (see the module docstring).

    ``networks[k]()`` returns ``(module, example)`` for reference network ``k``; ``backend.sample`` times it (one
    pass of the protocol). Each measurement is tagged with the session's current ``stage`` (set by the caller).
    ``done`` holds earlier sessions' ``(stage, samples)`` (a resumed build); ``on_sample(k, stage, samples)`` is
    called after each new measurement (the build's journal).
    """

    networks: Sequence[Callable[[], tuple[Any, Any]]]
    backend: Any
    protocol: Protocol
    every_s: float = 5.0
    #: Time the references at every pass start (a table's build: its reference latencies anchor every later
    #: comparison), else at pass starts only within ~10% of the session (sessions measuring against a table).
    every_pass: bool = True
    done: Mapping[int, Sequence[tuple[str, Sequence[float]]]] = field(default_factory=dict)
    on_sample: Callable[[int, str, list[float]], None] | None = None
    stage: str = ""

    def __post_init__(self) -> None:
        self.samples: list[list[list[float]]] = [[list(s) for _, s in self.done.get(k, [])]
                                                 for k in range(len(self.networks))]
        self.stages: list[list[str]] = [[tag for tag, _ in self.done.get(k, [])] for k in range(len(self.networks))]
        self._last = -math.inf
        self._cost = 0.0
        self._stage: str | None = None  # the stage of the last timing

    def tick(self, pass_start: bool = False, force: bool = False) -> None:
        """Time every reference network at a pass start (``every_pass``; else only once ten times their own cost
        has passed since the last time, so that they take at most ~10% of the session), and between passes once
        ``every_s`` passed (or longer: large networks are timed less often). ``force``: now (the first and last time
        of a session); also the first tick of a new ``stage`` (each stage gets its own measurement of the speed)."""
        now = time.perf_counter()
        share_wait = self._cost / _SHARE
        wait = share_wait if pass_start else max(self.every_s, share_wait)
        force = force or self.stage != self._stage or (pass_start and self.every_pass)
        if not self.networks or (not force and now - self._last < wait):
            return
        self._stage = self.stage
        for k, network in enumerate(self.networks):
            module, example = network()
            values = self.backend.sample(module, example, self.protocol)
            self.samples[k].append(values)
            self.stages[k].append(self.stage)
            if self.on_sample is not None:
                self.on_sample(k, self.stage, values)
        self._last = time.perf_counter()
        self._cost = self._last - now

    def latencies(self, stage: str | None = None, pooling: str = QUIET) -> list[float]:
        """Each reference network's latency over the session (or over its measurements during ``stage``, if any),
        its measurements pooled as ``pooling`` says (:func:`pooled_latency`; a session measuring against a table
        pools as the table's build did)."""
        out = []
        for measurements, tags in zip(self.samples, self.stages):
            chosen = [s for s, tag in zip(measurements, tags) if tag == stage] if stage is not None else []
            out.append(pooled_latency(chosen or measurements, self.protocol, pooling))
        return out

    def has(self, stage: str) -> bool:
        """Whether every reference network was timed during ``stage``."""
        return bool(self.samples) and all(stage in tags for tags in self.stages)
