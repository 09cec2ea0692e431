#!/usr/bin/env python
"""Could ONNX Runtime tables time parts in context, through ONNX Runtime's profiler? (issue 10; a probe, no table)

    python benchmarks/probe_ort_in_context.py [--rounds 2] --validations DIR ...

Times the `tiny` space's 96 covering networks (the torch-cpu tables' cover, eager form, 10 classes) on the
``onnxruntime`` backend: per network and round, 15 profiled calls, each after an unprofiled call
(:func:`slimnas.profile.ort_profiler.profile_session`). Each node's kernel time goes to the part whose module the
exporter named it after (as ``slimnas lut explain`` does). A part's in-context entry is the median of its per-call
kernel sums over its occurrences, repeats divided by their repeat factor
(:func:`slimnas.latency.context.summarize_context`, the torch tables' own step). What the whole unprofiled call spends
beyond the kernels is fitted per network as ``a + b * nodes``. The profiler adds a few microseconds to every node, so
``b`` comes out negative. Predictions are then ranked against the measurements of the ``slimnas lut validate --seed
1`` folders given (Kendall tau, and within +-10% after one common scale), next to those tables' own predictions.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy.stats import kendalltau

from slimnas.latency import get_backend, parts_of, repeat_key
from slimnas.latency.context import covering_archs, summarize_context
from slimnas.latency.modules import network_parts
from slimnas.latency.protocol import ContextSamples, Protocol
from slimnas.profile.ort_profiler import profile_session
from slimnas.search_spaces import Arch, SearchSpace

CLASSES = 10


def profiled_cover(rounds: int) -> tuple[list[Arch], dict[int, list[tuple[float, list[float], list[int]]]]]:
    """Per covering network, per profiled call: (unprofiled whole ms, kernel ms per part, nodes per part)."""
    space = SearchSpace.preset("tiny")
    backend = get_backend("onnxruntime", threads=1)
    cover = covering_archs(space, CLASSES, 3, 2, 96)
    built = [network_parts(a, 1, "eager", CLASSES, 3) for a in cover]
    calls: dict[int, list[tuple[float, list[float], list[int]]]] = defaultdict(list)
    for _ in range(rounds):
        for k, (arch, (network, modules, example)) in enumerate(zip(cover, built)):
            names = {id(m): n for n, m in network.named_modules()}
            index_of = {names[id(m)]: i for i, m in enumerate(modules) if id(m) in names}
            rest = [i for i, m in enumerate(modules) if id(m) not in names]  # the eager head wraps the network
            count = len(parts_of(arch, CLASSES))
            profiled = profile_session(backend, network, example, 15, Protocol())
            for samples, plain in zip(profiled.samples, profiled.plain):
                ms, nodes = [0.0] * count, [0] * count
                for s in samples:
                    i = index_of.get(s.unit.module, rest[0] if rest else count - 1)
                    ms[i] += s.ms
                    nodes[i] += 1
                calls[k].append((plain, ms, nodes))
    return cover, calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--validations", nargs="+", type=Path, required=True,
                        help="onnxruntime `lut validate --seed 1` folders of the tiny space")
    args = parser.parse_args()
    started = time.perf_counter()
    cover, calls = profiled_cover(args.rounds)
    print(f"profiled {len(cover)} networks x {args.rounds} rounds in {time.perf_counter() - started:.0f} s")
    networks = [parts_of(a, CLASSES) for a in cover]
    result = summarize_context(networks, [[ContextSamples([c[0] for c in calls[k]], [list(v) for v in
                                                           zip(*(c[1] for c in calls[k]))])]
                                          for k in range(len(cover))], Protocol(passes=1))
    entries = {p: t.median for p, t in result.entries.items()}
    factors = result.repeat_factors
    nodes_of: dict = defaultdict(list)
    gaps, node_counts = [], []
    for k, parts in enumerate(networks):
        nodes = np.median([c[2] for c in calls[k]], axis=0)
        for part, n in zip(parts, nodes):
            nodes_of[part].append(n)
        gaps.append(float(np.median([c[0] for c in calls[k]])) - float(np.median([c[1] for c in calls[k]],
                                                                                  axis=0).sum()))
        node_counts.append(float(nodes.sum()))
    nodes_per = {p: float(np.median(v)) for p, v in nodes_of.items()}
    slope, intercept = np.polyfit(node_counts, gaps, 1)
    print(f"repeat factors {({k: round(v, 3) for k, v in factors.items()})}; whole - kernels: "
          f"{intercept:.4f} ms {slope * 1e3:+.2f} us per node (correlation with nodes "
          f"{np.corrcoef(node_counts, gaps)[0, 1]:.2f})")

    def predict(arch: Arch) -> float:
        parts = parts_of(arch, CLASSES)
        total = sum(entries[p] * (factors.get(repeat_key(p), 1.0) if i and parts[i - 1] == p else 1.0)
                    for i, p in enumerate(parts))
        return total + intercept + slope * sum(nodes_per[p] for p in parts)

    for folder in args.validations:
        with (folder / "validation.csv").open(newline="") as handle:
            rows = [r for r in csv.DictReader(handle) if r["name"].startswith("random")]
        rows = [r for r in rows if all(p in entries for p in parts_of(Arch.from_dict(json.loads(r["arch"])), CLASSES))]
        measured = np.array([float(r["measured_median_ms"]) for r in rows])
        table = np.array([float(r["predicted_ms"]) for r in rows])
        ours = np.array([predict(Arch.from_dict(json.loads(r["arch"]))) for r in rows])
        ours = ours * float(np.median(measured / ours))
        print(f"{folder}: {len(rows)} networks; its table tau {kendalltau(table, measured)[0]:.3f}, within 10% "
              f"{np.mean(np.abs(table / measured - 1) <= 0.1):.0%}; in context (profiler) tau "
              f"{kendalltau(ours, measured)[0]:.3f}, within 10% {np.mean(np.abs(ours / measured - 1) <= 0.1):.0%}")


if __name__ == "__main__":
    main()
