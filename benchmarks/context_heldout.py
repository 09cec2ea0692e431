#!/usr/bin/env python
"""What the in-context stage of a build already shows about its table (issue 10; from build journals, no device)

    python benchmarks/context_heldout.py --journal A.jsonl[.gz] [--against B.jsonl[.gz]] [--out RESULT.json]

``A`` (and ``B``) are journals of ``slimnas lut build`` runs with the ``context`` harness whose in-context stage is
complete (the builder deletes a journal on success: keep a copy, or use one from a build that did not finish, such
as ``benchmarks/results/issue10/l7-torch-cuda-h200-2026-11-30/``). Every covering network was timed whole, in the
journal's interleaved passes, alongside its parts. From each journal the table the builder would write with
``fill="fitted"`` is assembled (:func:`~slimnas.latency.context.summarize_context`, then
:func:`~slimnas.latency.context.fit_uncovered` for the parts no covering network holds), with no reference-speed
correction.

Printed:

- **held out**: for each covering network in turn, the in-context step is redone on the *other* networks and that
  table predicts the left-out one, against its whole-call statistic over its accepted passes. A part no other network
  holds (where ``max_networks`` stopped the cover short, as on ``l7``: mostly downsamples) takes its entry from the
  left-out network's own samples; the share of the network's time those parts make up is reported
  (``own_share_pct``). The networks were timed in the build's own process.
- **pass spread**: the pass-to-pass spread of each network's whole-call statistic (one pass's repeatability).
- with ``--against``: **A's table against B's measurements** (and B's against A's): the covering networks are the
  same seeded archs in both builds, so B's whole-network timings are measurements in another process at another
  time than A's build; and **A against B** on 50 random archs (seed 2), the two tables' predictions (item 3's
  repeatability).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.probe_stage_widths import context_meta, read_journal  # noqa: E402
from slimnas.latency import LatencyTable, Part, Timing, parts_of, parts_of_space  # noqa: E402
from slimnas.latency.context import covering_archs, fit_uncovered, summarize_context  # noqa: E402
from slimnas.latency.modules import part_weight_mib  # noqa: E402
from slimnas.latency.protocol import ContextSamples, Protocol, assess, statistic_of  # noqa: E402
from slimnas.latency.validate import error_metrics, validation_archs  # noqa: E402
from slimnas.search_spaces import Arch, SearchSpace  # noqa: E402


@dataclass
class Build:
    """One journal's covering networks, their passes and what the table needs besides."""

    header: dict
    space: SearchSpace
    protocol: Protocol
    archs: list[Arch]
    parts: list[list[Part]]
    records: list[list[ContextSamples]]

    @classmethod
    def read(cls, path: Path) -> Build:
        header, passes = read_journal(path)
        identity, context = header["identity"], header.get("context")
        if not context:
            sys.exit(f"{path}: not a context build's journal")
        space = SearchSpace(**identity["space"])
        protocol = Protocol.from_dict(header["protocol"])
        archs = covering_archs(space, identity["num_classes"], identity["in_chans"], context["cover"],
                               context["max_networks"])
        if sorted(passes) != list(range(len(archs))) or any(len(p) < protocol.passes for p in passes.values()):
            sys.exit(f"{path}: the in-context stage is not complete ({len(passes)} of {len(archs)} networks)")
        parts = [parts_of(a, identity["num_classes"], identity["in_chans"]) for a in archs]
        return cls(header, space, protocol, archs, parts, [passes[i] for i in range(len(archs))])

    def measured(self, i: int) -> float:
        """Covering network ``i``'s whole-call statistic over its accepted passes."""
        return assess([r.network for r in self.records[i]], self.protocol).value

    def table(self, weights: dict[Part, float], networks: list[int] | None = None,
              extra: dict[Part, Timing] | None = None) -> LatencyTable:
        """The table the builder would write from ``networks`` (default: all), the parts they leave out fitted."""
        networks = list(range(len(self.archs))) if networks is None else networks
        result = summarize_context([self.parts[j] for j in networks], [self.records[j] for j in networks],
                                   self.protocol, weights)
        entries = {**result.entries, **(extra or {})}
        identity = self.header["identity"]
        left = [p for p in parts_of_space(self.space, identity["num_classes"], identity["in_chans"])
                if p not in entries]
        fitted = fit_uncovered(entries, left, self.protocol.statistic) if left else ({}, {})
        if fitted is None:
            sys.exit("too few covered parts of some kind and stage to fit the rest")
        meta = context_meta(self.header, result, {"fit_loo_error_pct": fitted[1]})
        return LatencyTable({**entries, **fitted[0]}, meta, weights=weights)


def held_out(build: Build, weights: dict[Part, float]) -> dict:
    measured, predicted, own_share, spreads = [], [], [], []
    for i, arch in enumerate(build.archs):
        per_pass = [statistic_of(r.network, build.protocol.statistic) for r in build.records[i]]
        spreads.append(max(per_pass) / min(per_pass) - 1)
        others = [j for j in range(len(build.archs)) if j != i]
        elsewhere = {p for j in others for p in build.parts[j]}
        own = [p for p in dict.fromkeys(build.parts[i]) if p not in elsewhere]
        mine = summarize_context([build.parts[i]], [build.records[i]], build.protocol, weights).entries
        extra = {p: mine[p] for p in own}
        measured.append(build.measured(i))
        own_share.append(sum(t.get(build.protocol.statistic) for t in extra.values()) / measured[-1])
        predicted.append(build.table(weights, others, extra).predict(arch))
    return {"errors": error_metrics(predicted, measured), "measured_ms": [min(measured), max(measured)],
            "own_share_pct": {"median": 100 * float(np.median(own_share)), "max": 100 * float(max(own_share))},
            "pass_spread_pct": {"median": 100 * float(np.median(spreads)),
                                "p90": 100 * float(np.quantile(spreads, 0.9)), "max": 100 * float(max(spreads))}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--journal", type=Path, required=True)
    parser.add_argument("--against", type=Path, default=None, help="a second build's journal (same settings)")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args()
    a = Build.read(args.journal)
    identity = a.header["identity"]
    weights = {p: part_weight_mib(p, a.space.img_size, identity["form"], a.space.family)
               for p in parts_of_space(a.space, identity["num_classes"], identity["in_chans"])}
    table_a = a.table(weights)
    figures = {"journal": str(args.journal), "device": identity["device"], "backend": identity["backend"],
               "batch": identity["batch"], "img_size": identity["img_size"], "protocol": a.protocol.to_dict(),
               "networks": len(a.archs), "parts_fitted": len(table_a.entries) - len(summarize_context(
                   a.parts, a.records, a.protocol, weights).entries),
               "fit_loo_error_pct": table_a.meta.notes["fit_loo_error_pct"],
               "held_out": held_out(a, weights)}
    if args.against:
        b = Build.read(args.against)
        if b.header["identity"] != identity or b.header["protocol"] != a.header["protocol"]:
            sys.exit(f"{args.against}: another build's settings than {args.journal}")
        table_b = b.table(weights)
        figures["against"] = str(args.against)
        figures["B_fit_loo_error_pct"] = table_b.meta.notes["fit_loo_error_pct"]
        for name, table, other in (("A_on_B_measurements", table_a, b), ("B_on_A_measurements", table_b, a)):
            figures[name] = error_metrics([table.predict(x) for x in other.archs],
                                          [other.measured(i) for i in range(len(other.archs))])
        randoms = [arch for _, arch in validation_archs(a.space, 50, 2) if _.startswith("random")]
        figures["A_against_B_random_50"] = error_metrics([table_a.predict(x) for x in randoms],
                                                         [table_b.predict(x) for x in randoms])
        figures["B_held_out"] = held_out(b, weights)
    print(json.dumps(figures, indent=2))
    if args.out:
        args.out.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
