"""The printed comparison of a search job: per target, each method's answer with its top-1's confidence interval,
and the best marked.

A top-1 measured on a few hundred validation images is a binomial proportion with a wide interval: on 256 images,
0.93 is [0.89, 0.95] at 95%. Two methods whose intervals overlap are not told apart by this validation set, and the
table says so instead of crowning the one ahead by an image or two. The interval is Wilson's score interval
(:func:`wilson_interval`), which stays inside [0, 1] and behaves at 0 and 1 errors, unlike the normal approximation.

Per target, the *best* answer (``*``) is the highest top-1 among the answers that meet the target (measured on the
device within the tolerance; where the winners were not measured, every answer, since each is predicted under its
target); an answer that meets the target and whose interval overlaps the best's is *within noise* of it (``~``).
Plain Python.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["wilson_interval", "Interval", "best_marks", "comparison_text", "BEST", "WITHIN_NOISE", "Z95"]

#: The standard normal quantile of a two-sided 95% interval.
Z95 = 1.959963984540054
BEST, WITHIN_NOISE = "*", "~"


@dataclass(frozen=True)
class Interval:
    """A confidence interval of a proportion."""

    low: float
    high: float

    def overlaps(self, other: Interval) -> bool:
        return self.low <= other.high and other.low <= self.high


def wilson_interval(proportion: float, n: int, z: float = Z95) -> Interval:
    """Wilson's score interval of a binomial proportion observed as ``proportion`` of ``n`` trials (95% by default)."""
    if n < 1:
        raise ValueError(f"n: a proportion of {n} trials has no interval")
    if not 0.0 <= proportion <= 1.0:
        raise ValueError(f"proportion: {proportion} is not in [0, 1]")
    z2 = z * z
    denominator = 1.0 + z2 / n
    centre = (proportion + z2 / (2 * n)) / denominator
    half = z / denominator * math.sqrt(proportion * (1.0 - proportion) / n + z2 / (4 * n * n))
    return Interval(max(0.0, centre - half), min(1.0, centre + half))


class _Answer(Protocol):
    """What the comparison reads of a result (:class:`~slimnas.platform.stages.search.MethodResult`)."""

    method: str
    target_ms: float
    top1: float | None
    meets_target: bool | None
    images: int | None


def _interval(r: _Answer) -> Interval | None:
    return None if r.top1 is None or not r.images else wilson_interval(r.top1, r.images)


def _eligible(r: _Answer) -> bool:
    return r.top1 is not None and r.meets_target is not False


def best_marks(results: Sequence[_Answer]) -> list[str]:
    """Per result (same order): ``*`` the best at its target, ``~`` within noise of the best, else ``""`` (see the
    module docstring). Ties at the top are all ``*``."""
    marks = [""] * len(results)
    for target in {r.target_ms for r in results}:
        at = [i for i, r in enumerate(results) if r.target_ms == target and _eligible(r)]
        if not at:
            continue
        top = max(results[i].top1 for i in at)
        best = [i for i in at if results[i].top1 == top]
        bands = [b for b in (_interval(results[i]) for i in best) if b is not None]
        for i in at:
            if i in best:
                marks[i] = BEST
            elif (band := _interval(results[i])) is not None and any(band.overlaps(b) for b in bands):
                marks[i] = WITHIN_NOISE
    return marks


def comparison_text(results: Sequence[Any], arch_text: Any, notes: Sequence[str] = ()) -> str:
    """The comparison table: one block per target (loosest first), the methods in the job's order; then ``notes``
    (e.g. where the targets come from) and the legend. ``arch_text(result)`` renders a result's arch."""
    marks = best_marks(results)
    order = sorted(range(len(results)), key=lambda i: -results[i].target_ms)  # stable: the methods keep their order
    header = (f"{'method':18s} {'target':>7s} {'pred ms':>8s} {'meas ms':>8s} {'meets':>7s} {'top-1':>7s} "
              f"{'95% CI':>15s} {'best':>4s} {'evals':>6s} {'extra':>5s} {'wall s':>7s}  arch")
    lines = [header]
    fmt = lambda v, spec: "-".rjust(int(spec.split(".")[0])) if v is None else format(v, spec)  # noqa: E731
    previous = None
    for i in order:
        r = results[i]
        if previous is not None and r.target_ms != previous:
            lines.append("")
        previous = r.target_ms
        band = _interval(r)
        ci = "-" if band is None else f"[{band.low:.3f}, {band.high:.3f}]"
        lines.append(f"{r.method:18s} {r.target_ms:7.2f} {fmt(r.predicted_ms, '8.3f')} {fmt(r.measured_ms, '8.3f')} "
                     f"{r.meets_text():>7s} {fmt(r.top1, '7.4f')} {ci:>15s} {marks[i]:>4s} {r.evaluations:6d} "
                     f"{r.extra_evaluations:5d} {r.wall_s:7.1f}  {arch_text(r)}")
    images = sorted({r.images for r in results if r.images})
    on = (f"{images[0]} validation images" if len(images) == 1
          else f"{'/'.join(map(str, images))} validation images" if images else "the validation images")
    lines += [*notes,
              f"best: {BEST} the highest top-1 among the answers that meet their target; {WITHIN_NOISE} within noise "
              f"of it (their 95% Wilson intervals of top-1 on {on} overlap: this validation set does not tell them "
              f"apart)"]
    return "\n".join(lines)
