#!/usr/bin/env python
"""Tables rebuilt from their build journals with another ``quiet_passes`` (issue 10; no measurement is made here)

    python benchmarks/quiet_passes.py --journals J.jsonl[.gz] ... --runs DIR ... [--quiet 0 2 3 4]

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
import dataclasses
import sys
from itertools import combinations
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.context_heldout import Build  # noqa: E402
from benchmarks.probe_stage_widths import read_runs  # noqa: E402
from slimnas.latency import parts_of  # noqa: E402
from slimnas.latency.modules import part_weight_mib  # noqa: E402
from slimnas.latency.validate import kendall_tau  # noqa: E402
from slimnas.search_spaces import Arch  # noqa: E402


def predictions(journal: Path, targets: list[Arch], quiet: list[int]) -> dict[int, np.ndarray]:
    """The journal's table rebuilt with each ``quiet_passes``, predicting ``targets``."""
    build = Build.read(journal)
    identity = build.header["identity"]
    weights = {p: part_weight_mib(p, build.space.img_size) for a in build.archs + targets
               for p in parts_of(a, identity["num_classes"], identity["in_chans"])}
    out = {}
    for k in quiet:
        rebuilt = dataclasses.replace(build, protocol=dataclasses.replace(build.protocol, quiet_passes=k))
        table = rebuilt.table(weights)
        out[k] = np.array([table.predict(a) for a in targets])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--journals", nargs="+", type=Path, required=True)
    parser.add_argument("--runs", nargs="+", type=Path, required=True)
    parser.add_argument("--quiet", nargs="+", type=int, default=[0, 2, 3, 4])
    args = parser.parse_args()
    targets, measured = read_runs(args.runs)
    consensus = np.exp(np.log(measured).mean(axis=0))
    between = [kendall_tau(measured[i], measured[j]) for i, j in combinations(range(len(measured)), 2)]
    if between:
        print(f"{len(targets)} networks, {len(measured)} runs; tau between two runs: mean {np.mean(between):.3f}, "
              f"min {np.min(between):.3f}")
    for journal in args.journals:
        predicted = predictions(journal, targets, args.quiet)
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
