"""MLflow records of a search job: one parent run, one child run per (method, target).

Parent run (tag ``slimnas.kind = search-job``): the job's params, ``results.csv``/``results.json``, the Pareto plot
``pareto.png`` (top-1 against predicted latency, one colour per method: every evaluated subnet faint, each method's
answers per target bold, the targets as dashed lines) and each slimming run's trajectory as an MLflow table.

Child runs (tags ``mlflow.parentRunId``, ``slimnas.method``, ``slimnas.target_ms``): params ``method``,
``target_ms``, ``widths``, ``depths``, ``mb3d`` (per stage), ``mb3d_total``; metrics ``top1``, ``predicted_ms``,
``measured_ms``, ``evaluations``, ``wall_s``, ``trials_stopped``, ``batches_saved``; artifacts ``arch.json`` and
``weights.pt`` (the subnet's state_dict with the supernet's weights; load it into ``build_model(arch)`` with
``torch.load(..., weights_only=True)``). Compare candidates in the MLflow UI (``slimnas ui``) or with
``mlflow.search_runs(filter_string="tags.mlflow.parentRunId = '<id>' and metrics.predicted_ms < 1.5")``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from slimnas.search_spaces.efficientformer import Arch

__all__ = ["log_search_job", "pareto_figure", "tracking_uri"]


def tracking_uri(configured: str | None) -> str:
    from .tracking import default_tracking_uri

    return configured or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


def pareto_figure(job: Any):
    """Top-1 against predicted latency for every method (see the module docstring)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5), dpi=110)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    methods = list(dict.fromkeys(r.method for r in job.results))
    for i, method in enumerate(methods):
        color = colors[i % len(colors)]
        points = [h for label, hist in job.histories.items() if label.split("@")[0] == method for h in hist
                  if not h.get("early_stopped")]
        if points:
            ax.scatter([p["latency_ms"] for p in points], [p["accuracy"] for p in points], s=10, alpha=0.25,
                       color=color)
        answers = [r for r in job.results if r.method == method and r.top1 is not None]
        ax.scatter([r.predicted_ms for r in answers], [r.top1 for r in answers], s=60, color=color,
                   edgecolors="black", label=method, zorder=3)
        for method_name, trajectory in job.trajectories.items():
            if method_name == method:
                ax.plot([s["latency_ms"] for s in trajectory], [s["accuracy"] for s in trajectory], color=color,
                        lw=1, alpha=0.8)
    for target in sorted({r.target_ms for r in job.results}):
        ax.axvline(target, color="grey", ls="--", lw=0.8)
    ax.set_xlabel("predicted latency (ms)")
    ax.set_ylabel("top-1 (supernet weights, BN recalibrated)")
    ax.set_title("slimnas: slimming against enumeration baselines", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _arch_params(arch: Arch) -> dict[str, str]:
    return {"widths": ",".join(map(str, arch.widths)), "depths": ",".join(map(str, arch.depths)),
            "mb3d": ",".join(map(str, arch.num_3d)), "mb3d_total": str(sum(arch.num_3d))}


def log_search_job(job: Any, cfg: Any, supernet: Any, table: Any) -> str:
    """Log ``job`` to MLflow; returns the parent run's id."""
    import matplotlib.pyplot as plt
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri(cfg.tracking.tracking_uri))
    experiment = client.get_experiment_by_name(cfg.tracking.experiment)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(cfg.tracking.experiment)
    parent = client.create_run(experiment_id, run_name=cfg.name, tags={"slimnas.kind": "search-job"})
    pid = parent.info.run_id
    params = {"name": cfg.name, "space": supernet.space.name, "latency_table": table.meta.describe()[:500],
              "methods": ",".join(cfg.methods), "targets_ms": ",".join(f"{t:g}" for t in cfg.targets),
              "budget": str(cfg.budget), "seed": str(cfg.seed), "early_stop": str(cfg.early_stop.enabled),
              "early_stop_rule": cfg.early_stop.rule, "supernet": cfg.supernet[:500]}
    for key, value in params.items():
        client.log_param(pid, key, value)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "results.csv").write_text(job.to_csv())
        client.log_artifact(pid, str(folder / "results.csv"))
        fig = pareto_figure(job)
        client.log_figure(pid, fig, "pareto.png")
        fig.savefig(Path(job.job_dir) / "pareto.png")
        plt.close(fig)
        for method, trajectory in job.trajectories.items():
            rows = [{"round": s["round"], "action": (s["action"] or {}).get("text", "start"),
                     "latency_ms": s["latency_ms"], "top1": s["accuracy"], "evaluations": s["evaluations"],
                     "arch": str(Arch.from_dict(s["arch"]))} for s in trajectory]
            client.log_table(pid, {k: [r[k] for r in rows] for k in rows[0]}, f"{method}_trajectory.json")
        for result in job.results:
            _log_child(client, experiment_id, pid, result, supernet, folder)
    client.set_terminated(pid)
    return pid


def _log_child(client: Any, experiment_id: str, parent_id: str, result: Any, supernet: Any, folder: Path) -> None:
    import torch

    run = client.create_run(experiment_id, run_name=f"{result.method}@{result.target_ms:g}ms",
                            tags={"mlflow.parentRunId": parent_id, "slimnas.method": result.method,
                                  "slimnas.target_ms": f"{result.target_ms:g}"})
    rid = run.info.run_id
    client.log_param(rid, "method", result.method)
    client.log_param(rid, "target_ms", f"{result.target_ms:g}")
    metrics = {"evaluations": result.evaluations, "wall_s": result.wall_s,
               "trials_stopped": result.early_stop.get("trials_stopped", 0),
               "batches_saved": result.early_stop.get("batches_saved", 0)}
    if result.arch is not None:
        arch = Arch.from_dict(result.arch)
        for key, value in _arch_params(arch).items():
            client.log_param(rid, key, value)
        metrics.update(top1=result.top1, predicted_ms=result.predicted_ms)
        if result.measured_ms is not None:
            metrics["measured_ms"] = result.measured_ms
        client.log_dict(rid, arch.to_dict(), "arch.json")
        weights = folder / "weights.pt"
        torch.save(supernet.extract(arch).state_dict(), weights)
        client.log_artifact(rid, str(weights))
    for key, value in metrics.items():
        client.log_metric(rid, key, float(value))
    client.set_terminated(rid, "FINISHED" if result.arch is not None else "FAILED")
