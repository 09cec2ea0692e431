#!/usr/bin/env python
"""Would a working-set term in the earlier stages' widths make in-context tables rank better? (issue 10; a probe)

    python benchmarks/probe_stage_widths.py --journals J.jsonl.gz ... --runs DIR ... [--space tiny]

Every ``J`` is the journal of a ``slimnas lut build --space S --backend torch-cpu`` run with the CLI's defaults (the
builder deletes it on success: keep a copy, as ``benchmarks/results/issue10/tiny-torch-cpu-widths-trial/`` did). Each
``DIR`` is a ``slimnas lut validate --num-archs N --seed S`` folder of the same space, all on the same networks: their
measurements' geometric mean is the consensus. For every journal the table's in-context step is redone from the
journal's samples (:func:`slimnas.latency.context.summarize_context`: entries, repeat factors, per-network overhead,
working-set slope in the network's weights) twice:

- ``plain``: as the builder does;
- ``widths``: the working-set term with one more variable per stage, that stage's width, counted for the parts of
  later stages only: ``log t(part, net) = log e(part) + a * (W - W0) + sum over stages s before the part's of
  b_s * (width_s - width0_s)``, all slopes from the within-part variation across covering networks (least squares).

Printed per journal and variant: the slopes, Kendall tau of the predictions against the consensus and against each
run (mean), and the residual of networks with each first-stage width. Only the covered parts are predicted (on
``tiny`` the cover is complete). No measurement is made here.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy.stats import kendalltau

from slimnas.latency import LatencyTable, parts_of, repeat_key
from slimnas.latency.context import ContextResult, covering_archs, summarize_context
from slimnas.latency.modules import part_weight_mib
from slimnas.latency.protocol import ContextSamples, Protocol, assess, statistic_of
from slimnas.latency.table import TableMeta
from slimnas.search_spaces import Arch, SearchSpace


def read_journal(path: Path, stage: str = "context") -> tuple[dict, dict[int, list]]:
    """The journal's header and the passes of one of its stages per item, in pass order: the in-context passes per
    covering network (``ContextSamples``), the timings of each reference network as ``(stage timed during,
    samples)`` (``reference``), or the samples of another stage's items (``calibration``: per network)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as handle:
        header = json.loads(handle.readline())
        passes: dict[int, dict[int, object]] = {}
        for line in handle:
            record = json.loads(line)
            if record["stage"] == stage:
                value = (ContextSamples.from_dict(record) if stage == "context"
                         else (record.get("during", ""), record["samples"]) if stage == "reference"
                         else record["samples"])
                passes.setdefault(record["index"], {})[record["pass"]] = value
    return header, {i: [p[k] for k in sorted(p)] for i, p in passes.items()}


def read_runs(folders: list[Path]) -> tuple[list[Arch], np.ndarray]:
    archs, rows = None, []
    for folder in folders:
        with (folder / "validation.csv").open(newline="") as handle:
            found = [r for r in csv.DictReader(handle) if r["name"].startswith("random")]
        if archs is None:
            archs = [r["arch"] for r in found]
        elif [r["arch"] for r in found] != archs:
            sys.exit(f"{folder}: other networks than {folders[0]}")
        rows.append([float(r["measured_median_ms"]) for r in found])
    return [Arch.from_json(a) for a in archs], np.asarray(rows)


def widths_variant(archs: list[Arch], records: list[list[ContextSamples]], protocol: Protocol, weights: dict,
                   header: dict, num_classes: int) -> tuple[Callable[[Arch], float], np.ndarray]:
    """The ``widths`` variant's predictor and slopes (see the module docstring)."""
    stages = len(archs[0].widths)
    at_widths = np.mean([a.widths for a in archs], axis=0)
    # the builder's repeat factors and overhead; only the working-set term differs
    plain = summarize_context([parts_of(a, num_classes) for a in archs], records, protocol, weights)
    factors, at_mib = plain.repeat_factors, plain.at_mib
    observed = []  # (part, arch, network MiB, in-context samples of the accepted passes, repeat)
    for arch, passes in zip(archs, records):
        accepted = assess([r.network for r in passes], protocol).accepted
        parts = parts_of(arch, num_classes)
        size = sum(weights[p] for p in parts)
        observed += [(part, arch, size, [v for r, ok in zip(passes, accepted) if ok for v in r.parts[i]],
                      i > 0 and parts[i - 1] == part) for i, part in enumerate(parts)]

    def deviation(part, arch, size) -> np.ndarray:
        return np.array([size - at_mib, *(arch.widths[s] - at_widths[s] if s < part.stage else 0.0
                                          for s in range(stages))])

    by_part: dict = {}  # as summarize_context: a repeat's samples divided by its factor, pooled per part
    for part, arch, size, samples, repeat in observed:
        scale = 1.0 / factors.get(repeat_key(part), 1.0) if repeat else 1.0
        by_part.setdefault(part, []).append((deviation(part, arch, size), [v * scale for v in samples]))
    xs, ys = [], []
    for pts in by_part.values():
        if len(pts) > 1:
            x = np.vstack([d for d, _ in pts])
            y = np.log([statistic_of(v, protocol.statistic) for _, v in pts])
            xs.append(x - x.mean(axis=0))
            ys.append(y - y.mean())
    slopes = np.linalg.lstsq(np.vstack(xs), np.concatenate(ys), rcond=None)[0]
    entries = {p: statistic_of([v * math.exp(-slopes @ d) for d, vs in pts for v in vs], protocol.statistic)
               for p, pts in by_part.items()}

    def predict(arch: Arch) -> float:
        parts = parts_of(arch, num_classes)
        size = sum(weights[p] for p in parts)
        return sum(entries[p] * (factors.get(repeat_key(p), 1.0) if i and parts[i - 1] == p else 1.0)
                   * math.exp(slopes @ deviation(p, arch, size)) for i, p in enumerate(parts)) + plain.overhead_ms

    return predict, slopes


def context_meta(header: dict, result: ContextResult, notes: dict | None = None) -> TableMeta:
    """The meta of the table a journal's build writes from its in-context step ``result``."""
    return TableMeta(**header["identity"], protocol=header["protocol"], overhead_ms=result.overhead_ms,
                     context_slope_per_mib=result.slope_per_mib, context_at_mib=result.at_mib,
                     repeat_factors=result.repeat_factors, notes=notes or {})


def plain_variant(archs: list[Arch], records: list[list[ContextSamples]], protocol: Protocol, weights: dict,
                  header: dict, num_classes: int) -> tuple[Callable[[Arch], float], np.ndarray]:
    """The builder's own in-context step (:func:`summarize_context`), predicted by the table it would write."""
    result = summarize_context([parts_of(a, num_classes) for a in archs], records, protocol, weights)
    meta = context_meta(header, result)
    return LatencyTable(result.entries, meta, weights=weights).predict, np.array([result.slope_per_mib])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--journals", nargs="+", type=Path, required=True)
    parser.add_argument("--runs", nargs="+", type=Path, required=True)
    parser.add_argument("--space", default="tiny")
    args = parser.parse_args()
    space = SearchSpace.preset(args.space)
    targets, measured = read_runs(args.runs)
    consensus = np.exp(np.log(measured).mean(axis=0))
    first = np.array([a.widths[0] for a in targets])
    for path in args.journals:
        header, by_network = read_journal(path)
        num_classes = header["identity"]["num_classes"]
        protocol = Protocol.from_dict(header["protocol"])
        context = header["context"]
        archs = covering_archs(space, num_classes, 3, context["cover"], context["max_networks"])
        records = [by_network[i] for i in range(len(archs))]
        weights = {p: part_weight_mib(p, space.img_size) for a in archs + targets for p in parts_of(a, num_classes)}
        print(f"{path.name}: {len(archs)} covering networks, protocol {protocol.describe()}")
        for name, variant in (("plain", plain_variant), ("widths", widths_variant)):
            predict, slopes = variant(archs, records, protocol, weights, header, num_classes)
            predicted = np.array([predict(a) for a in targets])
            per_run = [kendalltau(predicted, m)[0] for m in measured]
            residual = np.log(consensus / predicted)
            residual -= residual.mean()
            by_width = ", ".join(f"{w}: {100 * residual[first == w].mean():+.2f}%" for w in sorted(set(first)))
            tau = kendalltau(predicted, consensus)[0]
            print(f"  {name:6s} slopes {np.round(slopes, 5)}  tau vs consensus {tau:.3f}, per run "
                  f"{np.mean(per_run):.3f}; residual by first-stage width {by_width}")


if __name__ == "__main__":
    main()
