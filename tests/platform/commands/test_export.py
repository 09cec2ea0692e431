"""``slimnas export`` as users run it (``main(argv)`` in-process): a saved winner from a job folder, a pipeline's
output folder, an MLflow run and plain files; bad arguments are one line on stderr, exit 2, before any work, and
leave the disk as it was."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import slimnas
from slimnas.platform.cli import main
from slimnas.winners import winner_folder


@pytest.fixture
def work(tmp_path, monkeypatch) -> Path:
    """A fresh working directory (where a default MLflow store would go)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


def _tree(*roots: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size if p.is_file() else -1, p.stat().st_mtime_ns)
            for root in roots for p in [root, *root.rglob("*")] if p.exists()}


def refused(argv: list[str], needle: str, capsys, *roots: Path) -> str:
    """``slimnas <argv>``: exit 2, one line on stderr holding ``needle``, nothing written under ``roots``."""
    before = _tree(*roots)
    capsys.readouterr()
    try:
        status = main(argv)
    except SystemExit as exc:  # argparse's usage errors
        status = exc.code
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert status == 2 and len(lines) == 1, err[-2000:]
    assert needle in lines[0] and "Traceback" not in err, lines[0]
    assert _tree(*roots) == before, "a refused command changed files"
    return lines[0]


def _logits(model, x):
    with torch.no_grad():
        return model(x).numpy()


def test_a_jobs_winner_exports_to_onnx_that_matches_the_saved_network(tiny_winner, work, capsys):
    import onnxruntime as ort

    job, card = tiny_winner
    out = work / "models" / "slim.onnx"
    assert main(["export", "--job", str(job), "--method", "slimming", "--target", "1.5", "--format", "onnx",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out} (onnx, eager form, input float32 (dynamic, 3, 64, 64)" in printed
    assert "checked: ONNX Runtime" in printed
    model, _ = slimnas.load_winner(winner_folder(job, "slimming", 1.5))
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = torch.randn(8, 3, 64, 64)
    assert np.abs(session.run(None, {"input": x.numpy()})[0] - _logits(model, x)).max() <= 1e-4


def test_a_pipeline_output_folder_finds_its_search_job(tiny_winner, work, capsys):
    job, card = tiny_winner
    pipeline = work / "runs" / "quickstart"
    shutil.copytree(job, pipeline / "search")
    moved = "/elsewhere/runs/quickstart/search"  # recorded before the output folder moved here
    (pipeline / "pipeline.json").write_text(json.dumps({"stages": {"search": {"job_dir": moved}}}))
    assert main(["export", "--job", str(pipeline), "--method", "slimming", "--target", "1.50", "--format", "torch",
                 "--out", str(work / "torch")]) == 0
    loaded, loaded_card = slimnas.load_winner(work / "torch")
    assert loaded_card == card
    folder = winner_folder(pipeline / "search", "slimming", 1.5)  # the README's form: a winner's folder
    assert main(["export", "--winner", str(folder), "--format", "torch", "--out", str(work / "torch2")]) == 0
    assert slimnas.load_winner(work / "torch2")[1] == card


def test_arch_and_weights_files_export_with_the_class_count_read_from_the_weights(tiny_winner, work, capsys):
    job, card = tiny_winner
    folder = winner_folder(job, "slimming", 1.5)
    out = work / "plain"
    assert main(["export", "--arch", str(folder / "arch.json"), "--weights", str(folder / "weights.pt"),
                 "--format", "torch", "--out", str(out)]) == 0
    meta = json.loads((out / "slimnas-export.json").read_text())
    assert meta["num_classes"] == 10 and meta["model_card"] is None and not (out / "model.json").exists()
    refused(["export", "--arch", str(folder / "arch.json"), "--weights", str(folder / "weights.pt"),
             "--num-classes", "7", "--format", "torch", "--out", str(work / "seven")],
            "weights.pt: does not fit the network of --arch", capsys, work)


def test_an_mlflow_runs_winner_exports(tiny_winner, work, capsys):
    from mlflow.tracking import MlflowClient

    job, card = tiny_winner
    uri = f"sqlite:///{work / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("search")
    parent = client.create_run(experiment, run_name="job", tags={"slimnas.kind": "search-job"}).info.run_id
    child = client.create_run(experiment, run_name="slimming@1.5ms",
                              tags={"mlflow.parentRunId": parent, "slimnas.method": "slimming",
                                    "slimnas.target_ms": "1.5"}).info.run_id
    client.log_artifacts(child, str(winner_folder(job, "slimming", 1.5)))
    assert main(["export", "--run", parent, "--tracking-uri", uri, "--method", "slimming", "--target", "1.5",
                 "--format", "torch", "--out", str(work / "from-parent")]) == 0
    assert slimnas.load_winner(work / "from-parent")[1] == card
    assert main(["export", "--run", child, "--format", "torch", "--out", str(work / "from-child")]) == 0  # ./mlflow.db
    assert json.loads((work / "from-child" / "slimnas-export.json").read_text())["source"] == f"MLflow run {child}"
    refused(["export", "--run", parent, "--tracking-uri", uri, "--method", "tpe", "--target", "1.5", "--format",
             "torch", "--out", str(work / "x")], "no winner tpe@1.5ms in run", capsys, work)
    refused(["export", "--run", "0123abcd", "--tracking-uri", uri, "--format", "torch", "--out", str(work / "x")],
            "--run: no run '0123abcd'", capsys, work)


BAD = [
    (["--job", "{job}", "--method", "tpe", "--target", "1.5"], "--method: 'tpe' has no winner in {job} (its methods: "
                                                               "slimming)"),
    (["--job", "{job}", "--method", "slimming", "--target", "2"], "--target: slimming has no winner at 2 ms in {job} "
                                                                  "(its targets: 1.5 ms)"),
    (["--job", "{work}/nope", "--method", "slimming", "--target", "1.5"], "--job: {work}/nope: no such folder"),
    (["--job", "{work}", "--method", "slimming", "--target", "1.5"], "not a search job's folder"),
    (["--job", "{job}", "--method", "slimming"], "--job: give the winner with --method and --target"),
    (["--job", "{job}", "--method", "slimming", "--target", "1.5", "--format", "tflite"],
     "argument --format: invalid choice: 'tflite'"),
    (["--job", "{job}", "--method", "slimming", "--target", "-1"], "argument --target: must be above 0"),
    (["--arch", "{win}/arch.json", "--weights", "{work}/garbage.pt"],
     "--weights: {work}/garbage.pt: not a state_dict torch loads with weights_only=True"),
    (["--arch", "{win}/arch.json", "--weights", "{work}/missing.pt"], "--weights: {work}/missing.pt: no such file"),
    (["--arch", "{win}/arch.json"], "--arch: give the weights with --weights"),
    (["--winner", "{work}/nope"], "{work}/nope: no such winner folder"),
    (["--winner", "{win}", "--target", "1.5"], "--method/--target: go with --job or --run, not --winner"),
    (["--arch", "{win}/arch.json", "--weights", "{win}/weights.pt", "--format", "timm", "--out", "{work}/t"],
     "--format timm: the arch Arch(64px"),
    (["--job", "{job}", "--method", "slimming", "--target", "1.5", "--out", "{work}/net.pt2"],
     "--out: {work}/net.pt2: the onnx format writes a .onnx file"),
    (["--job", "{job}", "--method", "slimming", "--target", "1.5", "--out", "{work}/old.onnx"],
     "--out: {work}/old.onnx exists"),
    (["--run", "abc"], "--tracking-uri: no MLflow store at sqlite:///{work}/mlflow.db"),
]


@pytest.mark.parametrize(("argv", "needle"), BAD, ids=[n.split(":")[0] + f"-{i}" for i, (_, n) in enumerate(BAD)])
def test_bad_arguments_are_one_line_and_exit_2_before_any_work(argv, needle, tiny_winner, work, capsys):
    job, _ = tiny_winner
    (work / "garbage.pt").write_bytes(b"not a checkpoint")
    (work / "old.onnx").write_bytes(b"old")

    def expand(text: str) -> str:
        return (text.replace("{job}", str(job)).replace("{work}", str(work))
                .replace("{win}", str(winner_folder(job, "slimming", 1.5))))

    full = ["export", *[expand(a) for a in argv]]
    if "--format" not in full:
        full += ["--format", "onnx"]
    if "--out" not in full:
        full += ["--out", str(work / "out.onnx")]
    refused(full, expand(needle), capsys, work, job)
    assert not (work / "out.onnx").exists() and not os.listdir(work).count("mlflow.db")
