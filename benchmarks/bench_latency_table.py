#!/usr/bin/env python
"""A latency table on the user's path: built twice with the CLI's defaults, validated in other processes at other
times (issue 10's evidence).

    python benchmarks/bench_latency_table.py --space tiny --backend torch-cpu [--num-archs 50] [--num-classes 10]
        [--backend-flags '--layout blocked'] [--tag TAG]

Runs, each step a separate ``slimnas`` process, one after another:

1. ``slimnas lut build --space S --backend B --threads 1 --out A`` (every measurement setting at the CLI's default);
2. ``slimnas lut validate --lut A --num-archs N --seed 1`` (the presets and N random networks measured end to end, in
   a process of its own, after the build);
3. ``slimnas lut build ... --out B`` (the same table built again, later);
4. ``slimnas lut validate --lut B --num-archs N --seed 1`` (B validated on the same networks);
5. ``slimnas lut validate --lut A --against B --num-archs N --seed 2`` (repeatability: the two builds' predictions on
   N other random networks).

Then the learning curve of the calibrated predictor (:class:`slimnas.latency.CalibratedPredictor`): fitted on k of
the networks as measured in step 2, judged on the others as measured in step 4 (another process, another time), 20
random splits per k; against the plain table on the same held-out networks.

Writes the tables, their journals (every sample of the build: ``A.parquet.journal.jsonl``), their validation folders
and ``summary.json`` (every step's output, wall time and clock time)
under ``benchmarks/results/issue10/<space>-<backend>[-<tag>]/``; ``--reuse`` keeps tables already there.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "issue10"


def slimnas(*args: str) -> tuple[dict, float]:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "slimnas.platform.cli", *args], capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"slimnas {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    out = proc.stdout.strip()
    start = out.find("{")
    return (json.loads(out[start:]) if start >= 0 else {"stdout": out}), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="tiny")
    parser.add_argument("--backend", default="torch-cpu")
    parser.add_argument("--num-archs", type=int, default=50)
    parser.add_argument("--num-classes", type=int, default=None, help="default: 10 for tiny (digits), else 1000")
    parser.add_argument("--reuse", action="store_true", help="keep tables already built")
    parser.add_argument("--pause-s", type=float, default=30.0, help="pause between steps (other times)")
    parser.add_argument("--backend-flags", default="",
                        help="the backend's settings for every build, as slimnas lut build flags "
                             "(e.g. '--layout blocked')")
    parser.add_argument("--tag", default="", help="a suffix of the results folder (<space>-<backend>-<tag>)")
    parser.add_argument("--curve-only", action="store_true",
                        help="recompute the calibration learning curve from the validations already there")
    args = parser.parse_args()
    classes = args.num_classes or (10 if args.space == "tiny" else 1000)
    folder = RESULTS / f"{args.space}-{args.backend}{'-' + args.tag if args.tag else ''}"
    folder.mkdir(parents=True, exist_ok=True)
    steps: dict[str, dict] = {}
    n = str(args.num_archs)

    def step(name: str, *cli: str) -> dict:
        print(f"[{time.strftime('%H:%M:%S')}] {name}: slimnas {' '.join(cli)}", flush=True)
        result, wall = slimnas(*cli)
        steps[name] = {"at": time.strftime("%Y-%m-%d %H:%M:%S"), "wall_s": round(wall, 1), "command": cli,
                       "result": result}
        (folder / "summary.json").write_text(json.dumps({"args": vars(args), "steps": steps}, indent=1))
        time.sleep(args.pause_s)
        return result

    tables = {label: str(folder / f"{label}.parquet") for label in ("A", "B")}
    if args.curve_only:
        report_curve(folder, tables)
        return
    for label in ("A", "B"):
        path = folder / f"{label}.parquet"
        if not (args.reuse and path.exists()):
            step(f"build {label}", "lut", "build", "--space", args.space, "--backend", args.backend, "--threads", "1",
                 "--num-classes", str(classes), "--out", str(path), "--force", "--keep-journal",
                 *args.backend_flags.split())
        step(f"validate {label}", "lut", "validate", "--lut", str(path), "--num-archs", n, "--seed", "1",
             "--calibrate-fraction", "0", "--out-dir", str(folder / f"{label}-validation"))
    step("A against B", "lut", "validate", "--lut", tables["A"], "--against", tables["B"], "--num-archs", n,
         "--seed", "2")
    for name in ("validate A", "validate B"):
        s = steps[name]["result"]["summary"]["plain_all"]
        print(f"{name}: {s['n']} networks, within 10% {100 * s['within_10pct']:.0f}%, MAPE {s['mape_pct']:.1f}%, "
              f"mean error {s['mean_error_pct']:+.1f}%, tau {s['kendall_tau']:.3f}")
    r = steps["A against B"]["result"]
    print(f"A against B: {r['archs']} archs, MAPE {r['mape_pct']:.2f}%, tau {r['kendall_tau']:.3f}")
    report_curve(folder, tables)


def report_curve(folder: Path, tables: dict[str, str]) -> None:
    """The calibration learning curve (fit on A's validation, test on B's), printed and added to summary.json."""
    curve = learning_curve(Path(tables["A"]), Path(tables["B"]), folder / "A-validation" / "validation.csv",
                           folder / "B-validation" / "validation.csv")
    summary = json.loads((folder / "summary.json").read_text())
    summary["calibration_curve"] = curve
    (folder / "summary.json").write_text(json.dumps(summary, indent=1))
    for row in curve:
        print(f"calibrated on {row['k']:2d} networks: held-out MAPE {row['calibrated_mape_pct']:.2f}% (plain "
              f"{row['plain_mape_pct']:.2f}%), within 10% {100 * row['calibrated_within_10pct']:.0f}% (plain "
              f"{100 * row['plain_within_10pct']:.0f}%), tau {row['calibrated_tau']:.3f} "
              f"(plain {row['plain_tau']:.3f})")


def learning_curve(table_path: Path, other_path: Path, fit_csv: Path, test_csv: Path, ks=(3, 5, 10, 20, 30),
                   reps: int = 20) -> list:
    """Held-out error of the calibrated predictor against the number of networks it was fitted on.

    Fitted on ``fit_csv`` (the validation of ``table_path``), tested on ``test_csv`` (the validation of the other
    table, another process at another time). Both sets are brought to ``table_path``'s machine speed: the test set was
    reported at the other table's speed, so it is divided by the other table's speed factor against this one."""
    import csv
    import random

    import numpy as np

    from slimnas.latency import CalibratedPredictor, LatencyTable
    from slimnas.latency.reference import speed_factor
    from slimnas.latency.validate import error_metrics
    from slimnas.search_spaces.efficientformer import Arch

    table = LatencyTable.load(table_path)
    other = LatencyTable.load(other_path)
    to_table = speed_factor(other.meta.reference_ms(), table.meta.reference_ms())

    def rows(path: Path) -> dict[str, float]:
        with path.open() as handle:
            return {r["arch"]: float(r[f"measured_{table.stat}_ms"]) for r in csv.DictReader(handle)}

    fit = rows(fit_csv)
    test = {key: value / to_table for key, value in rows(test_csv).items()}
    keys = [k for k in fit if k in test]
    archs = {k: Arch.from_json(k) for k in keys}
    out = []
    for k in ks:
        if k > len(keys) - 5:
            break
        cal, plain = [], []
        for rep in range(reps):
            chosen = random.Random(rep).sample(keys, k)
            held = [key for key in keys if key not in chosen]
            model = CalibratedPredictor(table).fit([archs[c] for c in chosen], [fit[c] for c in chosen])
            truth = [test[h] for h in held]
            cal.append(error_metrics(model.predict_many([archs[h] for h in held]), truth))
            plain.append(error_metrics(table.predict_many([archs[h] for h in held]), truth))
        mean = lambda ms, key: float(np.mean([m[key] for m in ms]))  # noqa: E731
        out.append({"k": k, "splits": reps,
                    "calibrated_mape_pct": mean(cal, "mape_pct"), "plain_mape_pct": mean(plain, "mape_pct"),
                    "calibrated_within_10pct": mean(cal, "within_10pct"),
                    "plain_within_10pct": mean(plain, "within_10pct"),
                    "calibrated_tau": mean(cal, "kendall_tau"), "plain_tau": mean(plain, "kendall_tau")})
    return out


if __name__ == "__main__":
    main()
