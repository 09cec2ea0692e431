"""MLflow records of a pipeline job, next to the training run and the search job's runs it produced.

:func:`ensure_experiment` creates the job's experiment before any stage logs to it; for a local ``sqlite:///`` store
its artifacts go to ``mlruns/`` next to the database (not into whatever folder a process happens to run in).
:func:`log_pipeline_run` adds one run (tag ``slimnas.kind = pipeline``) per pipeline job: the stage wall times, the
table validation's errors and each retrained winner's top-1 (``retrained_top1/<method>/<target>ms``, beside
``supernet_top1/...``) as metrics, links to the training run and the search job's parent run as tags, and the
validation plot/CSV, the calibration (when fitted), ``pipeline.json``, the config and, under ``report/``, the job's
``report.md`` with its figures (:mod:`slimnas.platform.stages.report`) as artifacts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from slimnas.platform.pipeline.record import RetrainRecord, SearchRecord, StageRecord, TableRecord
from slimnas.platform.stages.pareto import PARETO_FILE
from slimnas.platform.stages.report import REPORT_FILE, VALIDATION_FILE

__all__ = ["ensure_experiment", "log_pipeline_run", "artifact_location"]


def artifact_location(uri: str) -> str | None:
    """``<db folder>/mlruns`` for a ``sqlite:///`` store; ``None`` (the server's default) otherwise."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///"):]).expanduser().resolve().parent / "mlruns").as_uri()
    return None


def ensure_experiment(uri: str, name: str) -> str:
    """The id of experiment ``name`` at ``uri``, created if needed (a model-training experiment; artifacts at
    :func:`artifact_location`): :func:`slimnas.platform.tracking.store.ensure_experiment`."""
    from slimnas.platform.tracking.store import ensure_experiment as ensure

    return ensure(uri, name, artifact_location(uri))


def _training_run(client: Any, experiment_id: str, run_dir: str) -> str | None:
    found = client.search_runs([experiment_id], filter_string=f"tags.`slimnas.run_key` = '{run_dir}'",
                               order_by=["attributes.start_time DESC"], max_results=1)
    return found[0].info.run_id if found else None


def log_pipeline_run(cfg: Any, stages: dict[str, StageRecord], state_path: Path, validation_dir: Path) -> str:
    """Log the pipeline job (see the module docstring) from the current record of each stage; returns the run id."""
    from mlflow.tracking import MlflowClient

    from slimnas.platform.tracking.store import log_batch

    uri = cfg.tracking_uri()
    client = MlflowClient(uri)
    experiment_id = ensure_experiment(uri, cfg.tracking.experiment)
    tags = {"slimnas.kind": "pipeline"}
    search, table = stages.get("search"), stages.get("table")
    if isinstance(search, SearchRecord) and search.mlflow_run_id:
        tags["slimnas.search_run"] = search.mlflow_run_id
    train_run = _training_run(client, experiment_id, str(cfg.train.run.run_dir))
    if train_run:
        tags["slimnas.train_run"] = train_run
    run = client.create_run(experiment_id, run_name=f"pipeline {cfg.name}", tags=tags)
    rid = run.info.run_id
    targets = search.targets if isinstance(search, SearchRecord) else ()
    params = {"name": cfg.name, "space": str(cfg.train.space if isinstance(cfg.train.space, str) else "custom"),
              "backend": cfg.latency.backend, "batch": str(cfg.latency.batch), "methods": ",".join(cfg.search.methods),
              "targets_ms": ",".join(f"{t:g}" for t in targets), "output": str(cfg.output_dir)}
    metrics = {f"{stage}_wall_s": float(record.wall_s) for stage, record in stages.items()}
    retrain = stages.get("retrain")
    if isinstance(retrain, RetrainRecord) and cfg.retrain.enabled:
        for model in retrain.models:  # e.g. retrained_top1/slimming/1.64ms next to supernet_top1/slimming/1.64ms
            at = f"{model.method}/{model.target_ms:g}ms"
            metrics[f"retrained_top1/{at}"] = float(model.retrained_top1)
            metrics[f"supernet_top1/{at}"] = float(model.top1)
    summary = (table.validation if isinstance(table, TableRecord) else None) or {}
    for key in ("mape_pct", "max_abs_error_pct", "within_10pct", "kendall_tau"):
        value = summary.get("plain_all", {}).get(key)
        if value is not None and value == value:
            metrics[f"lut_{key}"] = float(value)
    log_batch(client, rid, params=params, metrics=metrics,
              tags={f"slimnas.{stage}": record.status for stage, record in stages.items()})
    for name in ("validation.png", "validation.csv", "calibration.json"):
        if (validation_dir / name).is_file():
            client.log_artifact(rid, str(validation_dir / name), "latency")
    for name in (REPORT_FILE, PARETO_FILE, VALIDATION_FILE):  # the report and the figures beside it
        if (state_path.parent / name).is_file():
            client.log_artifact(rid, str(state_path.parent / name), "report")
    client.log_artifact(rid, str(state_path))
    client.log_text(rid, yaml.safe_dump(cfg.model_dump(mode="json", by_alias=True), sort_keys=False), "config.yaml")
    client.set_terminated(rid)
    return rid
