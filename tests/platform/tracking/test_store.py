"""MLflow tracking of a training run, in a real sqlite tracking store."""

import json
import shutil

import pytest

from slimnas.platform.tracking.store import (
    EXPERIMENT_KIND_TAG,
    MODEL_TRAINING_KIND,
    MLflowCallback,
    ensure_experiment,
    flatten,
)
from slimnas.testing import FailOnce, tiny_train_config
from slimnas.trainers import train_supernet


def test_flatten():
    assert flatten({"a": {"b": 1, "c": [1, 2]}, "d": None, "e": {}}) == {"a.b": "1", "a.c": "[1, 2]", "d": "None",
                                                                        "e": "{}"}


def test_a_run_is_tracked_and_a_resumed_run_continues_it(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracking = {"enabled": True, "tracking_uri": uri, "experiment": "test", "figure_every": 1,
                "artifact_location": str(tmp_path / "artifacts")}
    cfg = tiny_train_config(tmp_path / "runs", "tracked", run={"epochs": 2, "max_steps_per_epoch": 2},
                            tracking=tracking)
    with pytest.raises(RuntimeError, match="injected failure"):
        train_supernet(cfg, [MLflowCallback(tracking), FailOnce(1, str(tmp_path / "marker"))])
    result = train_supernet(cfg, [MLflowCallback(tracking)])
    assert result.resumed_from == 1

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("test")
    assert experiment.tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND  # the UI opens it on its runs
    (run,) = client.search_runs([experiment.experiment_id])  # the resumed process logged into the same run
    assert run.info.status == "FINISHED" and run.info.run_name == "tracked"
    assert run.data.params["optim.lr"] == "0.05" and run.data.params["gumbel.mode"] == "soft"
    assert run.data.params["space"] == "tiny" and run.data.params["world_size"] == "1"
    for name in ("train_loss", "val_top1", "alpha_entropy", "tau", "images_per_s", "lr"):
        history = client.get_metric_history(run.info.run_id, name)
        assert [m.step for m in history] == [1, 2], name
    top1 = [m.value for m in client.get_metric_history(run.info.run_id, "val_top1")]
    assert top1 == [h["val_top1"] for h in result.history]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"alpha", "checkpoint", "space.json", "config.yaml"} <= artifacts
    figures = {a.path for a in client.list_artifacts(run.info.run_id, "alpha")}
    assert figures == {"alpha/epoch_0001.png", "alpha/epoch_0002.png"}
    (ckpt,) = client.list_artifacts(run.info.run_id, "checkpoint")
    assert ckpt.path == "checkpoint/checkpoint.pt" and ckpt.file_size > 100_000
    png = (tmp_path / "artifacts").rglob("epoch_0002.png")
    assert next(png).read_bytes()[:4] == b"\x89PNG"

    # experiments are model-training experiments (in the same store: a fresh one costs seconds to create)
    assert ensure_experiment(uri, "test") == experiment.experiment_id
    created = ensure_experiment(uri, "new", (tmp_path / "art").as_uri())
    assert client.get_experiment(created).tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND
    assert client.get_experiment(created).artifact_location == (tmp_path / "art").as_uri()
    older = client.create_experiment("made-before")  # by an older slimnas: no kind yet
    assert ensure_experiment(uri, "made-before") == older
    assert client.get_experiment(older).tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND
    chosen = client.create_experiment("chosen", tags={EXPERIMENT_KIND_TAG: "genai_development"})
    assert ensure_experiment(uri, "chosen") == chosen  # a kind someone set is kept
    assert client.get_experiment(chosen).tags[EXPERIMENT_KIND_TAG] == "genai_development"


def test_a_pipeline_jobs_experiment_and_its_runs_at_a_target_are_one_filter(finished_run, tmp_path):
    from mlflow.tracking import MlflowClient

    shutil.copy(finished_run.cwd / "mlflow.db", tmp_path / "mlflow.db")  # read a copy, never the shared run
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("slimnas-quickstart")
    assert experiment.tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND
    children = client.search_runs([experiment.experiment_id], filter_string="tags.`slimnas.method` != ''")
    assert children
    for target in {c.data.tags["slimnas.target_ms"] for c in children}:
        at_target = client.search_runs([experiment.experiment_id], f"tags.`slimnas.target_ms` = '{target}'")
        expected = [f"{c.data.tags['slimnas.method']}@{target}ms" for c in children
                    if c.data.tags["slimnas.target_ms"] == target]
        assert sorted(r.info.run_name for r in at_target) == sorted(expected)


def test_each_target_has_a_ui_view_of_its_methods_best_first_and_the_summary_links_it(finished_run, tmp_path):
    """The addresses the pipeline prints open the UI's "Model training" runs table on a shared view per target
    (looked at in headless Chromium once: ``slimnas/platform/tracking/views.py``); its filter, in MLflow's search
    syntax, finds exactly the child runs at that target, and its columns are metrics and tags they carry."""
    from mlflow.tracking import MlflowClient

    from slimnas.platform.tracking.views import VIEW_TAG_PREFIX, comparison_urls, view_key

    shutil.copy(finished_run.cwd / "mlflow.db", tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    state = json.loads((finished_run.cwd / "runs" / "quickstart" / "pipeline.json").read_text())
    search = state["stages"]["search"]
    parent, targets = search["mlflow_run_id"], search["targets"]
    experiment = client.get_run(parent).info.experiment_id
    urls = comparison_urls(uri, parent, targets)
    assert [t for t, _ in urls] == targets
    for i, (target, url) in enumerate(urls):
        key = view_key(parent, i)
        assert url == (f"http://127.0.0.1:5000/#/experiments/{experiment}/runs?workflowType=machine_learning"
                       f"&viewStateShareKey={key}")
        view = json.loads(client.get_experiment(experiment).tags[VIEW_TAG_PREFIX + key])
        found = client.search_runs([experiment], view["searchFilter"], order_by=["metrics.top1 DESC"])
        children = client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{parent}'")
        assert sorted(r.info.run_id for r in found) == sorted(
            r.info.run_id for r in children if float(r.data.tags["slimnas.target_ms"]) == target) != []
        assert view["orderByKey"] == "metrics.`top1`" and view["orderByAsc"] is False
        for column in view["selectedColumns"]:
            kind, name = column.split(".", 1)
            name = name.strip("`")  # measured latencies are logged only when measured (not in this small run)
            assert name in getattr(found[0].data, kind) or name in ("measured_ms", "meets_target"), column
    assert comparison_urls(uri, "0" * 32, targets) == []  # no such run: nothing to link


def test_the_pipelines_summary_prints_the_view_addresses(finished_run, run_copy, capsys):
    from slimnas.platform.cli import main

    assert main(finished_run.argv) == 0  # every stage reused: prints the summary again
    out = capsys.readouterr().out
    assert "then open for each target:" in out
    assert out.count("#/experiments/") == out.count("&viewStateShareKey=slimnas-") >= 1
