#!/usr/bin/env python
"""The quickstart's wall time (issue 6): ``slimnas quickstart`` run as a newcomer runs it, in an empty folder.

    python benchmarks/bench_quickstart.py [--rerun] [--set KEY=VALUE ...]

Runs ``python -m slimnas.platform.cli quickstart`` in a fresh temporary working directory (so the table, the supernet
and the search are all built), timing the whole command (interpreter start, Ray start and shutdown included) and
reading the per-stage wall times from ``runs/quickstart/pipeline.json``. ``--rerun`` then runs it a second time in the
same folder, which reuses every stage. The load average before and after is recorded (the machine is shared). Prints
markdown and writes ``benchmarks/results/bench_quickstart.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def _run(cwd: Path, extra: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    load = os.getloadavg()
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "slimnas.platform.cli", "quickstart", *extra], cwd=cwd, env=env,
                          capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"quickstart failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    state = json.loads((cwd / "runs" / "quickstart" / "pipeline.json").read_text())
    stages = {name: {"status": s["status"], "wall_s": round(s["wall_s"], 1)} for name, s in state["stages"].items()}
    evaluations = sum(len(h) for h in json.loads(
        (cwd / "runs" / "quickstart" / "search" / "results.json").read_text())["histories"].values())
    progress = [line for line in proc.stderr.splitlines() if line.startswith(("[quickstart ", "[search] "))]
    return {"wall_s": round(wall, 1), "stages": stages, "evaluations": evaluations, "table": proc.stdout,
            "stage_lines": progress,
            "load_before": [round(v, 2) for v in load], "load_after": [round(v, 2) for v in os.getloadavg()]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rerun", action="store_true", help="run again in the same folder (everything reused)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="passed to the quickstart")
    args = parser.parse_args()
    extra = [a for pair in args.set for a in ("--set", pair)]
    with tempfile.TemporaryDirectory(prefix="slimnas-quickstart-") as tmp:
        runs = {"first": _run(Path(tmp), extra)}
        if args.rerun:
            runs["rerun"] = _run(Path(tmp), extra)
    result = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                          "python": platform.python_version(), "date": time.strftime("%Y-%m-%d")},
              "overrides": args.set, "runs": runs}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_quickstart.json").write_text(json.dumps(result, indent=1))
    print("| run | wall time | train | table | search | subnet evaluations | load average before -> after |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for name, run in runs.items():
        s = run["stages"]
        print(f"| {name} | {run['wall_s']:.0f} s | {s['train']['wall_s']:.0f} s ({s['train']['status']}) | "
              f"{s['table']['wall_s']:.0f} s ({s['table']['status']}) | {s['search']['wall_s']:.0f} s "
              f"({s['search']['status']}) | {run['evaluations']} | {run['load_before'][0]} -> "
              f"{run['load_after'][0]} |")
    print("\n" + runs["first"]["table"])


if __name__ == "__main__":
    main()
