#!/usr/bin/env python
"""How many whole networks a per-part calibration needs: the learning curve behind its default (issue 10)

    python benchmarks/curve_part_calibration.py --lut TABLE.parquet --validations DIR ... [--measured FILE]

``TABLE`` is a table of parts timed alone (its calibration is set aside: the fit starts from its plain entries).
First (unless ``--measured`` names an earlier run's file) 200 random networks of its space, other than the
validation networks, and the 50 validation networks of ``slimnas lut validate --num-archs 50 --seed 1`` are measured
now, in this process, with the table's protocol (:func:`slimnas.latency.validate.measure_networks`); the values go
to ``benchmarks/results/issue10/part-calibration-curve/measured.json``. Then, for 24 to 196 training networks (5
random draws each, one for all of them) and three ridges, :func:`~slimnas.latency.predictor.fit_part_calibration`
is fitted on this session's measurements and its predictions of the validation networks are ranked (Kendall tau)
against each ``DIR``: ``validation.csv`` folders of ``slimnas lut validate --num-archs 50 --seed 1`` made at other
times, in other processes. Prints the mean and worst tau over those folders, next to the table as built.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np
from scipy.stats import kendalltau

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from slimnas.latency import LatencyTable  # noqa: E402
from slimnas.latency.predictor import fit_part_calibration  # noqa: E402
from slimnas.latency.validate import backend_for, measure_networks, validation_archs  # noqa: E402
from slimnas.search_spaces import Arch  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "issue10" / "part-calibration-curve" / "measured.json"


def measure(table: LatencyTable, path: Path) -> None:
    space = table.space
    val = [a for n, a in validation_archs(space, 50, 1) if n.startswith("random")]
    seen = {a.structure_key() for a in val}
    train = [a for n, a in validation_archs(space, 200, 777)
             if n.startswith("random") and a.structure_key() not in seen]
    measured = measure_networks(table, backend_for(table), val + train)
    rows = [{"arch": a.to_dict(), "validation": i < len(val), "ms": m.value}
            for i, (a, m) in enumerate(zip(val + train, measured))]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"table": str(table.meta.describe()), "networks": rows}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lut", required=True)
    parser.add_argument("--validations", nargs="+", required=True)
    parser.add_argument("--measured", help="an earlier run's measured.json (no measuring)")
    args = parser.parse_args(argv)
    table = LatencyTable.load(args.lut)
    path = Path(args.measured) if args.measured else OUT
    if not args.measured:
        measure(table, path)
    rows = json.loads(path.read_text())["networks"]
    archs = [Arch.from_dict(r["arch"]) for r in rows]
    y = np.array([r["ms"] for r in rows])
    train = [i for i, r in enumerate(rows) if not r["validation"]]
    index = {a.structure_key(): i for i, a in enumerate(archs)}
    others = []
    for folder in args.validations:
        with (Path(folder) / "validation.csv").open(newline="") as handle:
            found = [r for r in csv.DictReader(handle) if r["name"].startswith("random")]
        others.append(([index[Arch.from_dict(json.loads(r["arch"])).structure_key()] for r in found],
                       np.array([float(r["measured_median_ms"]) for r in found])))
    plain = table.with_meta(calibration=None)

    def taus(predicted: np.ndarray) -> tuple[float, float]:
        values = [kendalltau(predicted[i], m).statistic for i, m in others]
        return float(np.mean(values)), float(np.min(values))

    mean, worst = taus(table.predict_many(archs))
    print(f"{len(others)} validations made elsewhere; {len(train)} training networks measured here")
    print(f"table as built ({table.meta.describe().rsplit(', ', 1)[-1]}): tau mean {mean:.3f}, worst {worst:.3f}")
    rng = np.random.default_rng(0)
    for n in (24, 50, 100, 150, len(train)):
        draws = [rng.choice(train, n, replace=False) for _ in range(5 if n < len(train) else 1)]
        for ridge in (3e-4, 1e-3, 1e-2):
            scores = []
            for draw in draws:
                cal = fit_part_calibration(plain, [archs[i] for i in draw], y[draw], ridge=ridge)
                scores.append(taus(plain.with_meta(calibration=cal | {"networks": n}).predict_many(archs)))
            mean, worst = np.mean(scores, axis=0)
            print(f"per part, {n:3d} networks, ridge {ridge:g}: tau mean {mean:.3f}, worst {worst:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
