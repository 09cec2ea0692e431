import json

import pytest

from slimnas.errors import InputError
from slimnas.latency import LatencyTable, build_table, parts_of_space
from slimnas.latency.backends import TorchCPUBackend
from slimnas.latency.builder import journal_path

from .conftest import MICRO


class CountingBackend(TorchCPUBackend):
    """The real torch-cpu backend, counting what it measures."""

    def __init__(self):
        super().__init__(threads=1, repeats=2, warmup_ms=1.0, min_sample_ms=0.2)
        self.measured = 0

    def measure_samples(self, module, example):
        self.measured += 1
        return super().measure_samples(module, example)


def test_interrupted_build_resumes_from_what_it_measured(tmp_path):
    out = tmp_path / "micro.parquet"
    total = len(parts_of_space(MICRO))
    first = CountingBackend()

    def stop_after_5(progress):
        if progress.done == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_table(MICRO, first, out, on_progress=stop_after_5)
    assert first.measured == 5 and not out.exists()
    journal = journal_path(out)
    assert len(journal.read_text().splitlines()) == 1 + 5
    second = CountingBackend()
    seen = []
    table = build_table(MICRO, second, out, on_progress=lambda p: seen.append(p))
    assert second.measured == total - 5
    assert seen[0].done == 6 and seen[-1].done == total and seen[-1].eta_s == 0
    assert len(table) == total and not journal.exists()
    assert LatencyTable.load(out).entries == table.entries


def test_a_torn_last_journal_line_is_remeasured(tmp_path):
    out = tmp_path / "micro.parquet"

    def stop_after_3(progress):
        if progress.done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_table(MICRO, CountingBackend(), out, on_progress=stop_after_3)
    journal = journal_path(out)
    journal.write_text(journal.read_text()[:-20])  # the process died in the middle of a write
    again = CountingBackend()
    build_table(MICRO, again, out)
    assert again.measured == len(parts_of_space(MICRO)) - 2


def test_journal_from_other_settings_is_refused_and_outputs_are_not_overwritten(tmp_path):
    out = tmp_path / "micro.parquet"
    journal = journal_path(out)
    journal.write_text(json.dumps({"identity": {"backend": "torch-cpu", "batch": 64}}) + "\n")
    with pytest.raises(InputError, match="other settings"):
        build_table(MICRO, CountingBackend(), out)
    build_table(MICRO, CountingBackend(), out, resume=False)
    with pytest.raises(InputError, match="exists"):
        build_table(MICRO, CountingBackend(), out)
    with pytest.raises(ValueError, match="form"):
        build_table(MICRO, CountingBackend(), tmp_path / "x.parquet", form="compiled")


def test_passes_pool_samples_and_rotation_is_part_of_the_identity(tmp_path):
    backend = CountingBackend()
    table = build_table(MICRO, backend, tmp_path / "p.parquet", passes=3, rotation_mb=1.0)
    total = len(parts_of_space(MICRO))
    assert backend.measured == 3 * total
    assert all(t.count == 3 * 2 for t in table.entries.values())  # 3 passes x 2 repeats
    assert table.meta.options["rotation_mb"] == 1.0 and table.meta.notes["passes"] == 3
    plain = build_table(MICRO, CountingBackend(), tmp_path / "q.parquet", parts=list(table.entries)[:2])
    assert "rotation_mb" not in plain.meta.options
