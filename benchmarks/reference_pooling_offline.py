#!/usr/bin/env python
"""How should a reference network's timings be pooled into the machine's speed? Every kept pair of builds, offline.

A table's build times its reference networks (``slimnas.latency.reference``) once per pass, and its journal keeps
every one of those timings. Two builds of the same table (``bench_latency_table.py``'s A and B) predict the same
networks; how far apart they are *raw* (``A against B``, no factor) is known. A speed factor is right when it
explains that gap, so this recomputes, from the two journals, the factor between the builds with each way of pooling
the reference timings (the median over every timing, which tables recorded until 2026-12-01, and the quietest
timings, the share the protocol pools of an item's passes), and prints the mean error of A against B after each:
exactly ``factor * (1 + raw mean error) - 1``, since a factor scales every prediction alike. The median factor is
checked against the one the comparison recorded (the reconstruction is faithful when they match).

    python benchmarks/reference_pooling_offline.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.probe_stage_widths import read_journal  # noqa: E402
from slimnas.latency.protocol import Protocol  # noqa: E402
from slimnas.latency.reference import MEDIAN, QUIET, pooled_latency, speed_factor  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "issue10"


def journal_references(path: Path) -> tuple[Protocol, list[list[list[float]]]]:
    """The build's protocol and each reference network's timings during the stage its predictions are anchored to
    (the in-context stage of a context table, the whole-network calibration of a calibrated one, else all)."""
    header, timings = read_journal(path, "reference")
    anchor = ("context" if header["identity"].get("harness") == "context"
              else "calibration" if header.get("calibrate_networks") else None)
    return Protocol.from_dict(header["protocol"]), [[s for tag, s in timings[k] if tag == anchor]
                                                     or [s for _, s in timings[k]] for k in sorted(timings)]


def journal(folder: Path, name: str) -> Path | None:
    for suffix in (".parquet.journal.jsonl", ".parquet.journal.jsonl.gz"):
        if (folder / f"{name}{suffix}").exists():
            return folder / f"{name}{suffix}"
    return None


def main() -> None:
    print(f"{'pair':58s} {'raw':>7s} {'recorded':>15s} {'median':>15s} {'quiet':>15s}")
    for summary in sorted(RESULTS.rglob("summary.json")):
        folder = summary.parent
        a, b = journal(folder, "A"), journal(folder, "B")
        steps = json.loads(summary.read_text()).get("steps", {})
        if a is None or b is None or "A against B" not in steps:
            continue
        result = steps["A against B"]["result"]
        raw = result["raw"]["mean_error_pct"] / 100
        (pa, ra), (_, rb) = journal_references(a), journal_references(b)
        if not 0 < pa.quiet_passes < pa.passes:
            continue  # a protocol that pools every pass pools its references the same way either way
        cells = [f"{result['speed_factor']:.3f} {result['mean_error_pct']:+6.2f}%"]
        for pooling in (MEDIAN, QUIET):
            factor = speed_factor([pooled_latency(t, pa, pooling) for t in rb],
                                  [pooled_latency(t, pa, pooling) for t in ra])
            cells.append(f"{factor:.3f} {100 * (factor * (1 + raw) - 1):+6.2f}%")
        print(f"{str(folder.relative_to(RESULTS)):58s} {100 * raw:+6.2f}% " + " ".join(f"{c:>15s}" for c in cells))
    print("columns: A against B's mean error raw; then the speed factor and the mean error after it, as the "
          "comparison recorded it, and recomputed from the journals with each pooling")


if __name__ == "__main__":
    main()
