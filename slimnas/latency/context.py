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
3. **Parts no covering network holds** (only when the cover is partial) take their isolated timing (the builder
   times every part alone too, in that case) times the median in-context/isolated ratio of the parts of the same kind
   and stage that were covered.
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
7. **Earlier stages' widths.** A part also runs slower after wider earlier stages, beyond what the network's weights
   say: on ``tiny``, parts after a 32-channel first stage ran 2-5% slower than the same parts after a 16-channel one
   (stage-1 MB4D 5%), and the validation residual correlated at 0.72 with the first stage's width; a linear term in
   the network's activation bytes did not capture it. The working-set term has one more variable per stage: ``log
   t(part, network) = log e(part) + slope * (W - at) + sum over stages s before the part's of beta_s * (width_s -
   at_s)``, all slopes estimated jointly by least squares from the within-part variation across covering networks
   (:func:`context_deviation`), entries stored at the covering networks' mean widths
   (``TableMeta.context_width_slopes`` per channel, ``context_at_widths``). The same variables applied to every
   part of the network, own stage included, helped one of two builds and hurt the other; applied to later stages
   only, both improved (``docs/benchmarks.md``, "Earlier stages' widths").

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
from .protocol import ContextSamples, Progress, Protocol, assess, run_passes, statistic_of

__all__ = ["covering_archs", "ContextResult", "measure_in_context", "summarize_context", "context_deviation", "combine",
           "HARNESSES", "MIN_REPEAT_RATIOS"]

#: How a table's parts are timed: inside covering networks, or each alone in a loop.
HARNESSES = ("context", "isolated")
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
    """What timing in context gave: per covered part its in-context timing (at ``at_mib`` of network weights and the
    stage widths ``at_widths``), the per-network overhead, the working-set slopes and the repeat factors."""

    entries: dict[Part, Timing]
    overhead_ms: float
    networks: int
    disturbed: int  # network passes dropped as disturbed
    passes: int  # network passes in all
    slope_per_mib: float = 0.0
    at_mib: float = 0.0
    repeat_factors: dict[str, float] = field(default_factory=dict)  # repeat_key -> a repeat's time / the first's
    width_slopes: tuple[float, ...] = ()  # per stage: log-time slope per channel of the stage's width (step 7)
    at_widths: tuple[float, ...] = ()  # the covering networks' mean stage widths (where entries are)


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
    enables the working-set term, with the archs' stage widths (step 7)."""
    from .modules import network_parts

    def sample_pass(i: int) -> ContextSamples:
        network, modules, example = network_parts(archs[i], batch, form, num_classes, in_chans)
        return backend.sample_context(network, modules, example, protocol)

    records = run_passes(len(archs), sample_pass, protocol, times=lambda r: r.network,
                         names=[f"network {i + 1}/{len(archs)}" for i in range(len(archs))], done=done,
                         on_pass=on_pass, on_progress=on_progress, tick=tick)
    return summarize_context([parts_of(a, num_classes, in_chans) for a in archs], records, protocol, weights,
                             [a.widths for a in archs])


def summarize_context(networks: Sequence[Sequence[Part]], records: Sequence[Sequence[ContextSamples]],
                      protocol: Protocol, weights: Mapping[Part, float] | None = None,
                      widths: Sequence[Sequence[int]] | None = None) -> ContextResult:
    """The entries, overhead, working-set slopes and repeat factors from each covering network's parts (network
    order) and its passes in context (steps 2, 4-7 of the module docstring). ``weights`` (MiB per part) enables the
    working-set term, ``widths`` (each network's stage widths) its stage-width variables."""
    # (part, its network: weights MiB and stage widths, in-context samples, repeat)
    observed: list[tuple[Part, tuple[float, ...], list[float], bool]] = []
    ratios: dict[str, list[float]] = {}  # repeat_key -> a repeat's statistic / the first of its run's
    overheads, variables, disturbed, total = [], [], 0, 0
    use_widths = bool(weights) and widths is not None
    for n, (parts, passes) in enumerate(zip(networks, records)):
        verdict = assess([r.network for r in passes], protocol)
        disturbed += verdict.disturbed
        total += len(passes)
        kept = [r for r, ok in zip(passes, verdict.accepted) if ok]
        size = sum(weights.get(p, 0.0) for p in parts) if weights else 0.0
        z = (size, *(float(w) for w in widths[n])) if use_widths else (size,)
        variables.append(z)
        inside = first = 0.0
        for i, part in enumerate(parts):
            values = [v for r in kept for v in r.parts[i]]
            value = statistic_of(values, protocol.statistic)
            repeat = i > 0 and parts[i - 1] == part
            if not repeat:
                first = value
            elif first > 0 and value > 0:
                ratios.setdefault(repeat_key(part), []).append(value / first)
            observed.append((part, z, values, repeat))
            inside += value
        overheads.append(verdict.value - inside)
    factors = {key: float(np.exp(np.mean(np.log(r)))) for key, r in ratios.items() if len(r) >= MIN_REPEAT_RATIOS}
    at = np.mean(np.asarray(variables, dtype=float), axis=0) if variables else np.zeros(1)
    # from here on a repeat's samples stand for the first occurrence's (divided by its factor), and each occurrence
    # carries its context variables' deviations from ``at`` (a stage's width only for parts of later stages)
    observed_first = [(part, context_deviation(part, z[0], z[1:], at[0], at[1:]),
                       [v / factors.get(repeat_key(part), 1.0) for v in values] if repeat else values)
                      for part, z, values, repeat in observed]
    slopes = _context_slopes(observed_first, protocol.statistic) if weights else np.zeros(len(at))
    pooled: dict[Part, list[float]] = {}
    for part, deviation, values in observed_first:
        scale = math.exp(-float(slopes @ deviation))
        pooled.setdefault(part, []).extend(v * scale for v in values)
    entries = {part: Timing.from_samples(values) for part, values in pooled.items()}
    return ContextResult(entries, float(np.median(overheads)) if overheads else 0.0, len(networks), disturbed, total,
                         float(slopes[0]), float(at[0]), factors,
                         tuple(float(b) for b in slopes[1:]), tuple(float(a) for a in at[1:]))


def context_deviation(part: Part, weights_mib: float, widths: Sequence[float], at_mib: float,
                      at_widths: Sequence[float]) -> np.ndarray:
    """The working-set term's variables for ``part`` inside a network of ``weights_mib`` MiB of weights and stage
    ``widths``, as deviations from where entries are (``at_mib``, ``at_widths``): the weights, then each stage's
    width for a part of a later stage (0 for the part's own and later stages: step 7)."""
    stage = part.stage if part.stage is not None else 0
    return np.asarray([weights_mib - at_mib, *(float(w) - a if s < stage else 0.0
                                               for s, (w, a) in enumerate(zip(widths, at_widths)))])


def _context_slopes(observed: Sequence[tuple[Part, np.ndarray, list[float]]], statistic: str) -> np.ndarray:
    """The working-set slopes (per MiB of weights, per channel of each earlier stage's width) from the within-part
    variation across networks: least squares on the part-demeaned log latencies and context variables."""
    by_part: dict[Part, list[tuple[np.ndarray, float]]] = {}
    for part, z, values in observed:
        value = statistic_of(values, statistic)
        if value > 0:
            by_part.setdefault(part, []).append((z, math.log(value)))
    width = len(observed[0][1]) if observed else 1
    xs, ys = [], []
    for points in by_part.values():
        if len(points) < 2:
            continue
        x = np.vstack([z for z, _ in points])
        y = np.asarray([v for _, v in points])
        xs.append(x - x.mean(axis=0))
        ys.append(y - y.mean())
    if not xs:
        return np.zeros(width)
    x, y = np.vstack(xs), np.concatenate(ys)
    if not np.any(x):
        return np.zeros(width)
    return np.linalg.lstsq(x, y, rcond=None)[0]


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
