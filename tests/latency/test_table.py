import json
import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from slimnas.errors import InputError
from slimnas.latency import LatencyTable, MissingEntryError, Part, parts_of, parts_of_space
from slimnas.search_spaces.efficientformer import Arch, SearchSpace

TINY = SearchSpace.preset("tiny")


def test_table_built_in_the_suite_is_complete(tiny_table):
    assert len(tiny_table) == len(parts_of_space(TINY)) == 144
    assert tiny_table.missing_for_space() == []
    meta = tiny_table.meta
    assert (meta.backend, meta.batch, meta.dtype, meta.img_size, meta.threads) == ("torch-cpu", 1, "float32", 64, 1)
    assert meta.space == TINY.to_dict() and "torch" in meta.versions and meta.device
    assert meta.harness == "isolated" and meta.protocol["passes"] == 2 and tiny_table.stat == "median"
    assert 0 < meta.overhead_ms < 0.05  # one call of an empty module: microseconds
    assert all(0 <= t.min <= t.p10 <= t.p25 <= t.median <= t.p90 and t.count >= 3
               for t in tiny_table.entries.values())
    assert all(passes + disturbed >= 2 for passes, disturbed in tiny_table.passes.values())


def test_predict_is_the_sum_of_the_arch_parts(tiny_table):
    rng = random.Random(0)
    for _ in range(20):
        arch = TINY.sample(rng)
        parts = parts_of(arch)
        expected = sum(tiny_table.entries[p].median for p in parts) + tiny_table.meta.overhead_ms
        assert tiny_table.predict(arch) == pytest.approx(expected, rel=1e-12)
        assert [p for p, _ in tiny_table.breakdown(arch)] == parts


def test_parts_of_counts_reshapes_where_the_network_has_them():
    arch = Arch(64, (32, 32, 48, 64), (("4d",), ("4d",), ("4d", "3d", "id", "3d"), ("4d", "4d", "id")))
    kinds = [(p.kind, p.stage) for p in parts_of(arch)]
    assert kinds == [("stem", 0), ("mb4d", 0), ("downsample", 1), ("mb4d", 1), ("downsample", 2), ("mb4d", 2),
                     ("to_tokens", 2), ("mb3d", 2), ("mb3d", 2), ("to_grid", 2), ("downsample", 3), ("mb4d", 3),
                     ("mb4d", 3), ("to_tokens", 3), ("head", 3)]


def test_predict_many_is_vectorized_predict(tiny_table):
    rng = random.Random(1)
    archs = [TINY.sample(rng) for _ in range(300)] + [TINY.max_arch()]
    many = tiny_table.predict_many(archs)
    assert many.shape == (301,)
    np.testing.assert_allclose(many, [tiny_table.predict(a) for a in archs], rtol=1e-12)
    by_kind = tiny_table.predict_by_kind(archs)
    np.testing.assert_allclose(sum(by_kind.values()), many, rtol=1e-12)
    assert tiny_table.predict_many([]).shape == (0,)


def test_missing_entries_raise_naming_the_part(tiny_table):
    part = Part("mb4d", 2, 48, 48)
    partial = LatencyTable({p: t for p, t in tiny_table.entries.items() if p != part}, tiny_table.meta)
    arch = Arch(64, (32, 64, 48, 128), TINY.max_arch().blocks)
    assert partial.missing(arch) == [part]
    with pytest.raises(MissingEntryError, match=r"mb4d\(stage 3, width 48\)"):
        partial.predict(arch)
    with pytest.raises(MissingEntryError, match=r"mb4d\(stage 3, width 48\) needed by arch #1"):
        partial.predict_many([TINY.max_arch(), arch])
    wide = Arch(64, (32, 64, 96, 256), TINY.max_arch().blocks)  # outside the table's widths
    with pytest.raises(MissingEntryError, match=r"downsample\(stage 4, 96->256\)"):
        tiny_table.predict_many([wide])
    with pytest.raises(InputError, match="img_size"):
        tiny_table.predict(Arch.preset("l1"))


def test_parquet_round_trip_keeps_entries_and_metadata(tiny_table, tmp_path):
    path = tiny_table.save(tmp_path / "t.parquet")
    again = LatencyTable.load(path)
    assert again.entries == tiny_table.entries
    assert again.meta == tiny_table.meta
    assert LatencyTable.from_bytes(tiny_table.to_bytes()).entries == tiny_table.entries
    assert LatencyTable.load(path, stat="p90").predict(TINY.max_arch()) > again.predict(TINY.max_arch())
    assert [p.name for p in tmp_path.iterdir()] == ["t.parquet"]  # atomic write left no temporary file


def test_corrupt_and_foreign_files_fail_clearly(tiny_table, tmp_path):
    with pytest.raises(InputError, match="no such file"):
        LatencyTable.load(tmp_path / "missing.parquet")
    corrupt = tmp_path / "corrupt.parquet"
    corrupt.write_bytes(tiny_table.to_bytes()[:200])
    with pytest.raises(InputError, match="not a readable Parquet file"):
        LatencyTable.load(corrupt)
    foreign = tmp_path / "foreign.parquet"
    pq.write_table(pa.table({"x": [1, 2]}), foreign)
    with pytest.raises(InputError, match="not a slimnas latency table"):
        LatencyTable.load(foreign)
    arrow = tiny_table.to_arrow()
    meta = json.loads(arrow.schema.metadata[b"slimnas.latency"])
    for change, message in (({"format_version": 99}, "format version 99"), ({"format": "other"}, "format 'other'"),
                            ({"calibration": "x"}, r"invalid metadata \(calibration: expected a mapping\)"),
                            ({"calibration": {"coef": {}, "intercept": 0.0, "parts": [["mb4d", 0, 16]]}},
                             r"calibration.parts: malformed row \['mb4d', 0, 16\]")):
        table = arrow.replace_schema_metadata({b"slimnas.latency": json.dumps(meta | change).encode()})
        path = tmp_path / "changed.parquet"
        pq.write_table(table, path)
        with pytest.raises(InputError, match=message):
            LatencyTable.load(path)
    pq.write_table(arrow.drop(["median_ms"]), tmp_path / "nocol.parquet")
    with pytest.raises(InputError, match="lacks the column 'median_ms'"):
        LatencyTable.load(tmp_path / "nocol.parquet")
    bad_rows = arrow.set_column(arrow.column_names.index("kind"), "kind", pa.array(["bogus"] * len(arrow)))
    pq.write_table(bad_rows, tmp_path / "badrows.parquet")
    with pytest.raises(InputError, match="row 0: part.kind: unknown part kind 'bogus'"):
        LatencyTable.load(tmp_path / "badrows.parquet")


def test_merge_refuses_other_settings(tiny_table):
    other = tiny_table.with_meta(threads=2)
    with pytest.raises(InputError, match="different settings"):
        tiny_table.merged(other)
    assert len(tiny_table.merged(tiny_table)) == len(tiny_table)


def test_protocol_harness_overhead_and_passes_round_trip(tiny_table, tmp_path):
    path = tiny_table.save(tmp_path / "t.parquet")
    again = LatencyTable.load(path)
    assert again.meta == tiny_table.meta and again.passes == tiny_table.passes and again.entries == tiny_table.entries
    assert again.meta.measurement_protocol().to_dict() == tiny_table.meta.protocol
    assert again.stat == "median" and LatencyTable.load(path, stat="p10").stat == "p10"
    p10 = tiny_table.meta.protocol | {"statistic": "p10"}
    assert LatencyTable(tiny_table.entries, tiny_table.meta.__class__(**{**tiny_table.meta.to_dict(),
                                                                        "protocol": p10})).stat == "p10"
    with pytest.raises(InputError, match="stat"):
        LatencyTable.load(path, stat="mode")


def test_a_version_1_table_still_loads_and_predicts_its_median(tiny_table, tmp_path):
    columns = ["kind", "stage", "c_in", "c_out", "median_ms", "mean_ms", "p10_ms", "p90_ms", "std_ms", "count"]
    arrow = tiny_table.to_arrow().select(columns)
    meta = json.loads(arrow.schema.metadata[b"slimnas.latency"])
    for key in ("protocol", "harness", "overhead_ms"):
        meta.pop(key)
    meta["format_version"] = 1
    path = tmp_path / "v1.parquet"
    pq.write_table(arrow.replace_schema_metadata({b"slimnas.latency": json.dumps(meta).encode()}), path)
    old = LatencyTable.load(path)
    assert old.stat == "median" and old.meta.harness == "isolated" and old.meta.overhead_ms == 0.0
    arch = TINY.max_arch()
    assert old.predict(arch) == pytest.approx(tiny_table.predict(arch) - tiny_table.meta.overhead_ms)
    with pytest.raises(MissingEntryError):  # p25 was not recorded in version 1: nan, never a silent number
        old.with_stat("p25").predict_many([arch])


def test_a_build_disturbed_for_most_of_its_passes_is_named(tiny_table, tmp_path):
    import dataclasses

    assert tiny_table.meta.disturbed_build() is None  # parts timed alone: no covering networks' count
    noisy = dataclasses.replace(tiny_table.meta, notes={"context_passes": 1054, "context_disturbed": 629})
    warning = noisy.disturbed_build()
    assert warning.startswith("the machine was disturbed for much of this table's build (60% of its covering "
                              "networks' passes, 629 of 1054)") and warning.endswith("when the machine is quieter")
    assert dataclasses.replace(noisy, notes={"context_passes": 991, "context_disturbed": 406}).disturbed_build() is None
    LatencyTable(tiny_table.entries, noisy).save(tmp_path / "noisy.parquet")  # and it is read back from the file
    assert LatencyTable.load(tmp_path / "noisy.parquet").meta.disturbed_build() == warning
