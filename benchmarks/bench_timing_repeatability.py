#!/usr/bin/env python
"""Which timing statistic is repeatable on this machine? (issue 10's evidence for the protocol's statistic)

    python benchmarks/bench_timing_repeatability.py --space tiny --networks 20 --processes 6 --passes 4

Measures the same ``--networks`` random networks of a space (fused, torch-cpu, batch 1, 1 thread) in
``--processes`` separate processes, one after another, each taking ``--passes`` interleaved passes of single-call
samples (the protocol's sampling, ``pass_ms`` 40 ms, at least 10 samples). It then compares, for each candidate
statistic (minimum, 10th and 25th percentiles, median, mean of the pooled samples; and the protocol's own values:
the median after disturbed passes are dropped, of every accepted pass or of the 2, 3 or 4 quietest,
:func:`slimnas.latency.protocol.assess`), how much a network's value varies from process to process: the coefficient
of variation per network, the worst max/min ratio, and between every pair of processes the share of networks within
+-3% and +-10% and Kendall's tau. The most repeatable statistic is what a table should predict and a validation
should measure. Writes ``benchmarks/results/timing_repeatability-<space>[-<tag>].json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from itertools import combinations
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RESULTS = Path(__file__).resolve().parent / "results"
STATISTICS = {"min": lambda v: float(np.min(v)), "p10": lambda v: float(np.percentile(v, 10)),
              "p25": lambda v: float(np.percentile(v, 25)), "median": lambda v: float(np.median(v)),
              "mean": lambda v: float(np.mean(v))}
#: The protocol's values (disturbed passes dropped, then the statistic of every accepted pass or of the quietest).
QUIET = {"median, accepted passes": 0, "median, 4 quietest passes": 4, "median, 3 quietest passes": 3,
         "median, 2 quietest passes": 2}


def child(space_name: str, networks: int, passes: int, seed: int, copies: int = 1) -> None:
    """One process: every network's per-pass samples, as JSON on stdout."""
    from slimnas.latency.backends import TorchCPUBackend
    from slimnas.latency.modules import network_module
    from slimnas.latency.protocol import Protocol, run_passes
    from slimnas.latency.validate import validation_archs
    from slimnas.search_spaces.efficientformer import SearchSpace

    space = SearchSpace.preset(space_name)
    classes = 10 if space_name == "tiny" else 1000
    archs = [a for _, a in validation_archs(space, networks, seed)]
    nets = [network_module(a, 1, "fused", classes) for a in archs for _ in range(copies)]
    backend, protocol = TorchCPUBackend(threads=1), Protocol(passes=passes, extra_passes=0)
    records = run_passes(len(nets), lambda i: backend.sample(*nets[i], protocol), protocol)
    merged = [[p for c in range(copies) for p in records[n * copies + c]] for n in range(len(archs))]
    print(json.dumps({"archs": [a.to_json() for a in archs], "passes": merged}))


def analyse(runs: list[dict]) -> dict[str, dict[str, float]]:
    out = {}
    from slimnas.latency.protocol import Protocol, assess
    from slimnas.latency.validate import kendall_tau

    candidates = {name: (lambda net, stat=stat: stat([x for p in net for x in p])) for name, stat in STATISTICS.items()}
    candidates |= {name: (lambda net, k=k: assess(net, Protocol(quiet_passes=k)).value) for name, k in QUIET.items()}
    for name, stat in candidates.items():
        values = np.array([[stat(net) for net in run["passes"]] for run in runs])
        cv = values.std(axis=0, ddof=1) / values.mean(axis=0) * 100
        pairs = list(combinations(range(len(runs)), 2))
        within3 = [float(np.mean(np.abs(values[i] / values[j] - 1) <= 0.03)) for i, j in pairs]
        within10 = [float(np.mean(np.abs(values[i] / values[j] - 1) <= 0.10)) for i, j in pairs]
        taus = [kendall_tau(values[i], values[j]) for i, j in pairs]
        out[name] = {"cv_mean_pct": float(cv.mean()), "cv_max_pct": float(cv.max()),
                     "worst_max_over_min": float((values.max(axis=0) / values.min(axis=0)).max()),
                     "pairs_within_3pct": float(np.mean(within3)), "pairs_within_10pct": float(np.mean(within10)),
                     "pairs_tau_mean": float(np.mean(taus)), "pairs_tau_min": float(np.min(taus))}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="tiny")
    parser.add_argument("--networks", type=int, default=20)
    parser.add_argument("--processes", type=int, default=6)
    parser.add_argument("--passes", type=int, default=4)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--copies", type=int, default=1,
                        help="instances of each network (own weights and buffers), measured as separate items")
    parser.add_argument("--tag", default="", help="added to the results file's name")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.space, args.networks, args.passes, args.seed)
        return
    runs = []
    started = time.time()
    for k in range(args.processes):
        proc = subprocess.run([sys.executable, __file__, "--child", "--space", args.space, "--networks",
                               str(args.networks), "--passes", str(args.passes), "--seed", str(args.seed),
                               "--copies", str(args.copies)],
                              capture_output=True, text=True, check=True)
        runs.append(json.loads(proc.stdout))
        print(f"process {k + 1}/{args.processes} done ({time.time() - started:.0f} s)", flush=True)
    summary = analyse(runs)
    print(f"{'statistic':26s} {'CV mean':>8s} {'CV max':>8s} {'max/min':>8s} {'pairs ±3%':>10s} {'pairs ±10%':>11s} "
          f"{'tau':>6s} {'tau min':>8s}")
    for name, s in summary.items():
        print(f"{name:26s} {s['cv_mean_pct']:7.2f}% {s['cv_max_pct']:7.2f}% {s['worst_max_over_min']:8.3f} "
              f"{100 * s['pairs_within_3pct']:9.0f}% {100 * s['pairs_within_10pct']:10.0f}% "
              f"{s['pairs_tau_mean']:6.3f} {s['pairs_tau_min']:8.3f}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"timing_repeatability-{args.space}{'-' + args.tag if args.tag else ''}.json"
    out.write_text(json.dumps({"args": vars(args), "summary": summary,
                               "date": time.strftime("%Y-%m-%d %H:%M"), "wall_s": time.time() - started}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
