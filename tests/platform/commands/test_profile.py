"""``slimnas profile`` and ``slimnas lut explain`` through ``main(argv)``: the files a user gets, and bad input as one
line and exit 2 before any work."""

import csv
import json

import pytest
import torch

import slimnas
from slimnas.latency import LatencyTable, TableMeta, Timing, parts_of, parts_of_space
from slimnas.latency.backends import cpu_name
from slimnas.platform.cli import main
from slimnas.profile import CATEGORIES
from slimnas.search_spaces import Arch, Part, SearchSpace
from slimnas.winners import ModelCard, save_winner

from ..conftest import one_line_exit_2

QUICK = ["--runs", "2", "--passes", "1", "--samples", "2", "--pass-ms", "0", "--warmup-ms", "0", "--threads", "1"]


def _one_line_exit_2(argv, capsys, needle):
    assert "profiling" not in one_line_exit_2(argv, capsys, needle).out


def _winner(folder, arch):
    model = arch.space_family.build_model(arch, num_classes=10).eval()
    card = ModelCard(arch=arch, space="tiny", num_classes=10, in_chans=3, method="slimming", target_ms=1.5,
                     top1=0.5, eval_images=8, calib_images=8, predicted_ms=None, measured_ms=None, meets_target=None,
                     supernet_checkpoint="-", supernet_sha256="ab" * 32, latency_table="-",
                     latency_backend="torch-cpu", latency_device="cpu", latency_table_created="-",
                     slimnas_version=slimnas.__version__)
    return save_winner(folder, model.state_dict(), card)


def test_profile_writes_csv_json_and_the_figure(tmp_path, capsys):
    space = SearchSpace.preset("tiny")
    arch_file = tmp_path / "small.json"
    arch_file.write_text(space.sample(1).to_json())
    winner = _winner(tmp_path / "job" / "slimming@1.5ms", space.sample(2))
    out = tmp_path / "out"
    assert main(["profile", "mobilenetv2_050", str(arch_file), str(winner), "--img-size", "64", "--out", str(out),
                 *QUICK]) == 0
    text = capsys.readouterr().out
    assert "== mobilenetv2_050 (timm, eager)" in text and "== small (arch, fused)" in text
    assert "== slimming@1.5ms (winner, fused)" in text and "categories sum" in text
    assert sorted(p.name for p in out.iterdir()) == ["blocks.csv", "breakdown.png", "categories.csv", "profile.json"]
    with open(out / "categories.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["model", "category", "ms", "share"] and len(rows) == 3 * len(CATEGORIES)
    assert "profiler overhead removed" in text and all(float(r["ms"]) > 0 for r in rows if r["category"] == "framework")
    for model in ("mobilenetv2_050", "small", "slimming@1.5ms"):
        assert sum(float(r["share"]) for r in rows if r["model"] == model) == pytest.approx(1.0, abs=1e-5)
    with open(out / "blocks.csv") as handle:
        blocks = list(csv.DictReader(handle))
    assert list(blocks[0]) == ["model", "stage", "block", "module", "type", "ms", "share"]
    tiny = [(r["stage"], r["block"]) for r in blocks if r["model"] == "small" and r["block"].isdigit()]
    arch = Arch.from_json(arch_file.read_text())  # fused: one module per block part (and its reshapes)
    assert len(tiny) == sum(1 for p in parts_of(arch) if p.kind in ("mb4d", "mb3d", "to_tokens", "to_grid"))
    assert [r["block"] for r in blocks if r["model"] == "small"][0] == "stem"
    report = json.loads((out / "profile.json").read_text())
    assert report["backend"] == "torch-cpu" and [m["model"] for m in report["models"]] == [
        "mobilenetv2_050", "small", "slimming@1.5ms"]
    assert all(m["measured_ms"] > 0 and m["unknown_ops"] == [] for m in report["models"])
    assert all(m["cost"]["per_event_us"] > 0 and m["overhead_removed_ms"] > 0 for m in report["models"])
    assert report["command"].startswith("slimnas profile mobilenetv2_050")


def test_profile_on_onnxruntime_logged_to_mlflow(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the sqlite store's artifacts go to ./mlruns
    out = tmp_path / "ort"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    arch_file = tmp_path / "l1.json"  # a small arch of the tiny space (64 px), named like the metrics below
    arch_file.write_text(SearchSpace.preset("tiny").max_arch().to_json())
    assert main(["profile", str(arch_file), "--backend", "onnxruntime", "--out", str(out), *QUICK,
                 "--mlflow-experiment", "profiles", "--tracking-uri", uri]) == 0
    report = json.loads((out / "profile.json").read_text())
    (model,) = report["models"]
    assert model["backend"] == "onnxruntime" and model["form"] == "eager" and model["unknown_ops"] == []
    assert sum(r["share"] for r in model["categories"]) == pytest.approx(1.0)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("profiles").experiment_id])
    assert run.data.metrics["l1.measured_ms"] == pytest.approx(model["measured_ms"])
    assert run.data.metrics["l1.convolution_ms"] == pytest.approx(
        next(r["ms"] for r in model["categories"] if r["category"] == "convolution"))
    assert {a.path for a in client.list_artifacts(run.info.run_id, "profile")} == {
        "profile/categories.csv", "profile/blocks.csv", "profile/profile.json", "profile/breakdown.png"}


def test_bad_models_and_backends_are_one_line_and_exit_2(tmp_path, capsys):
    _one_line_exit_2(["profile", "resnet_does_not_exist"], capsys, "resnet_does_not_exist")
    _one_line_exit_2(["profile", "mobilenetv2_050", "deit_smal_patch16_224"], capsys, "did you mean")
    _one_line_exit_2(["profile", "mobilenetv2_050", "--backend", "coreml"], capsys, "--backend")
    _one_line_exit_2(["profile", "mobilenetv2_050", "--backend", "nope"], capsys, "--backend")
    _one_line_exit_2(["profile", str(tmp_path / "missing.json")], capsys, "missing.json")
    (tmp_path / "folder").mkdir()
    _one_line_exit_2(["profile", str(tmp_path / "folder")], capsys, "model.json")
    _one_line_exit_2(["profile", "mobilenetv2_050", "--runs", "0"], capsys, "--runs")
    (tmp_path / "file").write_text("")
    _one_line_exit_2(["profile", "mobilenetv2_050", "--out", str(tmp_path / "file")], capsys, "--out")
    if not torch.cuda.is_available():
        _one_line_exit_2(["profile", "mobilenetv2_050", "--backend", "torch-cuda"], capsys, "CUDA")


def _tiny_table(path, wrong: Part | None = None):
    """A real table of the ``tiny`` space (64 px) whose entries are plausible sizes, one of them far off."""
    space = SearchSpace.preset("tiny")
    entries = {}
    for part in parts_of_space(space):
        ms = 5.0 if part == wrong else 0.02 * (1 + part.c_out / 64)
        entries[part] = Timing(median=ms, mean=ms, p10=ms, p90=ms, std=0.0, count=1, p25=ms, min=ms)
    meta = TableMeta("torch-cpu", cpu_name(), 1, "float32", 64, 1, space.to_dict(), form="fused",
                     harness="context", options={"allocator": "tuned"})
    LatencyTable(entries, meta).save(path)
    return space


def test_lut_explain_names_the_part_whose_entry_misses(tmp_path, capsys):
    space = SearchSpace.preset("tiny")
    arch = space.max_arch()
    stem = parts_of(arch)[0]
    lut = tmp_path / "tiny.parquet"
    _tiny_table(lut, wrong=stem)
    arch_file = tmp_path / "arch.json"
    arch_file.write_text(arch.to_json())
    capsys.readouterr()
    assert main(["lut", "explain", "--lut", str(lut), "--arch", str(arch_file), "--json", "--passes", "2",
                 "--samples", "3", "--pass-ms", "0", "--warmup-ms", "1"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["largest_errors"][0] == str(stem)
    rows = {r["part"]: r for r in result["parts"]}
    assert set(rows) == {str(p) for p in parts_of(arch)}
    assert sum(r["count"] for r in rows.values()) == len(parts_of(arch))
    assert rows[str(stem)]["error_ms"] > 4.0 and 0 < rows[str(stem)]["measured_ms"] < 2.0
    assert result["predicted_ms"] == pytest.approx(LatencyTable.load(lut).predict(arch))
    assert result["measured_ms"] > 0
    _one_line_exit_2(["lut", "explain", "--lut", str(lut), "--preset", "l1"], capsys, "--preset: l1 does not fit")
    _one_line_exit_2(["lut", "explain", "--lut", str(tmp_path / "none.parquet"), "--arch", str(arch_file)], capsys,
                     "no such file")
