#!/usr/bin/env python
"""How well tables rank networks, against single measurements and against their consensus (issue 10's evidence).

    python benchmarks/tau_consensus.py --runs R1 R2 ... --tables NAME=VALIDATION_DIR ...

Every ``R`` and ``VALIDATION_DIR`` is a folder ``slimnas lut validate --num-archs N --seed S`` wrote (its
``validation.csv``), all on the same random networks (same ``N`` and ``S``; checked). The runs are repeated
measurements of those networks, each in a process of its own; a table's predictions are read from its own validation
folder. Prints, for each table, Kendall tau against every run (mean, min, max, how many >= 0.95) and against the
consensus (the geometric mean of all runs' measurements); how well the runs agree with one another (tau between
every two runs): a ceiling no table can beat on a single run; and each run against the consensus of the others (its
own precision). Only the ranking is compared (tau does not see the machine's speed, which differs from run to run).
No measurement is made here.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import sys
from pathlib import Path

import numpy as np
from scipy.stats import kendalltau


def random_rows(folder: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The random networks of a validation folder: archs (JSON), predicted ms, measured ms."""
    path = folder / "validation.csv"
    if not path.is_file():
        sys.exit(f"{folder}: no validation.csv")
    with path.open(newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["name"].startswith("random")]
    return ([r["arch"] for r in rows], np.array([float(r["predicted_ms"]) for r in rows]),
            np.array([float(r["measured_median_ms"]) for r in rows]))


def tau(a: np.ndarray, b: np.ndarray) -> float:
    return float(kendalltau(a, b)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", type=Path, required=True, help="validation folders: the measurements")
    parser.add_argument("--tables", nargs="+", required=True, help="NAME=VALIDATION_DIR: whose predictions to rank")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    archs, _, _ = random_rows(args.runs[0])
    measured = {}
    for run in args.runs:
        a, _, m = random_rows(run)
        if a != archs:
            sys.exit(f"{run}: other networks than {args.runs[0]} (same --num-archs and --seed needed)")
        measured[f"{run.parent.name}/{run.name}"] = m
    predicted = {}
    for spec in args.tables:
        name, _, folder = spec.partition("=")
        a, p, _ = random_rows(Path(folder))
        if a != archs:
            sys.exit(f"{folder}: other networks than {args.runs[0]}")
        predicted[name] = p
    consensus = np.exp(np.mean([np.log(m) for m in measured.values()], axis=0))
    pairs = [tau(a, b) for a, b in itertools.combinations(measured.values(), 2)]
    out: dict[str, object] = {"networks": len(archs), "runs": list(measured),
                              "run_vs_run": {"mean": float(np.mean(pairs)), "min": min(pairs), "max": max(pairs)}}
    print(f"{len(archs)} networks, {len(measured)} runs; tau between two runs: mean {np.mean(pairs):.3f}, "
          f"min {min(pairs):.3f}, max {max(pairs):.3f}")
    out["run_vs_others"] = {}
    for name, m in measured.items():  # each run against the consensus of all the others: how precise one run is
        others = np.exp(np.mean([np.log(v) for k, v in measured.items() if k != name], axis=0))
        residual = np.log(m / others)
        figures = {"tau": tau(m, others), "sd_pct": float(100 * (residual - residual.mean()).std())}
        out["run_vs_others"][name] = figures
        print(f"  run {name}: tau against the other runs' consensus {figures['tau']:.3f}, per-network sd "
              f"{figures['sd_pct']:.2f}%")
    for name, p in predicted.items():
        per_run = np.array([tau(p, m) for m in measured.values()])
        figures = {"per_run_mean": float(per_run.mean()), "per_run_min": float(per_run.min()),
                   "per_run_max": float(per_run.max()), "runs_at_least_0.95": int((per_run >= 0.95).sum()),
                   "vs_consensus": tau(p, consensus)}
        out[name] = figures
        print(f"{name}: tau per run mean {per_run.mean():.3f} (min {per_run.min():.3f}, max {per_run.max():.3f}, "
              f">= 0.95 in {(per_run >= 0.95).sum()} of {len(per_run)}); against the consensus "
              f"{figures['vs_consensus']:.3f}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
