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
