#!/usr/bin/env python
"""Tables rebuilt from their build journals with another ``quiet_passes`` (issue 10; no measurement is made here)

    python benchmarks/quiet_passes.py --journals J.jsonl[.gz] ... --runs DIR ... [--quiet 0 2 3 4] [--space tiny]

Every ``J`` is the journal of a ``slimnas lut build --backend torch-cpu`` run with the ``context`` harness
(``--keep-journal``; ``benchmarks/bench_latency_table.py`` keeps them). Each ``DIR`` is a ``slimnas lut validate
--num-archs N --seed S`` folder, all on the same networks: repeated measurements of them, in processes of their own at
other times; their geometric mean is the consensus. For every journal and every ``k`` of ``--quiet``, the table's
in-context step is redone from the journal's samples as the builder would (:func:`slimnas.latency.context.
summarize_context`) with the protocol's ``quiet_passes`` set to ``k`` (0: every accepted pass), and its predictions
of the networks are ranked: Kendall tau against the consensus, against each run (mean and min), and the predictions'
mean shift against ``k = 0`` (the quietest passes run faster). Only the ranking is compared: a run's speed differs
from another's. The cover must be complete (``tiny``).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import sys
from itertools import combinations
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.probe_stage_widths import context_meta, read_journal  # noqa: E402
from slimnas.latency import LatencyTable, parts_of  # noqa: E402
from slimnas.latency.context import covering_archs, summarize_context  # noqa: E402
from slimnas.latency.modules import part_weight_mib  # noqa: E402
from slimnas.latency.protocol import Protocol  # noqa: E402
from slimnas.latency.validate import kendall_tau  # noqa: E402
from slimnas.search_spaces import Arch, SearchSpace  # noqa: E402


def read_runs(folders: list[Path]) -> tuple[list[Arch], np.ndarray]:
    """The random networks of validation folders (the same in all) and each folder's measurements of them."""
    archs, rows = None, []
    for folder in folders:
        with (folder / "validation.csv").open(newline="") as handle:
            found = [r for r in csv.DictReader(handle) if r["name"].startswith("random")]
        keys = [r["arch"] for r in found]
        if archs is None:
            archs = keys
        elif keys != archs:
            sys.exit(f"{folder}: other networks than {folders[0]} (same --num-archs and --seed needed)")
        rows.append([float(r["measured_median_ms"]) for r in found])
    return [Arch.from_json(a) for a in archs or []], np.asarray(rows)


def predictions(journal: Path, space: SearchSpace, targets: list[Arch], quiet: list[int]) -> dict[int, np.ndarray]:
    """The journal's table rebuilt with each ``quiet_passes``, predicting ``targets``."""
    header, by_network = read_journal(journal)
    classes = header["identity"]["num_classes"]
    recorded = Protocol.from_dict(header["protocol"])
    context = header["context"]
    archs = covering_archs(space, classes, 3, context["cover"], context["max_networks"])
    records = [by_network[i] for i in range(len(archs))]
    weights = {p: part_weight_mib(p, space.img_size) for a in archs + targets for p in parts_of(a, classes)}
    out = {}
    for k in quiet:
        protocol = dataclasses.replace(recorded, quiet_passes=k)
        result = summarize_context([parts_of(a, classes) for a in archs], records, protocol, weights)
        table = LatencyTable(result.entries, context_meta(header, result), weights=weights)
        out[k] = np.array([table.predict(a) for a in targets])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--journals", nargs="+", type=Path, required=True)
    parser.add_argument("--runs", nargs="+", type=Path, required=True)
    parser.add_argument("--quiet", nargs="+", type=int, default=[0, 2, 3, 4])
    parser.add_argument("--space", default="tiny")
    args = parser.parse_args()
    space = SearchSpace.preset(args.space)
    targets, measured = read_runs(args.runs)
    consensus = np.exp(np.log(measured).mean(axis=0))
    between = [kendall_tau(measured[i], measured[j]) for i, j in combinations(range(len(measured)), 2)]
    if between:
        print(f"{len(targets)} networks, {len(measured)} runs; tau between two runs: mean {np.mean(between):.3f}, "
              f"min {np.min(between):.3f}")
    for journal in args.journals:
        predicted = predictions(journal, space, targets, args.quiet)
        base = predicted[args.quiet[0]]
        cells = []
        for k, p in predicted.items():
            taus = [kendall_tau(p, m) for m in measured]
            cells.append(f"k={k}: {kendall_tau(p, consensus):.3f} / {np.mean(taus):.3f} / {np.min(taus):.3f}, "
                         f"shift {100 * np.mean(np.log(p / base)):+.1f}%")
        print(f"{journal}: tau against the consensus / per run mean / min")
        print("  " + "\n  ".join(cells), flush=True)


if __name__ == "__main__":
    main()
