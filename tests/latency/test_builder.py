import json
import math

import pytest

from slimnas.errors import InputError
from slimnas.latency import LatencyTable, Part, build_table, parts_of, parts_of_space
from slimnas.latency.backends import TorchCPUBackend
from slimnas.latency.builder import (
    default_calibrate_networks,
    journal_path,
    resolve_calibrate_networks,
    resolve_harness,
)
from slimnas.latency.context import covering_archs
from slimnas.latency.protocol import Protocol
from slimnas.search_spaces.efficientformer import SearchSpace

from .conftest import MICRO

#: Deterministic pass counts: no extra passes.
COUNTED = Protocol(passes=2, samples=2, pass_ms=0.0, warmup_ms=0.5, extra_passes=0, reference_networks=0)


#: Parts timed alone, no calibration networks (counts stay exact).
ALONE = {"protocol": COUNTED, "harness": "isolated", "calibrate_networks": 0}


class CountingBackend(TorchCPUBackend):
    """The real torch-cpu backend, counting the passes it measures (parts alone and networks in context)."""

    def __init__(self):
        super().__init__(threads=1)
        self.measured = 0
        self.networks = 0

    def sample(self, module, example, protocol):
        self.measured += 1
        return super().sample(module, example, protocol)

    def sample_context(self, network, modules, example, protocol):
        self.networks += 1
        return super().sample_context(network, modules, example, protocol)


def _stop_after(n):
    def stop(progress):
        if progress.done == n:
            raise KeyboardInterrupt

    return stop


def test_interrupted_isolated_build_resumes_from_what_it_measured(tmp_path):
    out = tmp_path / "micro.parquet"
    total = len(parts_of_space(MICRO)) * COUNTED.passes
    first = CountingBackend()
    with pytest.raises(KeyboardInterrupt):
        build_table(MICRO, first, out, **ALONE, on_progress=_stop_after(5))
    assert first.measured == 5 and not out.exists()
    journal = journal_path(out)
    assert len(journal.read_text().splitlines()) == 1 + 5
    second = CountingBackend()
    seen = []
    table = build_table(MICRO, second, out, **ALONE, on_progress=seen.append)
    assert second.measured == total - 5 + COUNTED.passes  # + the empty module (the per-call overhead)
    assert seen[0].done == 6 and seen[-1].done == total and seen[-1].eta_s == 0
    assert len(table) == len(parts_of_space(MICRO)) and not journal.exists()
    again = LatencyTable.load(out)
    assert again.entries == table.entries and again.passes == table.passes
    assert again.meta.protocol == COUNTED.to_dict() and again.meta.overhead_ms == table.meta.overhead_ms > 0


def test_a_torn_last_journal_line_is_remeasured(tmp_path):
    out = tmp_path / "micro.parquet"
    with pytest.raises(KeyboardInterrupt):
        build_table(MICRO, CountingBackend(), out, **ALONE, on_progress=_stop_after(3))
    journal = journal_path(out)
    journal.write_text(journal.read_text()[:-20])  # the process died in the middle of a write
    again = CountingBackend()
    build_table(MICRO, again, out, **ALONE)
    assert again.measured == len(parts_of_space(MICRO)) * COUNTED.passes - 2 + COUNTED.passes


def test_journal_from_other_settings_is_refused_and_outputs_are_not_overwritten(tmp_path):
    out = tmp_path / "micro.parquet"
    with pytest.raises(KeyboardInterrupt):
        build_table(MICRO, CountingBackend(), out, **ALONE, on_progress=_stop_after(2))
    other = COUNTED.replace(statistic="p10")
    with pytest.raises(InputError, match="other settings"):  # another protocol: never mixed
        build_table(MICRO, CountingBackend(), out, protocol=other, harness="isolated", calibrate_networks=0)
    journal_path(out).write_text(json.dumps({"identity": {"backend": "torch-cpu", "batch": 64}}) + "\n")
    with pytest.raises(InputError, match="other settings"):
        build_table(MICRO, CountingBackend(), out, **ALONE)
    build_table(MICRO, CountingBackend(), out, **ALONE, resume=False)
    with pytest.raises(InputError, match="exists"):
        build_table(MICRO, CountingBackend(), out, protocol=COUNTED)
    with pytest.raises(ValueError, match="form"):
        build_table(MICRO, CountingBackend(), tmp_path / "x.parquet", form="compiled")
    with pytest.raises(InputError, match="batch: must be an integer from 1"):
        build_table(MICRO, CountingBackend(), tmp_path / "x.parquet", batch=10**12)
    with pytest.raises(InputError, match="rotation_mb"):
        build_table(MICRO, CountingBackend(), tmp_path / "x.parquet", rotation_mb="lots")


def test_rotation_is_part_of_the_identity_and_auto_resolves_to_mib(tmp_path):
    table = build_table(MICRO, CountingBackend(), tmp_path / "p.parquet", **ALONE,
                        rotation_mb=1.0, parts=parts_of_space(MICRO)[:3])
    assert table.meta.options["rotation_mb"] == 1.0
    plain = build_table(MICRO, CountingBackend(), tmp_path / "q.parquet", **ALONE,
                        parts=parts_of_space(MICRO)[:2])
    assert "rotation_mb" not in plain.meta.options and plain.meta.identity() != table.meta.identity()
    auto = build_table(MICRO, CountingBackend(), tmp_path / "r.parquet", **ALONE,
                       rotation_mb="auto", parts=parts_of_space(MICRO)[:2])
    assert 0 < auto.meta.options["rotation_mb"] <= 32


def test_covering_networks_hold_every_part():
    archs = covering_archs(MICRO, cover=2, max_networks=100)
    counts = {}
    for arch in archs:
        for part in set(parts_of(arch)):
            counts[part] = counts.get(part, 0) + 1
    assert set(counts) == set(parts_of_space(MICRO))
    assert min(counts.values()) >= 2 or len(archs) == 100
    assert covering_archs(MICRO, cover=2, max_networks=100) == archs  # seeded
    assert len(covering_archs(MICRO, cover=2, max_networks=3)) == 3


def test_context_build_times_parts_inside_networks_and_resumes(tmp_path):
    out = tmp_path / "ctx.parquet"
    archs = covering_archs(MICRO, cover=1, max_networks=96)
    first = CountingBackend()
    with pytest.raises(KeyboardInterrupt):
        build_table(MICRO, first, out, protocol=COUNTED, cover=1, on_progress=_stop_after(3))
    assert first.networks == 3 and first.measured == 0
    second = CountingBackend()
    table = build_table(MICRO, second, out, protocol=COUNTED, cover=1)
    assert second.networks == len(archs) * COUNTED.passes - 3
    assert second.measured == 0  # a complete cover: no part is timed alone
    meta = table.meta
    assert meta.harness == "context" and meta.notes["context_networks"] == len(archs) and meta.notes["cover"] == 1
    # how widely whole networks' passes spread here: what a later session against the table is judged by
    assert 0 <= meta.notes["network_pass_spread"] < 10
    assert LatencyTable.load(out).meta.notes["network_pass_spread"] == meta.notes["network_pass_spread"]
    assert len(table) == len(parts_of_space(MICRO)) and all(t.median > 0 for t in table.entries.values())
    # a network is predicted as the sum of its in-context parts (a repeated block times its repeat factor), times
    # the working-set term, plus the overhead
    assert set(table.weights) == set(table.entries) and all(w >= 0 for w in table.weights.values())
    assert math.isfinite(meta.context_slope_per_mib) and meta.context_at_mib > 0
    for arch in archs[:3]:
        parts = parts_of(arch)
        size = sum(table.weights[p] for p in parts)
        factor = math.exp(meta.context_slope_per_mib * (size - meta.context_at_mib))
        repeat = [meta.repeat_factors.get(f"{p.kind}:{p.stage}", 1.0) if i and parts[i - 1] == p else 1.0
                  for i, p in enumerate(parts)]
        expected = sum(table.entries[p].median * r for p, r in zip(parts, repeat)) * factor + meta.overhead_ms
        assert table.predict(arch) == pytest.approx(expected)
        assert table.predict_many([arch])[0] == pytest.approx(expected)
    assert LatencyTable.load(out).weights == table.weights


def test_a_partial_cover_times_the_rest_alone_and_scales_it(tmp_path):
    backend = CountingBackend()
    # fill="fitted" (the default) falls back to timing alone: one network leaves every kind too few covered parts
    table = build_table(MICRO, backend, tmp_path / "partial.parquet", protocol=COUNTED, cover=1, max_networks=1)
    covered = {p for a in covering_archs(MICRO, cover=1, max_networks=1) for p in parts_of(a)}
    everything = set(parts_of_space(MICRO))
    assert covered < everything and set(table.entries) == everything
    assert backend.networks == COUNTED.passes and backend.measured == len(everything) * COUNTED.passes
    assert table.meta.notes["parts_scaled_from_isolated"] == len(everything - covered)
    assert "parts_fitted" not in table.meta.notes


#: 4 widths per stage: 16 downsample width pairs per stage, of which 12 covering networks hold 12.
WIDE = SearchSpace(name="wide", img_size=32, max_widths=(64, 64, 64, 64), slots=(1, 1, 1, 2))


@pytest.mark.parametrize("fill", ["fitted", "isolated"])
def test_parts_a_partial_cover_leaves_out_are_fitted_or_timed_alone(tmp_path, fill):
    backend = CountingBackend()
    table = build_table(WIDE, backend, tmp_path / f"{fill}.parquet", protocol=COUNTED, cover=1, max_networks=12,
                        fill=fill)
    covered = {p for a in covering_archs(WIDE, cover=1, max_networks=12) for p in parts_of(a)}
    everything = set(parts_of_space(WIDE))
    left = everything - covered
    assert len(left) == 12 and {p.kind for p in left} == {"downsample"} and set(table.entries) == everything
    assert backend.networks == 12 * COUNTED.passes
    notes = table.meta.notes
    assert notes["fill"] == fill
    if fill == "isolated":
        assert backend.measured == len(everything) * COUNTED.passes
        assert notes["parts_scaled_from_isolated"] == len(left) and "parts_fitted" not in notes
        return
    assert backend.measured == 0  # no part timed alone
    assert notes["parts_fitted"] == len(left) and "parts_scaled_from_isolated" not in notes
    assert set(notes["fit_loo_error_pct"]) == {"downsample/1", "downsample/2", "downsample/3"}
    for part in left:
        known = [table.entries[p].median for p in covered if (p.kind, p.stage) == (part.kind, part.stage)]
        assert 0.5 * min(known) <= table.entries[part].median <= 2 * max(known)
    assert LatencyTable.load(tmp_path / "fitted.parquet").meta.notes["parts_fitted"] == len(left)


def test_as_many_calibration_networks_as_parts_calibrate_each_part(tmp_path):
    backend = CountingBackend()
    parts = parts_of_space(MICRO)
    assert default_calibrate_networks(len(parts)) == math.ceil(1.4 * len(parts))
    assert default_calibrate_networks(144) == 202 and default_calibrate_networks(674) == 24  # tiny; l1: per group
    table = build_table(MICRO, backend, tmp_path / "cal.parquet", protocol=COUNTED, harness="isolated")
    cal = table.meta.calibration
    networks = cal["networks"]  # the default asks for more; MICRO has no more distinct archs
    assert len(parts) <= networks < default_calibrate_networks(len(parts))
    assert backend.measured == (len(parts) + 1 + networks) * COUNTED.passes  # parts, the empty module, the networks
    coef = {Part(*row[:4]): row[4] for row in cal["parts"]}
    assert set(coef) <= set(parts) and len(coef) >= len(parts) - 2
    arch = MICRO.max_arch()
    expected = sum(table.entries[p].median * coef.get(p, 1.0) for p in parts_of(arch)) + cal["intercept"]
    assert table.predict(arch) == pytest.approx(expected) and table.predict_many([arch])[0] == pytest.approx(expected)
    assert f"calibrated per part on {networks} networks" in LatencyTable.load(tmp_path / "cal.parquet").meta.describe()


def test_a_table_of_parts_timed_alone_is_calibrated_on_whole_networks(tmp_path):
    backend = CountingBackend()
    table = build_table(MICRO, backend, tmp_path / "cal.parquet", protocol=COUNTED, harness="isolated",
                        calibrate_networks=6)
    parts = len(parts_of_space(MICRO))
    assert backend.measured == (parts + 1 + 6) * COUNTED.passes  # parts, the empty module, the networks
    cal = table.meta.calibration
    assert cal["networks"] == 6 and set(cal["coef"]) == {"stem", "downsample", "mb4d", "mb3d", "reshape", "head"}
    arch = MICRO.max_arch()
    expected = sum(table.entries[p].median * cal["coef"][arch.space_family.group_of(p.kind)] for p in parts_of(arch)) \
        + cal["intercept"]
    assert table.predict(arch) == pytest.approx(expected) and table.predict_many([arch])[0] == pytest.approx(expected)
    assert LatencyTable.load(tmp_path / "cal.parquet").meta.calibration == cal
    assert "calibrated on 6 networks" in table.meta.describe()
    assert 0 <= table.meta.notes["network_pass_spread"] < 10  # the calibration networks' passes


def test_the_default_harness_and_calibration_are_resolved_in_one_place():
    cpu = TorchCPUBackend(threads=1)
    assert resolve_harness(None, cpu) == "context" and resolve_harness("isolated", cpu) == "isolated"
    parts = len(parts_of_space(MICRO))
    assert resolve_calibrate_networks(None, MICRO, "isolated") == default_calibrate_networks(parts) > 0
    assert resolve_calibrate_networks(None, MICRO, "isolated", complete=False) == 0  # a table of some parts
    assert resolve_calibrate_networks(None, MICRO, "context") == 0
    assert resolve_calibrate_networks(5, MICRO, "context") == 5
