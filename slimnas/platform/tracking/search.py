"""MLflow records of a search job: one parent run, one child run per (method, target).

Parent run (tag ``slimnas.kind = search-job``): the job's params (for relative targets also ``targets_relative``
and the reference they are fractions of: ``targets_reference_ms``, ``targets_reference_arch``, ``..._start``,
``..._predictor``; ``eval_images_measured``: the validation images behind each top-1), ``results.csv``,
the Pareto plot ``pareto.png`` (:mod:`slimnas.platform.stages.pareto`), the job's ``report.md``
(:mod:`slimnas.platform.stages.report`, when the job wrote one) and each slimming run's trajectory as an MLflow table.

Child runs (tags ``mlflow.parentRunId``, ``slimnas.method``, ``slimnas.target_ms``, ``slimnas.meets_target``:
``true``, ``false``, or why it is unknown: ``pending``, ``off``, ``no answer``): params ``method``, ``target_ms``,
``widths``, ``depths``, ``mb3d`` (per stage), ``mb3d_total``; metrics ``top1``, ``predicted_ms``, ``measured_ms`` and
``meets_target`` (1/0; both only when measured), ``evaluations`` (verification's extra ones included),
``extra_evaluations``, ``verify_steps``, ``wall_s``, ``trials_stopped``, ``batches_saved``; artifacts: the files of the
winner's folder (:mod:`slimnas.winners`: ``weights.pt``, the network as evaluated, BN statistics recalibrated;
``arch.json``; the model card ``model.json``), which :func:`slimnas.load_winner` loads from a downloaded copy too;
the winner as an MLflow model (``tracking.models``, registered per ``tracking.registered_model``:
:mod:`slimnas.platform.tracking.model`; tag ``slimnas.model_uri``), logged after the metrics so it carries them too.
Experiment tags: one shared view of the UI per target (:mod:`slimnas.platform.tracking.views`: the children at that
target, best top-1 first, the comparison's metrics as columns), whose addresses the pipeline prints.
Compare candidates in the MLflow UI (``slimnas ui``) or with
``mlflow.search_runs(filter_string="tags.mlflow.parentRunId = '<id>' and metrics.predicted_ms < 1.5")``.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from slimnas.platform.stages.pareto import PARETO_FILE, pareto_figure, save_pareto
from slimnas.platform.tracking.views import save_comparison_views
from slimnas.search_spaces import Arch
from slimnas.winners import winner_name

__all__ = ["log_search_job", "pareto_figure"]

#: The job's report (:mod:`slimnas.platform.stages.report`), logged on the parent run when the job wrote one.
REPORT_FILE = "report.md"


def _arch_params(arch: Arch) -> dict[str, str]:
    return {"widths": ",".join(map(str, arch.widths)), "depths": ",".join(map(str, arch.depths)),
            "mb3d": ",".join(map(str, arch.num_3d)), "mb3d_total": str(sum(arch.num_3d))}


def log_search_job(job: Any, cfg: Any, supernet: Any, table: Any,
                   echo: Callable[[str], None] | None = None) -> str:
    """Log ``job`` to MLflow; returns the parent run's id. ``echo`` is told what was logged as models and
    registered."""
    from mlflow.tracking import MlflowClient

    from slimnas.platform.tracking.model import log_winner_models
    from slimnas.platform.tracking.store import default_tracking_uri, ensure_experiment, log_batch

    uri = default_tracking_uri(cfg.tracking.tracking_uri)
    client = MlflowClient(uri)
    experiment_id = ensure_experiment(uri, cfg.tracking.experiment)
    parent = client.create_run(experiment_id, run_name=cfg.name, tags={"slimnas.kind": "search-job"})
    pid = parent.info.run_id
    params = {"name": cfg.name, "space": supernet.space.name, "latency_table": table.meta.describe()[:500],
              "methods": ",".join(cfg.methods), "targets_ms": ",".join(f"{t:g}" for t in cfg.targets),
              "budget": str(cfg.budget), "seed": str(cfg.seed), "early_stop": str(cfg.early_stop.enabled),
              "early_stop_rule": cfg.early_stop.rule, "supernet": cfg.supernet[:500],
              "measure_final": str(cfg.latency.measure_final), "tolerance_pct": f"{cfg.latency.tolerance_pct:g}",
              "max_extra_steps": str(cfg.latency.max_extra_steps)}
    ref = cfg.targets_reference
    if ref is not None:  # relative targets: the fractions and what they are fractions of
        params.update(targets_relative=",".join(f"{f:g}" for f in sorted(set(ref.fractions), reverse=True)),
                      targets_reference_ms=f"{ref.predicted_ms:.6g}", targets_reference_start=ref.start,
                      targets_reference_predictor=ref.predictor,
                      targets_reference_arch=str(Arch.from_dict(ref.arch))[:500])
    images = next((r.images for r in job.results if getattr(r, "images", None)), None)
    if images:
        params["eval_images_measured"] = str(images)
    log_batch(client, pid, params=params)
    job_dir = Path(job.job_dir)
    figure = job_dir / PARETO_FILE
    if not figure.is_file():  # the job draws it with its report; drawn here for a job that did not
        save_pareto(job, figure)
    client.log_artifact(pid, str(figure))
    if (job_dir / REPORT_FILE).is_file():
        client.log_artifact(pid, str(job_dir / REPORT_FILE))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "results.csv").write_text(job.to_csv())
        client.log_artifact(pid, str(folder / "results.csv"))
    for method, trajectory in job.trajectories.items():
        rows = [{"round": s.round, "action": "start" if s.action is None else str(s.action),
                 "latency_ms": s.latency_ms, "top1": s.accuracy, "evaluations": s.evaluations,
                 "arch": str(s.arch)} for s in trajectory]
        client.log_table(pid, {k: [r[k] for r in rows] for k in rows[0]}, f"{method}_trajectory.json")
    children = {winner_name(r.method, r.target_ms): _log_child(client, experiment_id, pid, r, job_dir)
                for r in job.results}
    save_comparison_views(client, experiment_id, pid, cfg.targets)
    started = time.perf_counter()
    logged = log_winner_models(uri, job.results, children, job_dir, cfg.tracking, cfg.name)
    if logged and echo is not None:
        registered = ", ".join(f"{w.registered[0]} v{w.registered[1]}" for w in logged if w.registered)
        echo(f"[search] MLflow: {len(logged)} winner(s) logged as models ({len({w.model_id for w in logged})} "
             f"exported) in {time.perf_counter() - started:.1f} s"
             + (f"; registered: {registered}" if registered else ""))
    for result in job.results:
        client.set_terminated(children[winner_name(result.method, result.target_ms)],
                              "FINISHED" if result.arch is not None else "FAILED")
    client.set_terminated(pid)
    return pid


def _log_child(client: Any, experiment_id: str, parent_id: str, result: Any, job_dir: Path) -> str:
    """The child run of ``result`` with its params, metrics and winner files (left running: its model comes next);
    returns its id."""
    from slimnas.platform.tracking.store import log_batch
    from slimnas.winners import winner_folder

    meets = {True: "true", False: "false"}.get(result.meets_target, result.verification or "unknown")
    run = client.create_run(experiment_id, run_name=winner_name(result.method, result.target_ms),
                            tags={"mlflow.parentRunId": parent_id, "slimnas.method": result.method,
                                  "slimnas.target_ms": f"{result.target_ms:g}", "slimnas.meets_target": meets})
    rid = run.info.run_id
    params = {"method": result.method, "target_ms": f"{result.target_ms:g}"}
    metrics = {"evaluations": result.evaluations, "extra_evaluations": result.extra_evaluations,
               "verify_steps": result.verify_steps, "wall_s": result.wall_s,
               "trials_stopped": result.early_stop.get("trials_stopped", 0),
               "batches_saved": result.early_stop.get("batches_saved", 0)}
    if result.arch is not None:
        params.update(_arch_params(Arch.from_dict(result.arch)))
        metrics.update(top1=result.top1, predicted_ms=result.predicted_ms)
        if result.measured_ms is not None:
            metrics["measured_ms"] = result.measured_ms
        if result.meets_target is not None:
            metrics["meets_target"] = int(result.meets_target)
        client.log_artifacts(rid, str(winner_folder(job_dir, result.method, result.target_ms)))
    log_batch(client, rid, params=params, metrics=metrics)
    return rid

