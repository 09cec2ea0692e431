"""Winners verified on the device: the closed loop at the end of a search job. Plain Python (no torch, no ray).

A search ranks archs by *predicted* latency (the table). At the end of a job every winner is measured on the table's
backend (``measure``: archs -> milliseconds on the device); a winner slower than its target by more than
``tolerance_pct`` is not reported as meeting it:

- **A baseline** (random, exhaustive, TPE, NSGA-II) takes its next arch: the candidates are its evaluated archs
  predicted within the target, in the order of its own answer rule (the answer first, then by accuracy, the faster
  and then the earlier first on ties), measured in that order; the first that measures within the tolerance is the
  answer. This costs no subnet evaluation (``extra_evaluations`` 0). There is no cap: every candidate is already
  evaluated, and only device time is spent.
- **Slimming** walks on along its trajectory: the next step (one more action applied, already evaluated), measured,
  and so on. When the trajectory has no further step, slimming goes on (:meth:`SlimmingSearch.continue_below`): one
  more round, its candidates evaluated the normal way (``continue_round``: through Ray Tune on the platform), the
  chosen step measured -- until a step measures within the tolerance, no action saves latency, or
  ``max_extra_steps`` new steps were taken (the cap is per slimming run: every target of a sweep shares one
  trajectory). The reported ``evaluations`` are those of the step taken (the run's own count when it was reached), so
  evaluations spent past the original end of the run are included; ``extra_evaluations`` says how many of them.

Decisions:

- "Meets the target" means ``measured_ms <= target_ms * (1 + tolerance_pct / 100)`` (:func:`within_tolerance`; a
  measurement within 1e-9 relative of that limit counts as at it, so float rounding cannot flip an edge case).
- When nothing meets the target, the original (predicted) answer stays, with ``meets_target`` False, its
  measurement, and the evaluations and steps the loop spent trying.
- Every arch is measured at most once per job (:class:`MeasurementCache`, shared by every method and target: a
  winner that answers several targets, or two methods that found the same arch, are timed once). Next candidates
  (baselines) and next steps (slimming) are measured :data:`BATCH` (2) at a time, at the price of at most one network
  timed in vain per answer. Why 2: a device session's own cost is small against its networks' (on the EPYC VM, ~0.4 s
  against ~0.6 s per `tiny` network under the default protocol), and since the rounds below share one session across
  every answer a round saves little more; the first replacement usually meets the target, and when it does not the
  second (the next by accuracy, predicted as near the target) is already measured. 4 at a time spent ~2.3 s per job
  timing networks nobody took (``docs/benchmarks.md``).
- Replacements are measured in rounds across every (method, target) (:func:`measure_in_rounds`): each round asks
  every walk what it would measure next (:func:`next_measurements`, the walk itself run against the cache without
  measuring) and times all of it in one call. A job with several answers over their targets then pays one device
  session per round instead of one per answer (a session's set-up, its reference networks and, on a disturbed
  machine, its retries). The walks then run for real and find their archs measured; only slimming's extra rounds
  (new steps, evaluated first) are measured afterwards, one step at a time.
- ``verify_steps`` counts the candidates (baseline) or trajectory steps (slimming) taken after the original answer:
  0 when the original answer met its target.
- The baselines' equal budgets (``budget: auto``) are set before verification, from where slimming's *predicted*
  trajectory first reached each target; slimming's extra evaluations show in its own rows.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Literal

from slimnas.search_spaces import Arch

from ._base import Evaluation, SearchAlgorithm
from .slimming import SlimmingSearch

__all__ = ["MeasureFn", "ContinueRoundFn", "Verification", "VerifyState", "MeasurementCache", "SlimmingRun", "Walk",
           "BATCH", "tolerance_limit", "within_tolerance", "unverified", "verify_baseline", "verify_slimming",
           "next_measurements", "measure_in_rounds"]

#: Measured latency (ms) of each arch on the device, in order (one call may time several networks together).
MeasureFn = Callable[[Sequence[Arch]], Sequence[float]]

#: Runs the asked round(s) of a continued slimming run to its end (``index``: 1 for the first extra round, ...) and
#: returns the algorithm afterwards (the same object, or a restored copy of it).
ContinueRoundFn = Callable[[SlimmingSearch, int], SlimmingSearch]

#: ``met``/``not met``: measured; ``pending``: the device cannot measure here; ``off``: measuring was switched off;
#: ``no answer``: the method has no arch within the target.
VerifyState = Literal["met", "not met", "pending", "off", "no answer"]

_REL_EPS = 1e-9

#: How many next candidates (or trajectory steps) one round measures per answer over its target (see the docstring).
BATCH = 2


def tolerance_limit(target_ms: float, tolerance_pct: float) -> float:
    """The slowest measured latency that still meets ``target_ms``."""
    return target_ms * (1.0 + tolerance_pct / 100.0)


def within_tolerance(measured_ms: float, target_ms: float, tolerance_pct: float) -> bool:
    """Whether a measured latency meets ``target_ms`` (see the module docstring)."""
    return measured_ms <= tolerance_limit(target_ms, tolerance_pct) * (1.0 + _REL_EPS)


@dataclass
class Verification:
    """The verified answer of one (method, target)."""

    target_ms: float
    answer: Evaluation | None  # the verified answer; the original one when nothing met or nothing was measured
    evaluations: int  # the method's evaluations for this answer, extra ones included
    state: VerifyState
    measured_ms: float | None = None
    meets_target: bool | None = None  # None: not measured
    verify_steps: int = 0
    extra_evaluations: int = 0
    note: str = ""


class MeasurementCache:
    """``measure`` with memory: each distinct arch is timed once; unknown archs of a request are timed in one call."""

    def __init__(self, measure: MeasureFn) -> None:
        self._measure = measure
        self.measured: dict[str, float] = {}  # arch JSON -> ms
        self.calls = 0

    def get(self, arch: Arch) -> float | None:
        return self.measured.get(arch.to_json())

    def unmeasured(self, archs: Sequence[Arch]) -> list[Arch]:
        """The distinct archs of ``archs`` not measured yet, in order."""
        return list({a.to_json(): a for a in archs if a.to_json() not in self.measured}.values())

    def measure(self, archs: Sequence[Arch]) -> list[float]:
        """Measured ms of each of ``archs`` (timing only those not measured before)."""
        todo = self.unmeasured(archs)
        if todo:
            values = list(self._measure(todo))
            if len(values) != len(todo):
                raise ValueError(f"measure: {len(values)} results for {len(todo)} archs")
            self.calls += 1
            self.measured.update({a.to_json(): float(v) for a, v in zip(todo, values)})
        return [self.measured[a.to_json()] for a in archs]


class _Wanted(Exception):
    """Raised by :class:`_Probe` where a walk would measure: what it would measure."""

    def __init__(self, archs: list[Arch]) -> None:
        super().__init__(len(archs))
        self.archs = archs


class _Probe(MeasurementCache):
    """A cache that reads ``cache``'s measurements and, asked for one it lacks, raises :class:`_Wanted`."""

    def __init__(self, cache: MeasurementCache) -> None:
        super().__init__(cache._measure)
        self.measured = cache.measured

    def measure(self, archs: Sequence[Arch]) -> list[float]:
        if todo := self.unmeasured(archs):
            raise _Wanted(todo)
        return [self.measured[a.to_json()] for a in archs]


#: One (method, target)'s verification walk against a cache: ``verify_baseline`` or ``verify_slimming`` with its
#: arguments bound. Run by :func:`next_measurements` it must not evaluate anything (a slimming walk on a
#: :class:`SlimmingRun` without ``continue_round``).
Walk = Callable[[MeasurementCache], Verification]


def next_measurements(walk: Walk, cache: MeasurementCache) -> list[Arch]:
    """The archs ``walk`` would measure next, given what ``cache`` holds (``[]``: it needs no measurement more)."""
    try:
        walk(_Probe(cache))
    except _Wanted as wanted:
        return wanted.archs
    return []


def measure_in_rounds(walks: Sequence[Walk], cache: MeasurementCache) -> int:
    """Measure what ``walks`` need, all of them at once per round, until none needs more; the rounds taken."""
    rounds = 0
    while todo := [a for walk in walks for a in next_measurements(walk, cache)]:
        cache.measure(todo)
        rounds += 1
    return rounds


def _answer_evaluations(algorithm: SearchAlgorithm, target_ms: float) -> int:
    """The evaluations a method reports for its answer: slimming's when its trajectory first reached the target."""
    if isinstance(algorithm, SlimmingSearch):
        index = algorithm.answer_index(target_ms)
        if index is not None:
            return algorithm.trajectory[index].evaluations
    return algorithm.evaluations


def unverified(algorithm: SearchAlgorithm, target_ms: float, state: VerifyState, note: str = "") -> Verification:
    """The predicted answer, not measured (``state``: ``pending`` or ``off``; ``no answer`` when there is none)."""
    answer = algorithm.answer(target_ms)
    return Verification(target_ms, answer, _answer_evaluations(algorithm, target_ms),
                         "no answer" if answer is None else state, note=note)


def _ranked_candidates(algorithm: SearchAlgorithm, target_ms: float, first: Evaluation,
                       stopped: Collection[int] = ()) -> list[Evaluation]:
    """The answer, then the other evaluated archs predicted within the target, best first (one per arch).

    Candidates in ``stopped`` (ids of evaluations stopped early) are left out: what they were told is a bound on
    their accuracy, not a measured top-1, so one of them is never reported in place of the answer."""
    feasible = sorted((e for e in algorithm.history if e.latency_ms <= target_ms and e.candidate.id not in stopped),
                      key=lambda e: (-e.accuracy, e.latency_ms, e.candidate.id))
    out, seen = [], set()
    for evaluation in [first, *feasible]:
        key = evaluation.arch.to_json()
        if key not in seen:
            seen.add(key)
            out.append(evaluation)
    return out


def verify_baseline(algorithm: SearchAlgorithm, target_ms: float, cache: MeasurementCache, tolerance_pct: float,
                    batch: int = BATCH, stopped: Collection[int] = ()) -> Verification:
    """A baseline's answer for ``target_ms``, verified on the device (see the module docstring); ``stopped``: the ids
    of its candidates stopped early, never taken as a replacement (their accuracy is only a bound)."""
    first = algorithm.answer(target_ms)
    if first is None:
        return unverified(algorithm, target_ms, "no answer")
    candidates = _ranked_candidates(algorithm, target_ms, first, stopped)
    for i, candidate in enumerate(candidates):
        if cache.get(candidate.arch) is None:
            cache.measure([c.arch for c in candidates[i:] if cache.get(c.arch) is None][:max(1, batch)])
        measured = cache.get(candidate.arch)
        if within_tolerance(measured, target_ms, tolerance_pct):
            return Verification(target_ms, candidate, algorithm.evaluations, "met", measured, True, i)
    return Verification(target_ms, first, algorithm.evaluations, "not met", cache.get(first.arch), False,
                        len(candidates) - 1,
                        note=f"none of the {len(candidates)} evaluated archs within the target measures at or under "
                             f"{tolerance_limit(target_ms, tolerance_pct):.4g} ms")


@dataclass
class SlimmingRun:
    """A finished slimming run whose trajectory the closed loop may walk and extend.

    ``continue_round``: how one more round is evaluated (``None``: the trajectory is only walked, never extended).
    ``base_evaluations`` and ``base_steps`` record the run as the search left it; ``extra_steps`` counts the steps
    added since, at most ``max_extra_steps`` for the whole run (every target of a sweep shares the trajectory).
    """

    algorithm: SlimmingSearch
    continue_round: ContinueRoundFn | None = None
    max_extra_steps: int = 5
    base_evaluations: int = field(init=False)
    base_steps: int = field(init=False)
    extra_steps: int = 0
    rounds: int = 0
    exhausted: str = ""  # why the trajectory cannot be extended any more ("" while it can)

    def __post_init__(self) -> None:
        self.base_evaluations = self.algorithm.evaluations
        self.base_steps = len(self.algorithm.trajectory)

    @property
    def extra_evaluations(self) -> int:
        return self.algorithm.evaluations - self.base_evaluations

    def extend(self) -> bool:
        """Add one step to the trajectory (one more slimming round); ``False`` when it cannot."""
        if self.exhausted:
            return False
        if self.continue_round is None:
            self.exhausted = "the trajectory ended"
            return False
        if self.extra_steps >= self.max_extra_steps:
            self.exhausted = f"max_extra_steps ({self.max_extra_steps}) reached"
            return False
        algorithm = self.algorithm
        before = len(algorithm.trajectory)
        if not algorithm.continue_below(algorithm.current_latency):
            self.exhausted = algorithm.stop_reason or "slimming cannot continue"
            return False
        self.rounds += 1
        self.algorithm = self.continue_round(algorithm, self.rounds)
        if len(self.algorithm.trajectory) <= before:
            self.exhausted = self.algorithm.stop_reason or "the extra round added no step"
            return False
        self.extra_steps += len(self.algorithm.trajectory) - before
        return True


def verify_slimming(run: SlimmingRun, target_ms: float, cache: MeasurementCache, tolerance_pct: float,
                    batch: int = BATCH) -> Verification:
    """Slimming's answer for ``target_ms``, verified on the device, the trajectory extended as needed.

    Steps already in the trajectory are measured ``batch`` at a time; a new step is measured as soon as it exists.
    Verify a sweep's targets loosest first: a tighter target's walk then starts where the trajectory already is.
    """
    start = run.algorithm.answer_index(target_ms)
    if start is None:
        return unverified(run.algorithm, target_ms, "no answer")
    index = start
    while True:
        trajectory = run.algorithm.trajectory
        if index >= len(trajectory):
            if not run.extend():
                break
            continue
        step_arch = trajectory[index].arch
        if cache.get(step_arch) is None:
            cache.measure([s.arch for s in trajectory[index:index + max(1, batch)]])
        measured = cache.get(step_arch)
        if within_tolerance(measured, target_ms, tolerance_pct):
            evaluations = trajectory[index].evaluations
            return Verification(target_ms, run.algorithm.evaluation_at(index), evaluations, "met", measured, True,
                                index - start, max(0, evaluations - run.base_evaluations))
        index += 1
    first = run.algorithm.evaluation_at(start)
    return Verification(target_ms, first, run.algorithm.evaluations, "not met", cache.get(first.arch), False,
                        len(run.algorithm.trajectory) - 1 - start, run.extra_evaluations,
                        note=f"no step measures at or under {tolerance_limit(target_ms, tolerance_pct):.4g} ms "
                             f"({run.exhausted})")
