#!/usr/bin/env python
"""The quickstart's wall time (issue 6): ``slimnas quickstart`` run as a newcomer runs it, in an empty folder.

    python benchmarks/bench_quickstart.py [--rerun] [--set KEY=VALUE ...]
    python benchmarks/bench_quickstart.py --against REV [--pairs 2]

Runs ``python -m slimnas.platform.cli quickstart`` in a fresh temporary working directory (so the table, the supernet
and the search are all built), timing the whole command (interpreter start, Ray start and shutdown included) and
reading the per-stage wall times from ``runs/quickstart/pipeline.json``. ``--rerun`` then runs it a second time in the
same folder, which reuses every stage. The load average before and after is recorded (the machine is shared). Prints
markdown and writes ``benchmarks/results/bench_quickstart.json``.

``--against REV`` compares this checkout with another commit side by side: REV is checked out in a temporary git
worktree and the two quickstarts run alternately (this, REV, this, REV, ...: ``--pairs`` pairs, each in its own empty
folder), so that a drift of the shared machine's speed hits both alike; it reports each run and the ratio of the
medians (this / REV). Writes ``benchmarks/results/bench_quickstart_against.json``.
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


def _run(cwd: Path, extra: list[str], root: Path = ROOT) -> dict:
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
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


def _machine() -> dict:
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def _against(rev: str, pairs: int, extra: list[str]) -> None:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="slimnas-against-") as tmp:
        other = Path(tmp) / "checkout"
        subprocess.run(["git", "worktree", "add", "--detach", str(other), rev], cwd=ROOT, check=True,
                       capture_output=True)
        try:
            walls: dict[str, list[float]] = {head: [], rev: []}
            for i in range(pairs):
                for label, root in ((head, ROOT), (rev, other)):
                    folder = Path(tmp) / f"{label}-{i}"
                    folder.mkdir()
                    run = _run(folder, extra, root)
                    walls[label].append(run["wall_s"])
                    print(f"pair {i + 1}: {label} {run['wall_s']:.1f} s (load {run['load_before'][0]} -> "
                          f"{run['load_after'][0]})", flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(other)], cwd=ROOT, capture_output=True)
    median = {k: sorted(v)[len(v) // 2] if len(v) % 2 else sum(sorted(v)[len(v) // 2 - 1:len(v) // 2 + 1]) / 2
              for k, v in walls.items()}
    ratio = median[head] / median[rev]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_quickstart_against.json").write_text(json.dumps(
        {"machine": _machine(), "this": head, "against": rev, "walls_s": walls, "median_s": median,
         "ratio": round(ratio, 4)}, indent=1))
    print("\n| checkout | runs (s) | median |\n|---|---|---:|")
    for label, values in walls.items():
        print(f"| {label} | {', '.join(f'{v:.1f}' for v in values)} | {median[label]:.1f} s |")
    print(f"\nratio {head} / {rev}: {ratio:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rerun", action="store_true", help="run again in the same folder (everything reused)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="passed to the quickstart")
    parser.add_argument("--against", metavar="REV", help="compare with this commit, runs alternated")
    parser.add_argument("--pairs", type=int, default=2, help="with --against: how many runs of each")
    args = parser.parse_args()
    extra = [a for pair in args.set for a in ("--set", pair)]
    if args.against:
        _against(args.against, args.pairs, extra)
        return
    with tempfile.TemporaryDirectory(prefix="slimnas-quickstart-") as tmp:
        runs = {"first": _run(Path(tmp), extra)}
        if args.rerun:
            runs["rerun"] = _run(Path(tmp), extra)
    result = {"machine": _machine(), "overrides": args.set, "runs": runs}
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
