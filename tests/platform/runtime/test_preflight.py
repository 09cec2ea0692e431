"""Checks before work, and MLflow for teams: a real ``mlflow server`` on 127.0.0.1 receives a training run."""

import socket

import pytest
import yaml
from mlflow.tracking import MlflowClient

from slimnas.errors import InputError
from slimnas.platform.cli import main
from slimnas.platform.runtime.preflight import (
    check_output_dir,
    check_output_file,
    check_port,
    check_ray_address,
    check_tcp,
    check_tracking_uri,
    split_url,
)
from slimnas.platform.tracking.pipeline import artifact_location, ensure_experiment
from slimnas.testing import tiny_train_config

from ..conftest import free_port


def test_unreachable_addresses_are_named():
    port = free_port()
    with pytest.raises(InputError, match=f"^ray.address: cannot reach 127.0.0.1:{port} "):
        check_ray_address(f"127.0.0.1:{port}")
    with pytest.raises(InputError, match=f"^train.distributed.address: cannot reach 127.0.0.1:{port}"):
        check_ray_address(f"ray://127.0.0.1:{port}", "train.distributed.address")
    check_ray_address("auto")
    check_ray_address(None)
    with socket.socket() as server:  # a port whose listen queue is full: connections hang, as to a blackholed host
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        filler = socket.create_connection(server.getsockname(), timeout=1)
        with pytest.raises(InputError, match="timed out"):
            check_tcp(*server.getsockname(), "ray.address", timeout=0.5)
        filler.close()
    with pytest.raises(InputError, match="cannot reach the MLflow server"):
        check_tracking_uri(f"http://127.0.0.1:{port}")
    with pytest.raises(InputError, match="plain file store"):
        check_tracking_uri("./mlruns")


def test_output_paths_are_checked_without_creating_anything(tmp_path):
    check_output_dir(tmp_path / "a" / "b", "output")
    check_output_file(tmp_path / "a" / "t.parquet", "--out")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "f").write_text("x")
    with pytest.raises(InputError, match=f"^output: {tmp_path}/f/x: {tmp_path}/f is a file, not a folder$"):
        check_output_dir(tmp_path / "f" / "x", "output")
    with pytest.raises(InputError, match=f"^output: {tmp_path}/f: it is a file, not a folder$"):
        check_output_dir(tmp_path / "f", "output")
    with pytest.raises(InputError, match="^--out: .*a name in the path is longer than the file system allows$"):
        check_output_file(tmp_path / ("n" * 300) / "t.parquet", "--out")
    with pytest.raises(InputError, match=f"^--out: {tmp_path} is a folder, not a file$"):
        check_output_file(tmp_path, "--out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


@pytest.mark.parametrize("address", ["http://[::1", "head:99999", "head:0", "he\x07ad:1", " ", "ray://"])
def test_malformed_addresses_name_the_field(address):
    with pytest.raises(InputError, match="^ray.address: "):
        check_ray_address(address)
    assert split_url("ray://head:10001", "ray.address").port == 10001


def test_a_port_in_use_or_out_of_range_is_named():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        with pytest.raises(InputError, match=f"^--port: 127.0.0.1:{port} is in use$"):
            check_port("127.0.0.1", port)
    with pytest.raises(InputError, match="^--port: expected a port from 1 to 65535, got 70000$"):
        check_port("127.0.0.1", 70000)


def test_a_training_run_logs_to_an_mlflow_server_named_by_the_environment(mlflow_server, tmp_path, monkeypatch,
                                                                         capsys):
    check_tracking_uri(mlflow_server.uri)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)
    monkeypatch.chdir(tmp_path)
    cfg = tiny_train_config(tmp_path / "runs", "to-server", tracking={"enabled": True, "experiment": "team"})
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train-supernet", "--config", str(tmp_path / "train.yaml")]) == 0
    assert not (tmp_path / "mlflow.db").exists()  # nothing went to the local default store

    client = MlflowClient(mlflow_server.uri)
    (run,) = client.search_runs([client.get_experiment_by_name("team").experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "to-server"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_top1")] == [1]
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"checkpoint", "config.yaml", "space.json"}
    assert list(mlflow_server.artifacts.rglob("checkpoint.pt"))  # stored by the server, in its own folder

    assert artifact_location(mlflow_server.uri) is None  # a server keeps its own artifacts
    experiment_id = ensure_experiment(mlflow_server.uri, "pipelines")
    assert ensure_experiment(mlflow_server.uri, "pipelines") == experiment_id
    assert client.get_experiment(experiment_id).artifact_location.startswith("mlflow-artifacts:")
    assert main(["ui"]) == 0  # the server has its own UI
    assert f"open {mlflow_server.uri}" in capsys.readouterr().out
