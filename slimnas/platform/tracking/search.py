"""MLflow records of a search job: one parent run, one child run per (method, target).

Parent run (tag ``slimnas.kind = search-job``): the job's params (for relative targets also ``targets_relative``
and the reference they are fractions of: ``targets_reference_ms``, ``targets_reference_arch``, ``..._start``,
``..._predictor``; ``eval_images_measured``: the validation images behind each top-1), ``results.csv``/
``results.json``, the Pareto plot ``pareto.png`` (:func:`pareto_figure`) and each slimming run's trajectory as an
MLflow table.

Child runs (tags ``mlflow.parentRunId``, ``slimnas.method``, ``slimnas.target_ms``, ``slimnas.meets_target``:
``true``, ``false``, or why it is unknown: ``pending``, ``off``, ``no answer``): params ``method``, ``target_ms``,
``widths``, ``depths``, ``mb3d`` (per stage), ``mb3d_total``; metrics ``top1``, ``predicted_ms``, ``measured_ms`` and
``meets_target`` (1/0; both only when measured), ``evaluations`` (verification's extra ones included),
``extra_evaluations``, ``verify_steps``, ``wall_s``, ``trials_stopped``, ``batches_saved``; artifacts: the files of the
winner's folder (:mod:`slimnas.winners`: ``weights.pt``, the network as evaluated, BN statistics recalibrated;
``arch.json``; the model card ``model.json``), which :func:`slimnas.load_winner` loads from a downloaded copy too.
Compare candidates in the MLflow UI (``slimnas ui``) or with
``mlflow.search_runs(filter_string="tags.mlflow.parentRunId = '<id>' and metrics.predicted_ms < 1.5")``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from slimnas._io import atomic_write
from slimnas.search_spaces import Arch

__all__ = ["log_search_job", "pareto_figure"]


def pareto_figure(job: Any):
    """Top-1 against latency for every method, one colour per method.

    Each method's answers are bold at their *measured* latency (their predicted one where they were not measured),
    with the predicted position as a faint hollow marker joined by a thin line, and a label ``@<target>`` naming the
    target each answers; an answer that does not meet its target is an X with a red edge. Every evaluated subnet
    (faint dots) and slimming's trajectory (a thin line) stay at their *predicted* latency. Each target is a dashed
    line labelled with its value.
    """
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
        for method_name, trajectory in job.trajectories.items():
            if method_name == method:
                ax.plot([s.latency_ms for s in trajectory], [s.accuracy for s in trajectory], color=color,
                        lw=1, alpha=0.5)
        answers = [r for r in job.results if r.method == method and r.top1 is not None]
        shown = [r.predicted_ms if r.measured_ms is None else r.measured_ms for r in answers]
        labels: dict[tuple[float, float], list[str]] = {}  # one label per point: an arch may answer several targets
        for r, x in zip(answers, shown):
            if r.measured_ms is not None:
                ax.plot([r.predicted_ms, x], [r.top1, r.top1], color=color, lw=0.6, alpha=0.5, zorder=2)
                ax.scatter([r.predicted_ms], [r.top1], s=40, facecolors="none", edgecolors=color, alpha=0.5, zorder=2)
            labels.setdefault((x, r.top1), []).append(f"@{r.target_ms:g}")
        for (x, y), names in labels.items():
            ax.annotate(" ".join(names), (x, y), xytext=(4, 4), textcoords="offset points", fontsize=7, color=color)
        met = [(x, r.top1) for r, x in zip(answers, shown) if r.meets_target is not False]
        missed = [(x, r.top1) for r, x in zip(answers, shown) if r.meets_target is False]
        ax.scatter([p[0] for p in met], [p[1] for p in met], s=60, color=color, edgecolors="black", label=method,
                   zorder=3)
        if missed:
            ax.scatter([p[0] for p in missed], [p[1] for p in missed], s=90, marker="X", color=color,
                       edgecolors="red", linewidths=1.5, zorder=4, label=None if met else method)
    for target in sorted({r.target_ms for r in job.results}):
        ax.axvline(target, color="grey", ls="--", lw=0.8)
        ax.text(target, 1.005, f"{target:g} ms", transform=ax.get_xaxis_transform(), ha="center", va="bottom",
                fontsize=7, color="grey")
    ax.set_xlabel("latency (ms): answers measured on the device (hollow: predicted); all evaluations predicted")
    ax.set_ylabel("top-1 (supernet weights, BN recalibrated)")
    ax.set_title("slimnas: slimming against enumeration baselines (red X: target not met)", fontsize=10, pad=14)
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

    from slimnas.platform.tracking.store import default_tracking_uri, ensure_experiment

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
    for key, value in params.items():
        client.log_param(pid, key, value)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "results.csv").write_text(job.to_csv())
        client.log_artifact(pid, str(folder / "results.csv"))
        fig = pareto_figure(job)
        client.log_figure(pid, fig, "pareto.png")
        atomic_write(Path(job.job_dir) / "pareto.png", lambda tmp: fig.savefig(tmp, format="png"))
        plt.close(fig)
        for method, trajectory in job.trajectories.items():
            rows = [{"round": s.round, "action": "start" if s.action is None else str(s.action),
                     "latency_ms": s.latency_ms, "top1": s.accuracy, "evaluations": s.evaluations,
                     "arch": str(s.arch)} for s in trajectory]
            client.log_table(pid, {k: [r[k] for r in rows] for k in rows[0]}, f"{method}_trajectory.json")
        for result in job.results:
            _log_child(client, experiment_id, pid, result, Path(job.job_dir))
    client.set_terminated(pid)
    return pid


def _log_child(client: Any, experiment_id: str, parent_id: str, result: Any, job_dir: Path) -> None:
    from slimnas.winners import winner_folder

    meets = {True: "true", False: "false"}.get(result.meets_target, result.verification or "unknown")
    run = client.create_run(experiment_id, run_name=f"{result.method}@{result.target_ms:g}ms",
                            tags={"mlflow.parentRunId": parent_id, "slimnas.method": result.method,
                                  "slimnas.target_ms": f"{result.target_ms:g}", "slimnas.meets_target": meets})
    rid = run.info.run_id
    client.log_param(rid, "method", result.method)
    client.log_param(rid, "target_ms", f"{result.target_ms:g}")
    metrics = {"evaluations": result.evaluations, "extra_evaluations": result.extra_evaluations,
               "verify_steps": result.verify_steps, "wall_s": result.wall_s,
               "trials_stopped": result.early_stop.get("trials_stopped", 0),
               "batches_saved": result.early_stop.get("batches_saved", 0)}
    if result.arch is not None:
        arch = Arch.from_dict(result.arch)
        for key, value in _arch_params(arch).items():
            client.log_param(rid, key, value)
        metrics.update(top1=result.top1, predicted_ms=result.predicted_ms)
        if result.measured_ms is not None:
            metrics["measured_ms"] = result.measured_ms
        if result.meets_target is not None:
            metrics["meets_target"] = int(result.meets_target)
        client.log_artifacts(rid, str(winner_folder(job_dir, result.method, result.target_ms)))
    for key, value in metrics.items():
        client.log_metric(rid, key, float(value))
    client.set_terminated(rid, "FINISHED" if result.arch is not None else "FAILED")
