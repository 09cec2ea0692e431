"""A latency backend from an outside package (``toy-npu``, one module of the toy plug-in in ``tests/plugins/site``,
declared as an entry point), used through the CLI and the pipeline config with no edit to slimnas: ``slimnas lut build
--backend toy-npu --speed 2`` builds a table and ``slimnas lut validate`` checks it. The toy device is deterministic,
so validation must find ~0% error.
"""

import json

import pytest

from slimnas.errors import ConfigError
from slimnas.latency import LatencyTable
from slimnas.platform.cli import main
from slimnas.platform.commands.pipeline import quickstart_source
from slimnas.platform.pipeline.config import load_pipeline

FAST = ["--passes", "2", "--samples", "2", "--pass-ms", "0", "--warmup-ms", "0", "--reference-networks", "1"]
BUILD = ["--rotation-mb", "0", "--calibrate-networks", "6"]  # no weight copies to build: nothing is timed


@pytest.fixture(autouse=True)
def toy_registered(toy_plugin):
    yield


def _exit_status(argv) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse's usage errors
        return exc.code


def test_a_plugin_backend_builds_and_validates_a_table_through_the_cli(tmp_path, capsys):
    out = tmp_path / "toy.parquet"
    assert main(["lut", "build", "--space", "tiny", "--backend", "toy-npu", "--speed", "2", "--out", str(out),
                 *BUILD, *FAST]) == 0
    table = LatencyTable.load(out)
    meta = table.meta
    assert meta.backend == "toy-npu" and meta.device == "toy NPU x2" and meta.harness == "isolated"
    assert meta.options["speed"] == 2.0 and meta.threads is None and meta.dtype == "float32"
    from slimnas_toyplugin.backend import CALL_MS

    assert meta.overhead_ms == pytest.approx(CALL_MS / 2) and len(table) == 144
    assert meta.calibration["networks"] == 6
    capsys.readouterr()
    assert main(["lut", "validate", "--lut", str(out), "--num-archs", "6", "--out-dir", str(tmp_path / "val"),
                 *FAST[:6]]) == 0
    summary = json.loads(capsys.readouterr().out)["summary"]
    assert summary["plain_all"]["n"] == 6 and summary["plain_all"]["mape_pct"] < 0.01  # exact, as designed


def test_the_plugin_settings_are_flags_checked_while_parsing(tmp_path, capsys):
    out = tmp_path / "toy.parquet"
    build = ["lut", "build", "--space", "tiny", "--backend", "toy-npu", "--out", str(out)]
    for flags, needle in [(["--speed", "0"], "argument --speed: Input should be greater than 0 (got '0')"),
                          (["--speed", "fast"], "argument --speed: Input should be a valid number"),
                          (["--threads", "2"], "argument --threads: not a setting of backend toy-npu (its settings: "
                                               "--dtype, --speed)")]:
        capsys.readouterr()
        assert _exit_status([*build, *flags]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0], lines
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(SystemExit):
        main([*build, "--help"])
    assert "--speed SPEED" in capsys.readouterr().out


def test_the_pipeline_config_takes_the_plugin_settings():
    data = quickstart_source()
    data["latency"] = {"backend": "toy-npu", "speed": 3}
    cfg = load_pipeline(data)
    assert cfg.latency.backend_settings() == {"speed": 3.0}  # no threads: the toy has none
    assert cfg.table_path.name == "toy-npu-b1.parquet"
    for latency, needle in [({"speed": 0}, "latency.speed: Input should be greater than 0"),
                            ({"threads": 1}, "latency.threads: unknown field (the settings of backend toy-npu: "
                                             "dtype, speed)")]:
        data["latency"] = {"backend": "toy-npu", **latency}
        with pytest.raises(ConfigError) as caught:
            load_pipeline(data)
        assert needle in str(caught.value)
