import json

import pytest

from slimnas.errors import InputError
from slimnas.latency import parts_of_space
from slimnas.latency.bundle import import_measurements, read_manifest, write_bundle
from slimnas.latency.validate import validate_measured, validation_archs
from slimnas.search_spaces.efficientformer import Arch

from .conftest import MICRO


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle")
    networks = validation_archs(MICRO, num_archs=7, seed=0)
    write_bundle(MICRO, out, compute_units="cpu_only", networks=networks)
    return out


def _fake_device_latency(record: dict) -> float:
    """A stand-in for the phone: latency from the part's shape (deterministic, so the round trip is checkable)."""
    return 0.05 + 1e-4 * record["c_in"] * record["c_out"] / 16 + 0.01 * record["stage"]


def test_bundle_holds_every_part_and_the_networks(bundle):
    manifest = read_manifest(bundle)
    assert len(manifest["parts"]) == len(parts_of_space(MICRO))
    for record in manifest["parts"] + manifest["networks"]:
        assert (bundle / record["file"]).is_dir()  # an .mlpackage is a folder
        assert (bundle / record["file"] / "Manifest.json").is_file()
    assert manifest["meta"]["backend"] == "coreml" and manifest["meta"]["notes"]["compute_units"] == "cpu_only"
    assert len(manifest["networks"]) == 7 and (bundle / "README.md").is_file()


def test_measurements_round_trip_into_a_table_and_a_validation(bundle, tmp_path):
    manifest = read_manifest(bundle)
    results = {r["id"]: {"median_ms": _fake_device_latency(r), "p10_ms": 0.9 * _fake_device_latency(r),
                         "count": 200} for r in manifest["parts"]}
    measurements = tmp_path / "iphone.json"
    measurements.write_text(json.dumps({"device": "iPhone 12 (A14)", "results": results}))
    table, networks = import_measurements(bundle, measurements)
    assert table.meta.device == "iPhone 12 (A14)" and table.meta.backend == "coreml" and len(table) == len(results)
    record = manifest["parts"][0]
    part = next(p for p in table.entries if f"{p.kind}-s{p.stage}-{p.c_in}-{p.c_out}" == record["id"])
    assert table.entries[part].median == pytest.approx(_fake_device_latency(record))
    assert table.entries[part].p10 == pytest.approx(0.9 * _fake_device_latency(record))
    assert table.entries[part].mean == table.entries[part].median and table.entries[part].count == 200
    assert networks == []
    # the networks measured 10% slower than the part sum (what a phone might show): validation must find it
    for n in manifest["networks"]:
        results[n["id"]] = {"median_ms": 1.1 * table.predict(Arch.from_dict(n["arch"]))}
    measurements.write_text(json.dumps({"device": "iPhone 12 (A14)", "results": results}))
    table, networks = import_measurements(bundle, measurements)
    assert len(networks) == 7
    report = validate_measured(table, networks, calibrate_fraction=0.0)
    assert report.summary["plain_all"]["mean_error_pct"] == pytest.approx(100 * (1 / 1.1 - 1), abs=1e-6)
    assert report.summary["plain_all"]["kendall_tau"] == pytest.approx(1.0)
    saved = table.save(tmp_path / "iphone.parquet")
    assert saved.is_file()


def test_csv_measurements_and_bad_files(bundle, tmp_path):
    manifest = read_manifest(bundle)
    csv_path = tmp_path / "m.csv"
    lines = ["id,median_ms"] + [f"{r['id']},{_fake_device_latency(r)}" for r in manifest["parts"]]
    csv_path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match="--device"):
        import_measurements(bundle, csv_path)
    table, _ = import_measurements(bundle, csv_path, device="Pixel")
    assert table.meta.device == "Pixel"
    csv_path.write_text("\n".join(lines[:-3]) + "\n")
    with pytest.raises(InputError, match="no timing for 3 part"):
        import_measurements(bundle, csv_path, device="Pixel")
    csv_path.write_text("\n".join(lines + ["bogus-id,1.0"]) + "\n")
    with pytest.raises(InputError, match="'bogus-id' is not in the bundle"):
        import_measurements(bundle, csv_path, device="Pixel")
    bad = tmp_path / "m.json"
    bad.write_text(json.dumps({"results": {manifest["parts"][0]["id"]: {"p10_ms": 1}}}))
    with pytest.raises(InputError, match="numeric 'median_ms'"):
        import_measurements(bundle, bad, device="x")
    bad.write_text("{not json")
    with pytest.raises(InputError, match="neither valid JSON"):
        import_measurements(bundle, bad, device="x")
    with pytest.raises(InputError, match="no manifest.json"):
        import_measurements(tmp_path, bad, device="x")
    with pytest.raises(InputError, match="no such file"):
        import_measurements(bundle, tmp_path / "none.json", device="x")
