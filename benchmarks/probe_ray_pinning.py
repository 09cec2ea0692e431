#!/usr/bin/env python
"""Do the job's own Ray processes disturb a validation made while Ray runs? (issue 10; a probe, no table)

    python benchmarks/probe_ray_pinning.py --lut TABLE.parquet [--rounds 6] [--out DIR]

The quickstart builds and validates its table in the driver while the job's local Ray is up (idle Ray takes about
10% of a core here, in short bursts). This probe starts such a Ray in a process of its own (``ray.init(num_cpus=2)``,
no dashboard, as the pipeline does), then alternates ``rounds`` times between two conditions, each one run of
``slimnas lut validate --lut TABLE --num-archs 50 --seed 1 --calibrate-fraction 0`` in a new process:

- ``shared``: Ray's processes and the validation may run on every core (what the quickstart does);
- ``pinned``: every process of that Ray is moved to core 0 (``sched_setaffinity``), the validation runs on core 1.

If Ray's bursts disturbed the timings, the pinned runs would agree better with the other runs than the shared ones do.
Compare with ``python benchmarks/tau_consensus.py --runs OUT/shared-* OUT/pinned-* --tables any=OUT/shared-0``
(each run against the consensus of the others). Needs two cores. Writes the validation folders under ``OUT``
(default ``benchmarks/results/issue10/ray-pinning``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HOLDER = ("import ray, time; ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False); "
          "print('up', flush=True); time.sleep(86400)")


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (from ``/proc``)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def pin(pids: list[int], cores: set[int]) -> None:
    for p in pids:
        try:
            os.sched_setaffinity(p, cores)
        except (ProcessLookupError, PermissionError):
            pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lut", required=True)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "issue10" / "ray-pinning"))
    args = parser.parse_args(argv)
    if len(os.sched_getaffinity(0)) < 2:
        sys.exit("needs two cores")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    slimnas = str(Path(sys.executable).with_name("slimnas"))
    holder = subprocess.Popen([sys.executable, "-c", HOLDER], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              text=True)
    try:
        holder.stdout.readline()
        time.sleep(10)  # Ray's start-up settles
        every = set(os.sched_getaffinity(0))
        for r in range(args.rounds):
            for condition in ("shared", "pinned"):
                ray_pids = descendants(holder.pid)
                pin(ray_pids, {0} if condition == "pinned" else every)
                command = [slimnas, "lut", "validate", "--lut", args.lut, "--num-archs", "50", "--seed", "1",
                           "--calibrate-fraction", "0", "--out-dir", str(out / f"{condition}-{r}")]
                start = time.perf_counter()
                subprocess.run(command, check=True, capture_output=True,
                               preexec_fn=(lambda: os.sched_setaffinity(0, {1})) if condition == "pinned" else None)
                print(f"{condition}-{r}: {len(ray_pids)} Ray processes, {time.perf_counter() - start:.0f} s",
                      flush=True)
    finally:
        for p in reversed(descendants(holder.pid)):
            try:
                os.kill(p, 9)
            except ProcessLookupError:
                pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
