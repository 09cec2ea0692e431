#!/usr/bin/env python
"""Build and validate a latency table, and measure how repeatable the ground truth is (issue 3's evidence).

    python benchmarks/bench_latency_table.py --space l7 --out benchmarks/results/l7-torch-cpu.parquet \
        [--threads 1] [--passes 4] [--rotation-mb 32] [--repeats 5] [--num-archs 50] [--seed 0]

1. Builds the complete table of the space on ``torch-cpu`` (resumable; reused if ``--out`` exists).
2. Validates it on the space's presets and ``--num-archs`` random archs (``validate_table``), writing the CSV, PNG
   and JSON next to the table, with the calibrated predictor fitted on 30% of the random archs.
3. Measures the same networks a second time and compares the two measurements with the same statistics: the noise
   floor of "measured latency" on this machine, against which the table's errors must be read.

Writes ``<out stem>-validation/`` and ``benchmarks/results/bench_latency_table-<space>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from slimnas.latency import LatencyTable, build_table  # noqa: E402
from slimnas.latency.backends import TorchCPUBackend  # noqa: E402
from slimnas.latency.validate import error_metrics, validate_table  # noqa: E402
from slimnas.search_spaces.efficientformer import SearchSpace  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def progress(label: str):
    last = [0.0]

    def show(p) -> None:
        if time.monotonic() - last[0] > 30 or p.done == p.total:
            last[0] = time.monotonic()
            print(f"[{label}] {p.line()}", flush=True)

    return show


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="l7")
    parser.add_argument("--out", required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--passes", type=int, default=4)
    parser.add_argument("--rotation-mb", type=float, default=32.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup-ms", type=float, default=30.0)
    parser.add_argument("--num-archs", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    space = SearchSpace.preset(args.space)
    backend = TorchCPUBackend(threads=args.threads, repeats=args.repeats, warmup_ms=args.warmup_ms)
    out = Path(args.out)
    started = time.perf_counter()
    if out.exists():
        table = LatencyTable.load(out)
        build_s = None
    else:
        table = build_table(space, backend, out, passes=args.passes, rotation_mb=args.rotation_mb,
                            on_progress=progress("build"))
        build_s = time.perf_counter() - started
    t0 = time.perf_counter()
    first = validate_table(table, backend, num_archs=args.num_archs, seed=args.seed, passes=args.passes,
                           on_progress=progress("validate 1"))
    validate_s = time.perf_counter() - t0
    paths = first.write(out.with_name(out.stem + "-validation"))
    second = validate_table(table, backend, num_archs=args.num_archs, seed=args.seed, passes=args.passes,
                            calibrate_fraction=0.0, on_progress=progress("validate 2"))
    again = [r.measured.median for r in second.rows]
    once = [r.measured.median for r in first.rows]
    report = {
        "table": table.meta.describe(), "entries": len(table), "build_s": build_s, "validate_s": validate_s,
        "settings": vars(args), "validation": first.summary,
        "repeatability": error_metrics(again, once),
        "calibration": first.calibration.to_dict() if first.calibration else None,
        "files": {k: str(v) for k, v in paths.items()},
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"bench_latency_table-{args.space}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=2))
    os.replace(tmp, path)
    print(json.dumps({k: report[k] for k in ("table", "entries", "build_s", "validation", "repeatability")},
                     indent=2))


if __name__ == "__main__":
    main()
