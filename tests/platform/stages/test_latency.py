"""The table stage's reuse check against what its own build records."""

from slimnas.latency import parts_of_space
from slimnas.latency.builder import default_calibrate_networks
from slimnas.platform.pipeline.config import PipelineLatencySection
from slimnas.platform.stages.latency import expected_settings, measure, reusable_table
from slimnas.search_spaces.efficientformer import SearchSpace

#: 19 parts and only 20 distinct archs: fewer than the default asks for (1.4 per part).
MICRO = SearchSpace(name="micro", img_size=32, max_widths=(16, 16, 16, 32), slots=(1, 1, 1, 2))


def test_a_table_calibrated_on_every_arch_a_small_space_has_is_reused(tmp_path):
    lat = PipelineLatencySection.model_validate({
        "harness": "isolated", "rotation_mb": 0, "validate": {"num_archs": 0},
        "protocol": {"passes": 1, "samples": 1, "pass_ms": 0, "warmup_ms": 0, "extra_passes": 0,
                     "reference_networks": 0}})
    path = tmp_path / "micro.parquet"
    measure(lat, MICRO, 10, path, tmp_path / "validation", build=True, validate=False)
    recorded = reusable_table(lat, path, MICRO, 10).meta.calibration
    assert len(parts_of_space(MICRO, 10, 3)) <= recorded["networks"] < default_calibrate_networks(19) and \
        "parts" in recorded
    assert expected_settings(lat, MICRO, 10)["calibrate_networks"] == recorded["networks"]


def test_the_reuse_check_reads_a_recorded_protocol_as_it_was_measured(tmp_path):
    import dataclasses

    import pytest

    from slimnas.errors import InputError
    from slimnas.latency import LatencyTable

    protocol = {"passes": 1, "samples": 1, "pass_ms": 0, "warmup_ms": 0, "extra_passes": 0, "reference_networks": 0}
    lat = PipelineLatencySection.model_validate({"harness": "isolated", "rotation_mb": 0, "calibrate_networks": 0,
                                                 "validate": {"num_archs": 0}, "protocol": protocol})
    path = tmp_path / "micro.parquet"
    measure(lat, MICRO, 10, path, tmp_path / "validation", build=True, validate=False)
    # how network timings are retried is no part of how a table was measured
    retries = PipelineLatencySection.model_validate(lat.model_dump() | {"protocol": protocol | {"settle_retries": 0}})
    assert reusable_table(retries, path, MICRO, 10) is not None
    # a table recorded before quiet_passes existed pooled every accepted pass: not what the config now asks for
    table = LatencyTable.load(path)
    legacy = {k: v for k, v in table.meta.protocol.items() if k not in ("quiet_passes", "settle_retries")}
    LatencyTable(table.entries, dataclasses.replace(table.meta, protocol=legacy), weights=table.weights).save(path)
    with pytest.raises(InputError, match="protocol.quiet_passes 0, the config asks for 3"):
        reusable_table(lat, path, MICRO, 10)
    every = PipelineLatencySection.model_validate(lat.model_dump() | {"protocol": protocol | {"quiet_passes": 0}})
    assert reusable_table(every, path, MICRO, 10) is not None
