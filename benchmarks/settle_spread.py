#!/usr/bin/env python
"""Which kept validations the session-spread rule would have measured again (issue 10; offline, no measurement)

    python benchmarks/settle_spread.py [ROOT ...]

Reads every ``validation.json`` under the ROOTs (default: ``benchmarks/results/issue10``) and prints, per
validation: whether it met issue 10's figures (95% of its networks within +-10% of the table, Kendall tau >= 0.95),
the median over its networks of their accepted passes' spread (``median_pass_spread_pct``), its share of disturbed
passes, its table build's own spread where the build's journal was kept beside it (whole networks' passes: the
covering networks of a context build, the calibration networks of an isolated one; what a build records as
``notes.network_pass_spread`` since 2026-12-01), the limit :func:`slimnas.latency.protocol.spread_limit` draws from
it, and whether :func:`slimnas.latency.protocol.unsettled` would call the session disturbed by its spread. A
validation whose table's journal is not there is "not judged", as a table that does not record its spread is.
Validations are grouped by machine and by protocol (the quietest passes, or every accepted pass), with the counts of
validations met and missed on each side of their limits. Writes nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.probe_stage_widths import read_journal  # noqa: E402
from slimnas.latency.protocol import Protocol, assess, session_spread, spread_limit  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "issue10"


def journal_of(validation: Path) -> Path | None:
    """The kept journal of the table a validation folder (``<label>-validation...``) measured, if any: beside it
    (``<label>.parquet.journal.jsonl.gz``) or in a ``journals`` folder (``<pair>-<label>.jsonl.gz``,
    ``<label>.jsonl.gz``)."""
    label = validation.name.split("-validation")[0]
    for candidate in (validation.parent / f"{label}.parquet.journal.jsonl.gz",
                      validation.parent.parent / "journals" / f"{validation.parent.name}-{label}.jsonl.gz",
                      validation.parent / "journals" / f"{label}.jsonl.gz"):
        if candidate.is_file():
            return candidate
    return None


def build_spread(journal: Path) -> float:
    """The spread of the whole networks' passes in a build's journal (covering networks' whole calls, or else the
    calibration networks), under the build's protocol."""
    header, networks = read_journal(journal)
    passes = {i: [r.network for r in records] for i, records in networks.items()}
    if not passes:
        header, passes = read_journal(journal, "calibration")
    protocol = Protocol.from_dict(header["protocol"])
    return session_spread([assess(samples, protocol) for samples in passes.values()])


def met(plain: dict) -> bool:
    return plain["within_10pct"] >= 0.95 and plain["kendall_tau"] >= 0.95


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("roots", nargs="*", type=Path, default=[RESULTS])
    args = parser.parse_args(argv)
    groups: dict[tuple[str, str], list[tuple]] = defaultdict(list)
    spreads: dict[Path, float] = {}
    for root in args.roots:
        for path in sorted(root.rglob("validation.json")):
            data = json.loads(path.read_text())
            summary = data.get("summary", {})
            measurement, plain = summary.get("measurement"), summary.get("plain_all")
            if not measurement or not plain or "median_pass_spread_pct" not in measurement:
                continue
            meta = data["meta"]
            machine = "EPYC" if "EPYC" in meta.get("device", "") else "Xeon" if "Xeon" in meta.get("device", "") \
                else meta.get("device", "?")
            protocol = "quietest passes" if (meta.get("protocol") or {}).get("quiet_passes") else "every accepted pass"
            spread = measurement["median_pass_spread_pct"] / 100
            share = measurement["disturbed_passes"] / max(1, measurement["passes"])
            journal = journal_of(path.parent)
            if journal is not None and journal not in spreads:
                spreads[journal] = build_spread(journal)
            usual = spreads.get(journal) if journal is not None else None
            limit = spread_limit(Protocol.from_dict(meta.get("protocol") or {}), usual) if usual is not None else None
            groups[(machine, protocol)].append((met(plain), spread, share, usual, limit, plain, meta.get("backend"),
                                                str(path.parent.relative_to(root))))
    for (machine, protocol), rows in sorted(groups.items()):
        print(f"## {machine}, {protocol}: {len(rows)} validations")
        counts = defaultdict(int)
        for ok, spread, share, usual, limit, plain, backend, where in sorted(rows, key=lambda r: r[1]):
            again = None if limit is None else spread > limit
            counts[(again, ok)] += 1
            build = f"{100 * usual:5.1f}%" if usual is not None else "     ?"
            shown = f"{100 * limit:5.1f}%" if limit is not None else "     -"
            verdict = {None: "not judged", True: "measured again", False: ""}[again]
            print(f"  {'met   ' if ok else 'missed'} spread {100 * spread:5.1f}%  build {build}  limit {shown}  "
                  f"disturbed {100 * share:4.1f}%  within 10% {100 * plain['within_10pct']:3.0f}%  "
                  f"tau {plain['kendall_tau']:.3f}  {verdict:14s}  {backend}  {where}")
        print(f"  above their limit: {counts[(True, False)]} missed, {counts[(True, True)]} met; within it: "
              f"{counts[(False, False)]} missed, {counts[(False, True)]} met; not judged (no journal kept): "
              f"{counts[(None, False)]} missed, {counts[(None, True)]} met")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
