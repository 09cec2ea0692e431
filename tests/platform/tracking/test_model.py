"""Winners as MLflow models (slimnas.platform.tracking.model): logged on their child runs in a real SQLite store,
loaded back with ``mlflow.pyfunc``, registered under the configured names; bad name templates refused up front."""

import shutil
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

import slimnas
from slimnas.platform.cli import main
from slimnas.platform.stages.search import MethodResult, SearchJobResult
from slimnas.platform.stages.search_config import TrackingSection
from slimnas.platform.tracking.model import (
    MODEL_URI_TAG,
    ONNX_MODEL_URI_TAG,
    chosen_for_models,
    log_winner_models,
)
from slimnas.platform.tracking.store import ensure_experiment
from slimnas.search_spaces.efficientformer import SearchSpace, SuperNet
from slimnas.winners import ModelCard, save_winner, winner_folder, winner_name


def _images(card, n=3):
    return np.random.default_rng(7).standard_normal((n, card.in_chans, card.img_size, card.img_size)).astype(
        np.float32)


def test_a_quickstart_winner_loads_with_pyfunc_and_predicts_the_same_logits(finished_run, tmp_path, monkeypatch):
    """The user's path: after ``slimnas quickstart``, the winner's MLflow model (``runs:/<child>/model`` or the URI in
    the child run's tag) predicts exactly the logits of ``slimnas.load_winner``'s network, and carries the metrics."""
    shutil.copy(finished_run.cwd / "mlflow.db", tmp_path / "mlflow.db")  # read a copy, never the shared run
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("slimnas-quickstart")
    (child,) = client.search_runs([experiment.experiment_id], filter_string="tags.`slimnas.method` = 'slimming'")
    job = SearchJobResult.load(finished_run.cwd / "runs" / "quickstart" / "search" / "results.json")
    (result,) = job.results
    network, card = slimnas.load_winner(winner_folder(finished_run.cwd / job.job_dir, result.method, result.target_ms))
    images = _images(card)
    with torch.no_grad():
        expected = network(torch.from_numpy(images)).numpy()
    model_uri = child.data.tags[MODEL_URI_TAG]
    for loaded in (mlflow.pyfunc.load_model(model_uri), mlflow.pyfunc.load_model(f"runs:/{child.info.run_id}/model")):
        logits = loaded.predict(images)
        assert logits.shape == (3, 10) and np.array_equal(logits, expected)
    info = mlflow.models.get_model_info(model_uri)
    assert info.flavors["pytorch"]["extra_files"] == [{"path": "extra_files/model.json"}]
    assert "python_function" in info.flavors
    assert [tuple(s.shape) for s in info.signature.inputs.inputs] == [(-1, 3, card.img_size, card.img_size)]
    assert ModelCard.from_dict(info.metadata["slimnas_model_card"]) == card
    logged = client.get_logged_model(model_uri.split("/")[-1])
    assert logged.experiment_id == experiment.experiment_id and logged.source_run_id == child.info.run_id
    files = Path(logged.artifact_location.removeprefix("file://")) / "data"
    assert [p.name for p in files.iterdir()] == ["model.pt2"]  # a torch.export program: no pickle
    assert {m.key: m.value for m in logged.metrics}["top1"] == result.top1  # the run's metrics, on the model
    assert child.data.metrics["top1"] == result.top1 and "predicted_ms" in child.data.metrics


def _winner(supernet, folder, arch, method, target, top1):
    card = ModelCard(arch=arch, space="tiny", num_classes=10, in_chans=3, method=method, target_ms=target, top1=top1,
                     eval_images=256, calib_images=64, predicted_ms=target - 0.1, measured_ms=None,
                     meets_target=None, supernet_checkpoint="/runs/sup.pt", supernet_sha256="ab" * 32,
                     latency_table="/runs/t.parquet", latency_backend="torch-cpu", latency_device="cpu",
                     latency_table_created="2026-11-29", slimnas_version=slimnas.__version__)
    save_winner(winner_folder(folder, method, target), supernet.extract(arch).eval().state_dict(), card)
    return MethodResult(method, target, arch.to_dict(), target - 0.1, top1, 5, 1.0, images=256)


def test_winners_are_logged_once_per_network_and_the_best_registered_per_target(tmp_path, monkeypatch):
    torch.manual_seed(0)
    supernet = SuperNet(SearchSpace.preset("tiny"), num_classes=10).eval()
    a, b = supernet.space.sample(1), supernet.space.sample(2)
    job_dir = tmp_path / "job"
    results = [_winner(supernet, job_dir, a, "slimming", 1.5, 0.9), _winner(supernet, job_dir, b, "random", 1.5, 0.8),
               _winner(supernet, job_dir, b, "slimming", 1.2, 0.8)]  # one network answers two targets
    assert [winner_name(r.method, r.target_ms) for r in chosen_for_models(results, "best")] == [
        "slimming@1.5ms", "slimming@1.2ms"] and chosen_for_models(results, "none") == []

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = ensure_experiment(uri, "models")
    runs = {}
    for r in results:
        runs[winner_name(r.method, r.target_ms)] = rid = client.create_run(experiment).info.run_id
        client.log_metric(rid, "top1", r.top1)
    tracking = TrackingSection(tracking_uri=uri, experiment="models", registered_model="{job}-{target}ms")
    logged = log_winner_models(uri, results, runs, job_dir, tracking, "demo")

    assert [w.label for w in logged] == ["slimming@1.5ms", "random@1.5ms", "slimming@1.2ms"]
    assert logged[1].model_id == logged[2].model_id != logged[0].model_id  # one export per network
    assert [w.registered for w in logged] == [("demo-1.5ms", 1), None, ("demo-1.2ms", 1)]  # the best per target
    for w in logged:
        assert client.get_run(w.run_id).data.tags[MODEL_URI_TAG] == w.model_uri
    listed = client.search_logged_models(experiment_ids=[experiment])  # the experiment's Models tab
    assert sorted(m.model_id for m in listed) == sorted({w.model_id for w in logged})
    version = client.get_model_version("demo-1.2ms", "1")
    assert version.tags["slimnas.method"] == "slimming" and version.tags["slimnas.target_ms"] == "1.2"
    assert version.tags["slimnas.run_id"] == runs["slimming@1.2ms"]  # the answer's child run
    assert version.run_id == runs["random@1.5ms"]  # the run that exported the network

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # as a user loads a registered model
    registered = mlflow.pyfunc.load_model("models:/demo-1.2ms/1")
    network, card = slimnas.load_winner(winner_folder(job_dir, "random", 1.5))
    images = _images(card, 5)
    with torch.no_grad():
        assert np.array_equal(registered.predict(images), network(torch.from_numpy(images)).numpy())


def test_with_onnx_models_each_network_is_also_an_onnx_model_that_predicts_its_logits(tmp_path, monkeypatch):
    torch.manual_seed(0)
    supernet = SuperNet(SearchSpace.preset("tiny"), num_classes=10).eval()
    a = supernet.space.sample(3)
    job_dir = tmp_path / "job"
    results = [_winner(supernet, job_dir, a, "slimming", 1.5, 0.9), _winner(supernet, job_dir, a, "tpe", 1.5, 0.9)]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = ensure_experiment(uri, "onnx")
    runs = {winner_name(r.method, r.target_ms): client.create_run(experiment).info.run_id for r in results}
    tracking = TrackingSection(tracking_uri=uri, experiment="onnx", onnx_models=True)
    logged = log_winner_models(uri, results, runs, job_dir, tracking, "demo")

    assert logged[0].onnx_model_uri is not None and logged[0].onnx_model_uri == logged[1].onnx_model_uri
    assert logged[0].onnx_model_uri != logged[0].model_uri  # one network: one pytorch and one onnx model
    for w in logged:
        assert client.get_run(w.run_id).data.tags[ONNX_MODEL_URI_TAG] == w.onnx_model_uri
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    info = mlflow.models.get_model_info(logged[0].onnx_model_uri)
    assert "onnx" in info.flavors and "python_function" in info.flavors
    network, card = slimnas.load_winner(winner_folder(job_dir, "slimming", 1.5))
    assert ModelCard.from_dict(info.metadata["slimnas_model_card"]) == card
    images = _images(card, 8)
    with torch.no_grad():
        expected = network(torch.from_numpy(images)).numpy()
    got = mlflow.pyfunc.load_model(logged[1].onnx_model_uri).predict(images)  # ONNX Runtime behind pyfunc
    got = got if isinstance(got, np.ndarray) else next(iter(got.values()))
    assert got.shape == (8, 10) and np.abs(got - expected).max() <= 1e-4 * max(1.0, np.abs(expected).max())
    assert TrackingSection().onnx_models is False  # off by default: the quickstart logs pytorch models only


@pytest.mark.parametrize("template, needle", [
    ("{jobname}-{target}ms", "tracking.registered_model: Value error, unknown field {jobname}"),
    ("models/{target}", "registered model's name is 1 to 200 characters, without '/'"),
    ("{target:d}", "not a name template"),
])
def test_a_bad_registered_model_template_is_one_line_before_any_work(tmp_path, capsys, monkeypatch, template,
                                                                    needle):
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "search.yaml"
    config.write_text(f"supernet: {tmp_path / 'none.pt'}\nlatency: {{table: {tmp_path / 't.parquet'}}}\n"
                      f"targets: [1.0]\ntracking: {{registered_model: '{template}'}}\n")
    capsys.readouterr()
    assert main(["search", "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
    assert main(["quickstart", "--check", "--set", f"tracking.registered_model='{template}'"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
    assert not (tmp_path / "mlflow.db").exists()
