"""MLflow tracking of a training run, in a real sqlite tracking store."""

import pytest

from slimnas.platform.tracking.store import MLflowCallback, flatten
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
