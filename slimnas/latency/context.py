"""Parts timed in context: inside running networks, with their real producer and consumer.

Timed alone in a loop, a small part runs faster than inside a network: its weights and input stay in the core's
caches, its code stays hot, the allocator recycles one block. On ``tiny`` at 64 px (parts of 2-300 us) the plain sum
of isolated timings missed whole networks by -19% (-3% with weight rotation, and -10% to -12% while other processes
used the machine: the gap moves with the machine's load). Measured where the network runs it, a part's time already
contains all of that. ``harness="context"`` (the default for backends that can, :attr:`Backend.supports_context`):

1. **Covering networks.** From a seeded pool of random archs of the space, a greedy cover picks networks until every
   part occurs in ``cover`` of them (2 by default), or ``max_networks`` are taken (``tiny``: a full cover takes 96
   networks; ``l7``'s 1,512 downsample width pairs would take over a thousand, so it is covered partly).
2. **Timing in context.** Each network is timed under the protocol (:mod:`.protocol`): alternately a whole call, and
   a call that runs the network's modules in turn (the same computation) with a clock read between modules; one
   module = one part (:func:`~slimnas.latency.modules.network_parts`). A pass is disturbed by the whole calls'
   statistic, as for any network; a part's entry is the protocol statistic of its in-context times over every
   accepted pass of every covering network it occurs in.
3. **Parts no covering network holds** (only when the cover is partial; on ``l7`` 1,265 of 1,824 parts, every one a
   downsample) are filled in one of two ways (``fill``):

   - ``fitted`` (the default): from the in-context entries of the covered parts of the same kind and stage, by a
     least-squares fit of ``t = b0 + b1 c_in + b2 c_out + b3 c_in c_out`` weighted for relative error
     (:func:`fit_uncovered`; the value clamped to half the smallest and twice the largest covered entry), each
     part's timing the nearest covered part's scaled to the fitted value. It needs :data:`MIN_FIT_PARTS` covered
     parts per kind and stage, else the build falls back to ``isolated``. Downsamples are ~1% of a network's time:
     the fit's leave-one-out error on an H200's ``l7`` entries (11-17% per part) moves a network by a few tenths of a
     percent, while timing every part alone took over half of an ``l7`` build (18 of 35 minutes on 2 CPU cores, 31
     of 35 on an H200). The fit's leave-one-out error per kind and stage is recorded in the table's notes.
   - ``isolated``: the builder times every part alone too, and an uncovered part takes its isolated timing times the
     median in-context/isolated ratio of the covered parts of the same kind and stage.
4. **Per-network overhead.** What a whole call spends outside its parts (the stage loop's Python, and minus the
   clock reads of the instrumented calls): the median over covering networks of ``whole - sum(parts)``, recorded
   as ``TableMeta.overhead_ms`` and added once to every prediction.
5. **The working-set term.** The same part runs slower inside a network with more weights: the rest of the network
   evicts its weights from the caches between two inferences. Validated on ``tiny``, the sum of in-context entries
   over-predicted small networks and under-predicted large ones, its error correlated at 0.79 with the network's
   weight size (about +2% per MiB). Every part occurs in several covering networks of different sizes, so the
   effect is measured, not fitted to validation: ``log t(part, network) = log e(part) + slope * (W(network) - at)``,
   the slope from the within-part variation across networks (least squares), ``W`` the network's weights in MiB and
   ``at`` the covering networks' mean. Entries are stored at ``W = at``; a prediction multiplies the sum of an arch's
   entries by ``exp(slope * (W(arch) - at))`` (``TableMeta.context_slope_per_mib``, ``context_at_mib``; each part's
   weight size is a column of the table).
6. **Repeated blocks.** A block right after an identical one (the second and later MB4D of a stage at one width, the
   second and later MB3D) runs faster than the first of its run: on ``tiny``, timed in the same network, repeats
   took 0.87-0.93 of the first block. Pooling both into one entry over-predicted networks with long runs of blocks
   and under-predicted networks with one block per stage, an error common to every build (the residuals of two
   builds against the same measurements correlated at 0.94). Per part kind and stage, the repeat factor is the
   geometric mean, over covering networks, of a repeat's time over the first of its run's
   (:data:`MIN_REPEAT_RATIOS` ratios at least, else none). Entries are the first occurrence's time (repeats divided
   by the factor before pooling), and a prediction counts each repeat at entry x factor
   (``TableMeta.repeat_factors``; figures in ``docs/benchmarks.md``).

The evidence (``docs/benchmarks.md``, "Part-to-network gap") and the reasoning (``docs/design.md``) say why this and not
a fitted calibration: once parts were measured under the protocol, fitting per-kind corrections on measured networks
did not beat the plain sum at any training size (the learning curve was flat), while context moved the bias.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from slimnas.search_spaces import Arch, SearchSpace

from ._parts import Part, parts_of, repeat_key
from ._timing import Timing
from .protocol import ContextSamples, Progress, Protocol, assess, run_passes, session_spread, statistic_of

__all__ = ["covering_archs", "ContextResult", "measure_in_context", "summarize_context", "combine", "fit_uncovered",
           "HARNESSES", "FILLS", "MIN_REPEAT_RATIOS", "MIN_FIT_PARTS"]

#: How a table's parts are timed: inside covering networks, or each alone in a loop.
HARNESSES = ("context", "isolated")
#: How a context table fills the parts no covering network holds (see the module docstring, step 3).
FILLS = ("fitted", "isolated")
#: Fewest covered parts of a kind and stage that a fit of its uncovered parts needs (four coefficients, twice over).
MIN_FIT_PARTS = 8
#: Fewest repeat/first ratios (one per repeat in a covering network) a part kind and stage needs for a repeat factor.
MIN_REPEAT_RATIOS = 3
_POOL = 3000


def covering_archs(space: SearchSpace, num_classes: int = 1000, in_chans: int = 3, cover: int = 2,
                   max_networks: int = 96, seed: int = 0) -> list[Arch]:
    """Archs chosen greedily from a seeded random pool until every part of the space occurs in ``cover`` of them (or
    ``max_networks`` are chosen); each pick adds the most parts still short of their cover."""
    rng = random.Random(seed)
    pool = [space.sample(rng) for _ in range(_POOL)]
    sets = [set(parts_of(a, num_classes, in_chans)) for a in pool]
    counts: dict[Part, int] = {}
    chosen: list[Arch] = []
    used: set[int] = set()
    while len(chosen) < max_networks:
        gains = [(sum(1 for p in parts if counts.get(p, 0) < cover), -i) for i, parts in enumerate(sets)
                 if i not in used]
        gain, neg = max(gains, default=(0, 0))
        if gain == 0:
            break
        used.add(-neg)
        chosen.append(pool[-neg])
        for p in sets[-neg]:
            counts[p] = counts.get(p, 0) + 1
    return chosen


@dataclass(frozen=True)
class ContextResult:
    """What timing in context gave: per covered part its in-context timing (at ``at_mib`` of network weights), the
    per-network overhead and the working-set slope."""

    entries: dict[Part, Timing]
    overhead_ms: float
    networks: int
    disturbed: int  # network passes dropped as disturbed
    passes: int  # network passes in all
    slope_per_mib: float = 0.0
    at_mib: float = 0.0
    repeat_factors: dict[str, float] = field(default_factory=dict)  # repeat_key -> a repeat's time / the first's
    spread: float = float("nan")  # the networks' pass spread (protocol.session_spread of their whole calls)


def measure_in_context(
    archs: Sequence[Arch],
    backend,
    protocol: Protocol,
    batch: int = 1,
    form: str = "fused",
    num_classes: int = 1000,
    in_chans: int = 3,
    *,
    done: Mapping[tuple[int, int], ContextSamples] | None = None,
    on_pass: Callable[[int, int, ContextSamples], None] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    tick: Callable[[bool], None] | None = None,
    weights: Mapping[Part, float] | None = None,
) -> ContextResult:
    """Time ``archs``' networks in context (see the module docstring); ``done``/``on_pass``/``tick`` as in
    :func:`~slimnas.latency.protocol.run_passes` (a build's journal, the reference clock). ``weights`` (MiB per part)
    enables the working-set term."""
    from .backends import building
    from .modules import network_parts

    def sample_pass(i: int) -> ContextSamples:
        with building(backend):
            network, modules, example = network_parts(archs[i], batch, form, num_classes, in_chans)
        return backend.sample_context(network, modules, example, protocol)

    records = run_passes(len(archs), sample_pass, protocol, times=lambda r: r.network,
                         names=[f"network {i + 1}/{len(archs)}" for i in range(len(archs))], done=done,
                         on_pass=on_pass, on_progress=on_progress, tick=tick)
    return summarize_context([parts_of(a, num_classes, in_chans) for a in archs], records, protocol, weights)


def summarize_context(networks: Sequence[Sequence[Part]], records: Sequence[Sequence[ContextSamples]],
                      protocol: Protocol, weights: Mapping[Part, float] | None = None) -> ContextResult:
    """The entries, overhead, working-set slope and repeat factors from each covering network's parts (network
    order) and its passes in context (steps 2, 4-6 of the module docstring)."""
    observed: list[tuple[Part, float, list[float], bool]] = []  # (part, network MiB, in-context samples, repeat)
    ratios: dict[str, list[float]] = {}  # repeat_key -> a repeat's statistic / the first of its run's
    overheads, sizes, disturbed, total, verdicts = [], [], 0, 0, []
    for parts, passes in zip(networks, records):
        verdict = assess([r.network for r in passes], protocol)
        verdicts.append(verdict)
        disturbed += verdict.disturbed
        total += len(passes)
        kept = [r for r, ok in zip(passes, verdict.pooled) if ok]
        size = sum(weights.get(p, 0.0) for p in parts) if weights else 0.0
        sizes.append(size)
        inside = first = 0.0
        for i, part in enumerate(parts):
            values = [v for r in kept for v in r.parts[i]]
            value = statistic_of(values, protocol.statistic)
            repeat = i > 0 and parts[i - 1] == part
            if not repeat:
                first = value
            elif first > 0 and value > 0:
                ratios.setdefault(repeat_key(part), []).append(value / first)
            observed.append((part, size, values, repeat))
            inside += value
        overheads.append(verdict.value - inside)
    factors = {key: float(np.exp(np.mean(np.log(r)))) for key, r in ratios.items() if len(r) >= MIN_REPEAT_RATIOS}
    # from here on a repeat's samples stand for the first occurrence's (divided by its factor)
    observed_first = [(part, size, [v / factors.get(repeat_key(part), 1.0) for v in values] if repeat else values)
                      for part, size, values, repeat in observed]
    slope = _working_set_slope(observed_first, protocol.statistic) if weights else 0.0
    at = float(np.mean(sizes)) if sizes else 0.0
    pooled: dict[Part, list[float]] = {}
    for part, size, values in observed_first:
        scale = math.exp(-slope * (size - at))
        pooled.setdefault(part, []).extend(v * scale for v in values)
    entries = {part: Timing.from_samples(values) for part, values in pooled.items()}
    return ContextResult(entries, float(np.median(overheads)) if overheads else 0.0, len(networks), disturbed, total,
                         slope, at, factors, session_spread(verdicts))


def _working_set_slope(observed: Sequence[tuple[Part, float, list[float]]], statistic: str) -> float:
    """The working-set slope (per MiB) from the within-part variation across networks (least squares on the
    part-demeaned log latencies)."""
    by_part: dict[Part, list[tuple[float, float]]] = {}
    for part, size, values in observed:
        value = statistic_of(values, statistic)
        if value > 0:
            by_part.setdefault(part, []).append((size, math.log(value)))
    xs, ys = [], []
    for points in by_part.values():
        if len(points) < 2:
            continue
        mx = np.mean([x for x, _ in points])
        my = np.mean([y for _, y in points])
        xs += [x - mx for x, _ in points]
        ys += [y - my for _, y in points]
    x, y = np.asarray(xs), np.asarray(ys)
    if not len(x) or float(x @ x) == 0.0:
        return 0.0
    return float(x @ y / (x @ x))


def combine(context: ContextResult, isolated: Mapping[Part, Timing], statistic: str) -> dict[Part, Timing]:
    """Every part's entry: in context where covered, else its isolated timing scaled by the median
    in-context/isolated ratio of covered parts of the same kind and stage (of the same kind; else unscaled)."""
    ratios: dict[tuple[str, int | None], list[float]] = {}
    for part, timing in context.entries.items():
        if part in isolated and isolated[part].get(statistic) > 0:
            ratio = timing.get(statistic) / isolated[part].get(statistic)
            ratios.setdefault((part.kind, part.stage), []).append(ratio)
            ratios.setdefault((part.kind, None), []).append(ratio)
    out = dict(context.entries)
    for part, timing in isolated.items():
        if part in out:
            continue
        found = ratios.get((part.kind, part.stage)) or ratios.get((part.kind, None)) or [1.0]
        out[part] = _scaled(timing, float(np.median(found)))
    return out


def _features(parts: Sequence[Part]) -> np.ndarray:
    c_in = np.array([p.c_in for p in parts], dtype=np.float64)
    c_out = np.array([p.c_out for p in parts], dtype=np.float64)
    return np.stack([np.ones_like(c_in), c_in, c_out, c_in * c_out], axis=1)


def _fit(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least squares of ``x @ b ~ y`` weighted for relative error (each row divided by its ``y``)."""
    coef, *_ = np.linalg.lstsq(x / y[:, None], np.ones(len(y)), rcond=None)
    return coef


def fit_uncovered(entries: Mapping[Part, Timing], parts: Sequence[Part], statistic: str,
                  ) -> tuple[dict[Part, Timing], dict[str, float]] | None:
    """Entries for ``parts`` (none of them in ``entries``) fitted on the covered parts of their kind and stage (step
    3, ``fitted``), and the fit's leave-one-out mean absolute error (%) per ``"kind/stage"``; ``None`` when some kind
    and stage has fewer than :data:`MIN_FIT_PARTS` covered parts."""
    groups: dict[tuple[str, int], list[Part]] = {}
    for part in parts:
        groups.setdefault((part.kind, part.stage), []).append(part)
    out: dict[Part, Timing] = {}
    errors: dict[str, float] = {}
    for (kind, stage), missing in groups.items():
        known = [p for p in entries if p.kind == kind and p.stage == stage and entries[p].get(statistic) > 0]
        if len(known) < MIN_FIT_PARTS:
            return None
        x, y = _features(known), np.array([entries[p].get(statistic) for p in known])
        low, high = 0.5 * float(y.min()), 2.0 * float(y.max())
        loo = []
        for i in range(len(known)):
            keep = np.arange(len(known)) != i
            guess = float(np.clip(x[i] @ _fit(x[keep], y[keep]), low, high))
            loo.append(abs(guess - y[i]) / y[i])
        errors[f"{kind}/{stage}"] = 100.0 * float(np.mean(loo))
        fitted = np.clip(_features(missing) @ _fit(x, y), low, high)
        for part, value in zip(missing, fitted):
            nearest = min(known, key=lambda p: (abs(p.c_in - part.c_in) + abs(p.c_out - part.c_out), p))
            out[part] = _scaled(entries[nearest], float(value) / entries[nearest].get(statistic))
    return out, errors


def _scaled(timing: Timing, factor: float) -> Timing:
    return Timing(median=timing.median * factor, mean=timing.mean * factor, p10=timing.p10 * factor,
                  p90=timing.p90 * factor, std=timing.std * factor, count=timing.count, p25=timing.p25 * factor,
                  min=timing.min * factor)


def journal_record(kind: str, index: int, pass_index: int, record: ContextSamples | list[float],
                   part: Part | None = None, during: str | None = None) -> str:
    """One journal line (see :mod:`.builder`); ``during``: the stage a reference measurement was taken in."""
    if isinstance(record, ContextSamples):
        body = {"network": [round(v, 7) for v in record.network],
                "parts": [[round(v, 7) for v in row] for row in record.parts]}
    else:
        body = {"samples": [round(v, 7) for v in record]}
    head = {"stage": kind, "index": index, "pass": pass_index}
    if part is not None:
        head["part"] = [part.kind, part.stage, part.c_in, part.c_out]
    if during is not None:
        head["during"] = during
    return json.dumps(head | body)
