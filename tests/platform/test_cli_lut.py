import json
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from slimnas.latency import LatencyTable
from slimnas.platform.cli import main

from .conftest import one_line_exit_2

FAST = ["--threads", "1", "--passes", "2", "--samples", "2", "--pass-ms", "0", "--warmup-ms", "1",
        "--harness", "isolated", "--rotation-mb", "0"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "tiny.parquet"
    assert main(["lut", "build", "--space", "tiny", "--backend", "torch-cpu", "--out", str(out), *FAST,
                 "--keep-journal"]) == 0
    return out


def test_build_show_validate(built, tmp_path, capsys):
    table = LatencyTable.load(built)
    assert len(table) == 144 and table.meta.threads == 1
    # --keep-journal: every sample of the finished build, beside the table
    lines = built.with_name(built.name + ".journal.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["identity"]["backend"] == "torch-cpu"
    assert sum(json.loads(line)["stage"] == "isolated" for line in lines[1:]) >= 144 * 2
    assert not built.with_name(built.name + ".partial.jsonl").exists()
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps(table.space.max_arch().to_dict()))
    capsys.readouterr()
    assert main(["lut", "show", "--lut", str(built), "--arch", str(arch)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["predicted_ms"] == pytest.approx(table.predict(table.space.max_arch()))
    assert info["entries"] == 144 and info["missing_for_space"] == 0
    out_dir = tmp_path / "val"
    assert main(["lut", "validate", "--lut", str(built), "--num-archs", "6", "--out-dir", str(out_dir),
                 "--samples", "2", "--warmup-ms", "1"]) == 0
    summary = json.loads(capsys.readouterr().out)["summary"]
    assert summary["plain_all"]["n"] == 6 and summary["measurement"]["passes"] >= 6 * 2
    assert main(["lut", "validate", "--lut", str(built), "--against", str(built), "--num-archs", "20"]) == 0
    same = json.loads(capsys.readouterr().out)
    assert same["archs"] == 20 and same["mape_pct"] == 0.0 and same["kendall_tau"] == 1.0
    assert {p.name for p in out_dir.iterdir()} == {"validation.csv", "validation.png", "validation.json",
                                                  "calibration.json"}


def test_bad_input_is_one_line_and_exit_2(built, tmp_path, capsys):
    one_line_exit_2(["lut", "show", "--lut", str(tmp_path / "none.parquet")], capsys, "no such file")
    foreign = tmp_path / "foreign.parquet"
    pq.write_table(pa.table({"a": [1]}), foreign)
    one_line_exit_2(["lut", "show", "--lut", str(foreign)], capsys, "not a slimnas latency table")
    one_line_exit_2(["lut", "build", "--space", "tiny", "--backend", "gpu9", "--out", str(tmp_path / "x.parquet")],
                     capsys, "unknown backend 'gpu9'")
    wide = tmp_path / "wide.json"
    blocks = LatencyTable.load(built).space.max_arch().to_dict()["blocks"]
    wide.write_text(json.dumps({"img_size": 64, "widths": [32, 64, 96, 256], "blocks": blocks}))
    one_line_exit_2(["lut", "show", "--lut", str(built), "--arch", str(wide)], capsys,
                     "no entry for downsample(stage 4, 96->256)")
    one_line_exit_2(["lut", "build", "--space", "tiny", "--backend", "torch-cpu", "--out", str(built)], capsys,
                     "exists")
    one_line_exit_2(["lut", "build", "--space", "huge", "--backend", "torch-cpu", "--out", "x.parquet"], capsys,
                     "unknown preset 'huge'")
    one_line_exit_2(["lut", "build", "--space", "tiny", "--backend", "torch-cpu", "--out", "x.parquet",
                      "--img-size", "50"], capsys, "img_size")
    one_line_exit_2(["lut", "import-measurements", "--bundle", str(tmp_path), "--measurements", "m.json", "--out",
                      str(tmp_path / "y.parquet")], capsys, "no manifest.json")


@pytest.mark.parametrize("flags, needle", [
    (["--warmup-ms", "-5"], "protocol.warmup_ms: must be between 0 and 600000, got -5.0"),
    (["--passes", "0"], "protocol.passes: must be an integer from 1 to 1000, got 0"),
    (["--tolerance", "0"], "protocol.tolerance"),
    (["--extra-passes", "-1"], "protocol.extra_passes"),
    (["--stat", "mode"], "invalid choice: 'mode'"),
    (["--threads", "0"], "argument --threads: Input should be greater than or equal to 1 (got '0')"),
    (["--batch-size", "1000000000000"], "--batch-size: must be from 1 to 65536"),
    (["--rotation-mb", "-1"], "rotation_mb"),
    (["--harness", "inside"], "invalid choice: 'inside'"),
    (["--max-networks", "0"], "--max-networks: must be from 1"),
])
def test_bad_protocol_settings_are_one_line_exit_2_before_any_work(flags, needle, tmp_path, capsys):
    out = tmp_path / "t.parquet"
    one_line_exit_2(["lut", "build", "--space", "tiny", "--backend", "torch-cpu", "--out", str(out), *flags],
                     capsys, needle)
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_validate_refuses_bad_protocol_settings_and_a_foreign_table(built, tmp_path, capsys):
    one_line_exit_2(["lut", "validate", "--lut", str(built), "--passes", "0"], capsys, "protocol.passes")
    one_line_exit_2(["lut", "validate", "--lut", str(built), "--num-archs", "-1"], capsys, "--num-archs")
    one_line_exit_2(["lut", "validate", "--lut", str(built), "--against", str(tmp_path / "none.parquet")], capsys,
                     "no such file")


def test_a_real_process_prints_no_traceback(tmp_path):
    corrupt = tmp_path / "corrupt.parquet"
    corrupt.write_bytes(b"PAR1 not really")
    proc = subprocess.run([sys.executable, "-m", "slimnas.platform.cli", "lut", "show", "--lut", str(corrupt)],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == f"slimnas lut show: error: lut: {corrupt} is not a readable Parquet file " \
                                  "(ArrowInvalid)"
