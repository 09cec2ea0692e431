"""Submitting a pipeline to a real Ray head (started by the test, token auth on) and reading the job's MLflow output."""

import json
import os
import subprocess
import sys

import pytest
import yaml
from mlflow.tracking import MlflowClient

from slimnas.errors import InputError
from slimnas.platform.cli import main
from slimnas.platform.commands.pipeline import apply_overrides, quickstart_source
from slimnas.platform.runtime.jobs import auth_token, connect, job_logs, job_status, wait

from ..conftest import free_port

#: A very small pipeline: 1 short epoch, a one-pass table measured in a Ray task, slimming and random at 1 target.
TINY = [
    "train.run.epochs=1", "train.run.max_steps_per_epoch=2", "train.data.batch_size=16", "train.data.calib_images=32",
    "latency.protocol.passes=1", "latency.protocol.samples=2", "latency.protocol.pass_ms=0",
    "latency.protocol.warmup_ms=2", "latency.max_networks=8", "latency.validate.num_archs=0",
    "latency.resources={CPU: 1}", "search.methods=[slimming, random]", "search.targets_relative=[0.85]",
    "search.eval_images=32", "search.measure_final=false", "ray.object_store_mb=64",
]


@pytest.fixture
def token_env(monkeypatch, ray_head, tmp_path):
    monkeypatch.setenv("RAY_AUTH_TOKEN", ray_head.token)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "no-token-file"))
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return ray_head


def test_a_submitted_pipeline_runs_on_the_head_and_logs_to_mlflow(token_env, tmp_path, capsys):
    head = token_env
    job_dir, out = tmp_path / "job", tmp_path / "out"
    job_dir.mkdir()
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    data = apply_overrides(quickstart_source(), TINY + [f"output={out}", f"tracking.tracking_uri={store}",
                                                        "tracking.experiment=submitted", "name=tiny-job"])
    (job_dir / "tiny.yaml").write_text(yaml.safe_dump(data))
    assert main(["submit", "--address", head.address, "--config", str(job_dir / "tiny.yaml"), "--ship-code",
                 "--job-id", "slimnas-test-1"]) == 0
    assert capsys.readouterr().out.strip() == "slimnas-test-1"
    client = connect(head.address)
    status = wait(client, "slimnas-test-1", timeout_s=300)
    logs = job_logs(client, "slimnas-test-1")
    assert status == "SUCCEEDED", logs[-3000:]
    assert "[tiny-job 2/4] table: measuring every part" in logs and "on a Ray node with {'CPU': 1.0}" in logs
    assert "Pareto plot:" in logs and "slimming" in logs
    info = job_status(client, "slimnas-test-1")
    assert info["entrypoint"] == "python -m slimnas.platform.cli run --config tiny.yaml"
    assert info["metadata"]["slimnas.pipeline"] == "tiny-job"

    state = json.loads((out / "pipeline.json").read_text())
    assert [state["stages"][s]["status"] for s in ("train", "table", "search")] == ["ran", "built", "ran"]
    mlflow = MlflowClient(store)
    experiment = mlflow.get_experiment_by_name("submitted")
    runs = mlflow.search_runs([experiment.experiment_id])
    by_kind = {}
    for run in runs:
        by_kind.setdefault(run.data.tags.get("slimnas.kind", "child"), []).append(run)
    assert sorted((k, len(v)) for k, v in by_kind.items()) == [("child", 2), ("pipeline", 1), ("search-job", 1),
                                                               ("supernet", 1)]
    parent = by_kind["search-job"][0]
    assert parent.info.run_id == state["stages"]["search"]["mlflow_run_id"]
    assert all(c.data.tags["mlflow.parentRunId"] == parent.info.run_id for c in by_kind["child"])
    assert {c.data.params["method"] for c in by_kind["child"]} == {"slimming", "random"}

    assert main(["jobs", "status", "slimnas-test-1", "--address", head.address]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "SUCCEEDED"
    assert main(["jobs", "logs", "slimnas-test-1", "--address", head.address]) == 0
    assert "Pareto plot:" in capsys.readouterr().out
    assert main(["jobs", "stop", "slimnas-test-1", "--address", head.address]) == 0
    assert "already ended" in capsys.readouterr().out


def _one_line_exit_2(argv, capsys, needle):
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], lines


def test_cluster_errors_are_one_line(token_env, monkeypatch, tmp_path, capsys):
    head = token_env
    _one_line_exit_2(["jobs", "status", "no-such-job", "--address", head.address], capsys,
                     "slimnas jobs status: error: job no-such-job: not found")
    closed = f"http://127.0.0.1:{free_port()}"
    _one_line_exit_2(["jobs", "logs", "x", "--address", closed], capsys, "--address: cannot reach 127.0.0.1:")
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(quickstart_source()))
    _one_line_exit_2(["submit", "--address", closed, "--config", str(config)], capsys, "cannot reach")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**quickstart_source(), "unknown": 1}))
    _one_line_exit_2(["submit", "--address", head.address, "--config", str(bad)], capsys, "unknown: unknown field")
    _one_line_exit_2(["jobs", "status", "x"], capsys, "--address: give the head's dashboard address")

    monkeypatch.setenv("RAY_AUTH_TOKEN", "0" * 64)  # a wrong token
    _one_line_exit_2(["jobs", "status", "x", "--address", head.address], capsys, "the token was refused")
    monkeypatch.delenv("RAY_AUTH_TOKEN")  # no token at all (RAY_AUTH_TOKEN_PATH points at no file)
    assert auth_token() is None
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}  # a fresh shell without a token
    env["HOME"] = str(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "slimnas.platform.cli", "jobs", "status", "x", "--address",
                           head.address], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"slimnas jobs status: error: --address: the Ray cluster at {head.address} requires token authentication and "
        f"no token was found; set RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH (default ~/.ray/auth_token)"]
    token_file = tmp_path / "token"
    token_file.write_text(head.token + "\n")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token_file))  # the token file works as well
    with pytest.raises(InputError, match="job x: not found"):
        job_status(connect(head.address), "x")
