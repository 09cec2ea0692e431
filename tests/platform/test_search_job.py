"""A whole search job on the digits: a briefly trained tiny supernet, a tiny table, real Ray Tune, real MLflow."""

import json

import pytest
import ray
from mlflow.tracking import MlflowClient

from slimnas.config import load_config
from slimnas.errors import ConfigError, InputError
from slimnas.latency import LatencyTable, build_table
from slimnas.latency.backends import TorchCPUBackend
from slimnas.platform.search_config import SearchJobConfig
from slimnas.platform.search_job import run_search_job
from slimnas.search_spaces.efficientformer import Arch, SearchSpace
from slimnas.testing import tiny_train_config
from slimnas.trainers import train_supernet


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("search-job")
    result = train_supernet(tiny_train_config(root, name="sup", run={"max_steps_per_epoch": 4}))
    backend = TorchCPUBackend(threads=1, repeats=3, warmup_ms=5.0, min_sample_ms=0.5)
    table = build_table(SearchSpace.preset("tiny"), backend, root / "tiny.parquet")
    full = table.predict(SearchSpace.preset("tiny").max_arch())
    return root, result.checkpoint, table, full


def _config(root, checkpoint, table_path, targets, **extra):
    data = {
        "name": "job", "supernet": str(checkpoint), "output": str(root / "out"),
        "data": {"kind": "digits", "batch_size": 32, "calib_images": 64},
        "eval_images": 96,
        "latency": {"table": str(table_path), "measure_repeats": 3},
        "methods": ["slimming", "random", "tpe", "nsga2"],
        "targets": targets,
        "ray": {"num_cpus": 2, "object_store_mb": 128},
        "tracking": {"tracking_uri": f"sqlite:///{root / 'mlflow.db'}", "experiment": "test-search"},
    }
    data.update(extra)
    return load_config(SearchJobConfig, data)


def test_a_job_compares_methods_at_each_target_and_logs_mlflow(inputs):
    root, checkpoint, table, full = inputs
    targets = [round(0.9 * full, 3), round(0.8 * full, 3)]
    cfg = _config(root, checkpoint, root / "tiny.parquet", targets)
    try:
        job = run_search_job(cfg)
    finally:
        ray.shutdown()
    methods = {(r.method, r.target_ms) for r in job.results}
    assert methods == {(m, t) for m in ("slimming", "random", "tpe", "nsga2") for t in cfg.targets}
    slim = {r.target_ms: r for r in job.results if r.method == "slimming"}
    assert job.histories["nsga2"] and all(e["latency_ms"] <= max(cfg.targets) for e in job.histories["nsga2"])
    for r in job.results:
        if r.method == "nsga2" and r.arch is None:
            continue  # one front for both targets; a budget of a few evaluations may hold nothing under the tighter
        assert r.arch is not None and r.predicted_ms <= r.target_ms and 0 <= r.top1 <= 1
        assert r.predicted_ms == pytest.approx(table.predict(Arch.from_dict(r.arch)))
        assert r.measured_ms is not None and r.measured_ms > 0
        if r.method in ("random", "tpe"):  # equal budgets: what slimming had used at that target
            assert r.evaluations <= slim[r.target_ms].evaluations
    first = Arch.from_dict(job.trajectories["slimming"][0]["arch"])  # the start: every slot active, max widths
    space = SearchSpace.preset("tiny")
    assert first.widths == space.max_widths and first.depths == space.slots
    assert job.trajectories["slimming"][0]["latency_ms"] == pytest.approx(table.predict(first))
    saved = json.loads((root / "out" / "job" / "results.json").read_text())
    assert len(saved["results"]) == 8 and (root / "out" / "job" / "pareto.png").is_file()

    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("test-search")
    parent = client.get_run(job.mlflow_run_id)
    assert parent.data.params["methods"] == "slimming,random,tpe,nsga2"
    children = client.search_runs([experiment.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{job.mlflow_run_id}'")
    assert len(children) == 8
    child = next(c for c in children if c.data.tags["slimnas.method"] == "slimming")
    assert {"top1", "predicted_ms", "measured_ms", "evaluations", "wall_s"} <= set(child.data.metrics)
    assert {"widths", "depths", "mb3d", "method", "target_ms"} <= set(child.data.params)
    assert {a.path for a in client.list_artifacts(child.info.run_id)} == {"arch.json", "weights.pt"}
    parent_files = {a.path for a in client.list_artifacts(job.mlflow_run_id)}
    assert {"results.csv", "pareto.png", "slimming_trajectory.json"} <= parent_files
    fast = client.search_runs([experiment.experiment_id], filter_string=(
        f"tags.mlflow.parentRunId = '{job.mlflow_run_id}' and metrics.predicted_ms < {cfg.targets[-1]}"))
    assert fast and all(r.data.metrics["predicted_ms"] < cfg.targets[-1] for r in fast)


def test_bad_configs_and_inputs_are_named(inputs, tmp_path):
    root, checkpoint, table, full = inputs
    with pytest.raises(ConfigError, match="^targets"):
        _config(root, checkpoint, root / "tiny.parquet", [-1.0])
    with pytest.raises(ConfigError, match="^methods"):
        _config(root, checkpoint, root / "tiny.parquet", [1.0], methods=["greedy"])
    with pytest.raises(ConfigError, match="^latency: Field required"):
        load_config(SearchJobConfig, {"supernet": "x", "targets": [1.0]})
    with pytest.raises(InputError, match="no such file"):
        run_search_job(_config(root, checkpoint, tmp_path / "none.parquet", [1.0]))
    with pytest.raises(InputError, match="supernet: no such file or folder"):
        run_search_job(_config(root, tmp_path / "none.pt", root / "tiny.parquet", [1.0]))
    other = LatencyTable(table.entries, table.meta).with_meta(space={**table.meta.space, "slots": [2, 2, 4, 2]})
    other.save(tmp_path / "other.parquet")
    with pytest.raises(InputError, match="latency.table: measured for space"):
        run_search_job(_config(root, checkpoint, tmp_path / "other.parquet", [1.0]))
    with pytest.raises(InputError, match="budget: 'auto'"):
        try:
            run_search_job(_config(root, checkpoint, root / "tiny.parquet", [0.9 * full], methods=["random"]))
        finally:
            ray.shutdown()
