#!/usr/bin/env python
"""The search stage's wall time against the time its evaluations take (issue 13, part 6), at the quickstart's size.

    python benchmarks/bench_search_stage.py [--workdir DIR] [--repeats N] [--against REV] [--set KEY=VALUE ...]

In ``--workdir`` (default: a new temporary folder) ``slimnas quickstart`` runs once if the folder holds no finished
quickstart (train, table, search: the supernet and the table the search stage then reuses). Then
``slimnas quickstart --force search`` runs ``--repeats`` times (train and table reused), each timed (the first
quickstart's search stage too, when it ran):

- ``stage_s``: the search stage's wall time as the pipeline records it (``runs/quickstart/pipeline.json``): Ray's
  start, loading the supernet, table and data, the Tune experiment, the winners measured on the device, the winners
  saved, MLflow;
- ``tune_s``: the wall time of the Tune experiment(s) that ran the evaluations (``results.json``'s ``timing``);
- ``eval_s``: the sum of the evaluations' **own times**: each evaluation's seconds of computing inside its evaluator
  actor (extracting the subnet, re-estimating its BatchNorm statistics, the validation batches), measured there with
  ``time.perf_counter``; not counted: an evaluator's one-time set-up (building the supernet, loading the data) and the
  time an evaluator waits for its Tune trial to ask for the next batch. With two evaluators the evaluations run two at
  a time, so ``eval_s`` can exceed the wall time they took;
- the goal: ``stage_s <= 1.5 x eval_s``.

``--against REV`` also times the search stage of commit REV (checked out in a temporary git worktree, run on the same
supernet and table, alternating with this checkout's runs): its wall time and evaluations (an older commit records no
own times). REV must build the train and table stages as this checkout does, or they would be redone.

``--workdir`` must not hold a ``slimnas`` package (a clone of the repository): ``python -m`` and Ray's workers put the
working folder first on ``sys.path``, so that copy's code would run instead of this checkout's.

Prints markdown and writes ``benchmarks/results/bench_search_stage.json`` (``--out NAME``: another file in that
folder), with each run's ``[search]`` lines, stamped with the seconds since its command started: where the stage's time
went.
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


def _quickstart(cwd: Path, root: Path, extra: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("RAY_ADDRESS", None)
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "slimnas.platform.cli", "quickstart", *extra], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines = []  # stderr, each line stamped with the seconds since the command started (where the time went)
    for line in proc.stderr:
        lines.append(f"{time.perf_counter() - started:7.1f} {line.rstrip()}")
    proc.wait()
    wall = time.perf_counter() - started
    done = subprocess.CompletedProcess(proc.args, proc.returncode, "", "\n".join(lines))
    if proc.returncode != 0:
        raise SystemExit(f"quickstart {' '.join(extra)} failed ({proc.returncode}) with {root}:\n{done.stderr[-3000:]}")
    return wall, done


def _search_run(cwd: Path, root: Path, extra: list[str], label: str) -> dict:
    load = os.getloadavg()
    wall, proc = _quickstart(cwd, root, ["--force", "search", *extra])
    return _figures(cwd, label, wall, proc, load)


def _figures(cwd: Path, label: str, wall: float, proc: subprocess.CompletedProcess, load: tuple) -> dict:
    """The search stage's figures of the quickstart that just ran in ``cwd``."""
    out = cwd / "runs" / "quickstart"
    stages = json.loads((out / "pipeline.json").read_text())["stages"]
    assert stages["search"]["status"] == "ran", stages["search"]
    job = json.loads((out / "search" / "results.json").read_text())
    timing = job.get("timing") or {}
    evaluations = sum(len(h) for h in job["histories"].values())
    stage = stages["search"]["wall_s"]
    eval_s = timing.get("eval_s")
    return {
        "code": label, "command_s": round(wall, 1), "stage_s": round(stage, 1),
        "tune_s": round(timing["tune_wall_s"], 1) if timing else None,
        "eval_s": round(eval_s, 1) if eval_s else None, "evaluations": evaluations,
        "stage_over_eval": round(stage / eval_s, 2) if eval_s else None,
        "tune_over_eval": round(timing["tune_wall_s"] / eval_s, 2) if eval_s else None,
        "worker_setups": timing.get("worker_setups"), "setup_s": round(timing.get("setup_s", 0.0), 1) or None,
        "search_lines": [line for line in proc.stderr.splitlines() if line[8:].startswith("[search] ")],
        "load_before": [round(v, 2) for v in load], "load_after": [round(v, 2) for v in os.getloadavg()],
    }


def _worktree(rev: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix="bench-search-rev-"))
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), rev], check=True,
                   capture_output=True)
    return path


def _machine() -> dict:
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def _cell(value) -> str:
    return "-" if value is None else str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None, help="folder with (or for) a finished quickstart")
    parser.add_argument("--repeats", type=int, default=1, help="search stage runs of this checkout")
    parser.add_argument("--against", default=None, metavar="REV", help="also time REV's search stage (alternating)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="passed to the quickstart")
    parser.add_argument("--out", default="bench_search_stage.json", metavar="NAME",
                        help="results file, in benchmarks/results/")
    args = parser.parse_args(argv)
    if args.workdir is not None and (args.workdir / "slimnas").is_dir():
        # python -m and Ray's workers put the working folder first on sys.path: its slimnas would be the one timed
        parser.error(f"--workdir {args.workdir} holds a slimnas package (a clone?): its code, not this checkout's, "
                     f"would run; use a folder without one")
    extra = [a for pair in args.set for a in ("--set", pair)]
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-search-"))
    workdir.mkdir(parents=True, exist_ok=True)
    machine = _machine()
    record: dict = {"machine": machine, "workdir": str(workdir), "set": args.set, "runs": []}
    state = workdir / "runs" / "quickstart" / "pipeline.json"
    if not state.is_file():
        load = os.getloadavg()
        wall, proc = _quickstart(workdir, ROOT, extra)
        record["first_quickstart_s"] = round(wall, 1)
        record["first_quickstart_search"] = _figures(workdir, "this (first quickstart)", wall, proc, load)
        print(f"(first quickstart in {workdir}: {wall:.0f} s)", file=sys.stderr)
    other = _worktree(args.against) if args.against else None
    try:
        for _ in range(args.repeats):
            record["runs"].append(_search_run(workdir, ROOT, extra, "this"))
            if other is not None:
                record["runs"].append(_search_run(workdir, other, extra, args.against))
    finally:
        if other is not None:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(other)], capture_output=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / args.out).write_text(json.dumps(record, indent=1))
    print(f"Search stage at the quickstart's size: {machine['cores']} cores, Python {machine['python']}, "
          f"{machine['date']}\n")
    print("| code | search stage (s) | Tune experiment(s) (s) | evaluations | own times, summed (s) | stage / own "
          "| Tune / own | evaluator set-ups (s) | command (s) |")
    print("|---|---|---|---|---|---|---|---|---|")
    first = [record["first_quickstart_search"]] if "first_quickstart_search" in record else []
    for r in first + record["runs"]:
        setups = "-" if r["worker_setups"] is None else f"{r['worker_setups']} ({_cell(r['setup_s'])})"
        print(f"| {r['code']} | {r['stage_s']} | {_cell(r['tune_s'])} | {r['evaluations']} | {_cell(r['eval_s'])} "
              f"| {_cell(r['stage_over_eval'])} | {_cell(r['tune_over_eval'])} | {setups} | {r['command_s']} |")
    ours = [r for r in record["runs"] if r["code"] == "this"]
    met = all(r["stage_over_eval"] is not None and r["stage_over_eval"] <= 1.5 for r in ours)
    print(f"\nGoal (search stage <= 1.5 x the evaluations' own times): {'met' if met else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
