#!/usr/bin/env python
"""How well do in-context part entries predict whole networks they were not measured in? (issue 10; from a journal)

    python benchmarks/context_heldout.py --journal J.jsonl[.gz] [--out RESULT.json]

``J`` is the journal of a ``slimnas lut build`` with the ``context`` harness (the builder deletes it on success: keep
a copy, or use one from a build that did not finish its isolated stage, such as
``benchmarks/results/issue10/l7-torch-cuda-h200-2026-11-30/context-journal.jsonl.gz``). Every covering network was
timed whole, in the journal's interleaved passes, alongside its parts. For each covering network in turn, the
table's in-context step (:func:`slimnas.latency.context.summarize_context`, as the builder runs it: entries, repeat
factors, overhead, working-set slope) is redone on the *other* networks, and the table it would write predicts the
left-out network; that prediction is compared with the network's whole-call statistic over its accepted passes.
A part that no other network holds (where ``max_networks`` stopped the cover short, as on ``l7``: mostly
downsamples) takes its entry from the left-out network's own in-context samples; the share of the network's time
those parts make up is reported (``own_share_pct``): the rest of each prediction is held out.

Printed: within ±5%/±10%, MAPE, bias and Kendall tau of the held-out predictions; the pass-to-pass spread of the
whole-network statistic (the repeatability of one pass on that machine); the machine and protocol from the journal.
Caveat: the networks were timed in the build's own process, not in another process at another time (what
``slimnas lut validate`` does). No measurement is made here.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.probe_stage_widths import read_journal  # noqa: E402
from slimnas.latency import LatencyTable, parts_of  # noqa: E402
from slimnas.latency.context import covering_archs, summarize_context  # noqa: E402
from slimnas.latency.modules import part_weight_mib  # noqa: E402
from slimnas.latency.protocol import Protocol, assess, statistic_of  # noqa: E402
from slimnas.latency.table import TableMeta  # noqa: E402
from slimnas.latency.validate import error_metrics  # noqa: E402
from slimnas.search_spaces import SearchSpace  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--journal", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args()
    header, passes = read_journal(args.journal)
    identity = header["identity"]
    context = header.get("context") or sys.exit(f"{args.journal}: not a context build's journal")
    space = SearchSpace(**identity["space"])
    num_classes, in_chans = identity["num_classes"], identity["in_chans"]
    protocol = Protocol.from_dict(header["protocol"])
    archs = covering_archs(space, num_classes, in_chans, context["cover"], context["max_networks"])
    if sorted(passes) != list(range(len(archs))) or any(len(p) < protocol.passes for p in passes.values()):
        sys.exit(f"{args.journal}: the in-context stage is not complete ({len(passes)} of {len(archs)} networks)")
    records = [passes[i] for i in range(len(archs))]
    parts = [parts_of(a, num_classes, in_chans) for a in archs]
    weights = {p: part_weight_mib(p, space.img_size, identity["form"], space.family) for ps in parts for p in ps}

    measured, predicted, spreads, own_share = [], [], [], []
    for i, arch in enumerate(archs):
        verdict = assess([r.network for r in records[i]], protocol)
        per_pass = [statistic_of(r.network, protocol.statistic) for r in records[i]]
        spreads.append(max(per_pass) / min(per_pass) - 1)
        others = [j for j in range(len(archs)) if j != i]
        elsewhere = {p for j in others for p in parts[j]}
        own = [p for p in dict.fromkeys(parts[i]) if p not in elsewhere]
        result = summarize_context([parts[j] for j in others], [records[j] for j in others], protocol, weights)
        entries = dict(result.entries)
        if own:  # parts only this network holds: their entries from its own in-context samples
            alone = summarize_context([parts[i]], [records[i]], protocol, weights)
            entries.update({p: alone.entries[p] for p in own})
            own_share.append(sum(alone.entries[p].get(protocol.statistic) for p in own) / verdict.value)
        else:
            own_share.append(0.0)
        meta = TableMeta(**identity, protocol=header["protocol"], overhead_ms=result.overhead_ms,
                         context_slope_per_mib=result.slope_per_mib, context_at_mib=result.at_mib,
                         repeat_factors=result.repeat_factors)
        measured.append(verdict.value)
        predicted.append(LatencyTable(entries, meta, weights=weights).predict(arch))
    figures = {"journal": str(args.journal), "device": identity["device"], "backend": identity["backend"],
               "batch": identity["batch"], "img_size": identity["img_size"], "protocol": protocol.to_dict(),
               "networks": len(archs), "own_share_pct": {"median": 100 * float(np.median(own_share)),
                                                         "max": 100 * float(max(own_share))},
               "measured_ms": [min(measured), max(measured)],
               "held_out_errors": error_metrics(predicted, measured),
               "pass_spread_pct": {"median": 100 * float(np.median(spreads)),
                                   "p90": 100 * float(np.quantile(spreads, 0.9)), "max": 100 * float(max(spreads))}}
    print(json.dumps(figures, indent=2))
    if args.out:
        args.out.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
