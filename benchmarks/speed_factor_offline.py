#!/usr/bin/env python
"""Does the machine-speed factor help? Every kept torch-cpu validation, scored with and without it.

A validation divides each measured latency by the speed factor of its session (the table's reference networks timed
alongside, against their latencies at the build: ``slimnas.latency.reference``) and also keeps the raw value. This
reads every ``validation.csv`` under ``benchmarks/results`` whose ``validation.json`` says torch-cpu, and prints, per
validation and per kind of machine, the share within +-10% and the mean absolute error of the table against the
measured latencies with the factor applied and without it.

    python benchmarks/speed_factor_offline.py
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def score(predicted: list[float], measured: list[float]) -> tuple[float, float]:
    errors = [(p - m) / m for p, m in zip(predicted, measured)]
    return sum(abs(e) <= 0.1 for e in errors) / len(errors), 100 * sum(map(abs, errors)) / len(errors)


def main() -> None:
    found = []
    for path in sorted(RESULTS.rglob("validation.csv")):
        try:
            meta = json.loads((path.parent / "validation.json").read_text())["meta"]
        except (OSError, KeyError, ValueError):
            continue
        rows = list(csv.DictReader(path.open()))
        if meta.get("backend") != "torch-cpu" or not rows or "measured_raw_ms" not in rows[0]:
            continue
        stat = next(k for k in rows[0] if k.startswith("measured_") and k.endswith("_ms")
                    and k not in ("measured_low_ms", "measured_high_ms", "measured_raw_ms"))
        predicted = [float(r["predicted_ms"]) for r in rows]
        found.append((meta["device"].split(" (")[0], float(rows[0]["speed_factor"]),
                      score(predicted, [float(r[stat]) for r in rows]),
                      score(predicted, [float(r["measured_raw_ms"]) for r in rows]), path.relative_to(RESULTS)))
    for device, speed, (w, mape), (rw, rmape), path in sorted(found):
        print(f"{device:34s} speed {speed:.3f}  with it {w:4.0%} {mape:5.1f}%  without {rw:4.0%} {rmape:5.1f}%  {path}")
    for device in sorted({f[0] for f in found}):
        mine = [f for f in found if f[0] == device]
        better = sum(f[2][1] < f[3][1] for f in mine)
        print(f"{device}: {len(mine)} validations; the factor lowered the mean absolute error in {better}, raised it "
              f"in {len(mine) - better}")


if __name__ == "__main__":
    main()
