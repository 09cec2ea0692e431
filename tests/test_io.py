"""The one atomic writer (slimnas._io) and the outputs written through it: the user's umask, nothing torn."""

import os
import stat

import pytest
import torch

from slimnas._io import atomic_write, atomic_write_bytes, atomic_write_text
from slimnas.latency import LatencyTable, Part
from slimnas.latency._timing import Timing
from slimnas.latency.table import TableMeta
from slimnas.platform.pipeline.record import Attempt, PipelineRecord
from slimnas.search_spaces.efficientformer import SearchSpace
from slimnas.trainers._checkpoint import load_checkpoint, save_checkpoint


@pytest.fixture
def umask():
    """Set the process's umask for one test (restored after it)."""
    saved = os.umask(0o022)
    os.umask(saved)

    def set_umask(value: int) -> None:
        os.umask(value)

    yield set_umask
    os.umask(saved)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _one_entry_table() -> LatencyTable:
    meta = TableMeta("torch-cpu", "cpu", 1, "float32", 64, 1, SearchSpace.preset("tiny").to_dict())
    return LatencyTable({Part("stem", 0, 3, 16): Timing(1.0, 1.0, 0.9, 1.1, 0.05, 3, 0.95, 0.9)}, meta)


def _write_every_kind(folder) -> dict[str, os.PathLike]:
    """One file of each kind slimnas writes atomically: text, bytes, a table, a checkpoint, a pipeline record."""
    record = PipelineRecord("job", [Attempt("2026-01-01T00:00:00+0000", {"name": "job"}, status="finished")])
    return {
        "text": atomic_write_text(folder / "a.json", "{}"),
        "bytes": atomic_write_bytes(folder / "b.bin", b"\x00\x01"),
        "table": _one_entry_table().save(folder / "t.parquet"),
        "checkpoint": save_checkpoint({"model": {"w": torch.zeros(2)}, "epoch": 1}, folder / "epoch_0001"),
        "record": record.save(folder / "pipeline.json"),
    }


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_written_files_follow_the_umask(tmp_path, umask, mask, expected):
    umask(mask)
    files = _write_every_kind(tmp_path)
    assert {kind: oct(_mode(path)) for kind, path in files.items()} == {kind: oct(expected) for kind in files}
    # replacing a file gives the new one the umask's mode too (not the old file's, not mkstemp's 0600)
    os.chmod(files["text"], 0o600)
    atomic_write_text(files["text"], "[]")
    assert _mode(files["text"]) == expected
    assert LatencyTable.load(files["table"]).entries == _one_entry_table().entries
    assert load_checkpoint(files["checkpoint"])["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.bin", "epoch_0001", "pipeline.json",
                                                          "t.parquet"]  # no temporary file left


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = atomic_write_text(tmp_path / "out.json", "old")

    def half_then_fail(tmp):
        tmp.write_text("new, half writ")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        atomic_write(target, half_then_fail)
    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, lambda tmp: (_ for _ in ()).throw(KeyboardInterrupt))
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["out.json"]


def test_a_name_near_the_file_system_limit_is_written(tmp_path):
    target = tmp_path / ("n" * 250 + ".json")  # the temporary name must not exceed 255 bytes
    atomic_write_text(target, "x")
    assert target.read_text() == "x" and os.listdir(tmp_path) == [target.name]


def test_missing_folders_are_made(tmp_path):
    assert atomic_write_bytes(tmp_path / "a" / "b" / "c.bin", b"1").read_bytes() == b"1"
