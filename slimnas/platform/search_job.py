"""A search job: slimming and the enumeration baselines, side by side, on one supernet and one latency table.

Every method sees the same evaluator (supernet weights, BN recalibrated, top-1 on the validation images), the same
latency function (the table, served by the Ray :mod:`latency actor <slimnas.latency.actor>`) and the same budget
accounting (subnet evaluations). Each candidate evaluation is a Ray Tune trial (:mod:`slimnas.platform.tune`).

Budgets (``budget: auto``): slimming runs once for the whole sweep; for each target, a baseline gets the evaluations
slimming had used when it first reached that target (so "equal budgets" is exact per target). NSGA-II runs once with
the largest of those budgets and answers every target from its Pareto front. A fixed ``budget: N`` gives every
baseline and target N evaluations.

Results: for each (method, target) the winning arch, its predicted latency (table), its latency measured end to end on
the table's backend (when that backend runs here), its top-1, the evaluations used and the wall time; written to
``<output>/<name>/results.{json,csv}`` (atomically) and to MLflow (:mod:`slimnas.platform.search_tracking`).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from slimnas.config import atomic_write_text
from slimnas.errors import InputError
from slimnas.search import (
    ExhaustiveSearch,
    NSGA2Search,
    RandomSearch,
    SearchAlgorithm,
    SlimmingSearch,
    TPESearch,
    start_arch,
)
from slimnas.search_spaces.efficientformer import Arch

from .search_config import SearchJobConfig

__all__ = ["run_search_job", "MethodResult", "SearchJobResult", "load_supernet"]

log = logging.getLogger(__name__)


@dataclass
class MethodResult:
    method: str
    target_ms: float
    arch: dict[str, Any] | None
    predicted_ms: float | None
    top1: float | None
    evaluations: int
    wall_s: float
    measured_ms: float | None = None
    early_stop: dict[str, int] = field(default_factory=dict)
    stop_reason: str = ""


@dataclass
class SearchJobResult:
    config: dict[str, Any]
    results: list[MethodResult]
    histories: dict[str, list[dict[str, Any]]]  # per method run: every evaluation (arch, latency, accuracy)
    trajectories: dict[str, list[dict[str, Any]]]  # slimming runs' trajectories
    job_dir: str
    mlflow_run_id: str | None = None

    def table_text(self) -> str:
        lines = [f"{'method':18s} {'target':>7s} {'pred ms':>8s} {'meas ms':>8s} {'top-1':>7s} {'evals':>6s} "
                 f"{'wall s':>7s}  arch"]
        for r in self.results:
            fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
            arch = "-" if r.arch is None else str(Arch.from_dict(r.arch))
            lines.append(f"{r.method:18s} {r.target_ms:7.2f} {fmt(r.predicted_ms, '8.3f')} "
                         f"{fmt(r.measured_ms, '8.3f')} {fmt(r.top1, '7.4f')} {r.evaluations:6d} {r.wall_s:7.1f}  "
                         f"{arch}")
        return "\n".join(lines)

    def to_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["method", "target_ms", "predicted_ms", "measured_ms", "top1", "evaluations", "wall_s",
                         "trials_stopped", "batches_saved", "stop_reason", "arch"])
        for r in self.results:
            writer.writerow([r.method, r.target_ms, r.predicted_ms, r.measured_ms, r.top1, r.evaluations,
                             round(r.wall_s, 2), r.early_stop.get("trials_stopped", ""),
                             r.early_stop.get("batches_saved", ""), r.stop_reason,
                             "" if r.arch is None else json.dumps(r.arch)])
        return buffer.getvalue()


def load_supernet(path: str):
    """The supernet of a checkpoint file, or of the latest checkpoint in a run's folder."""
    from slimnas.search_spaces.efficientformer import SuperNet
    from slimnas.trainers import latest_checkpoint, model_from_checkpoint

    source = Path(path)
    if source.is_dir():
        found = latest_checkpoint(source)
        if found is None:
            found = latest_checkpoint(source / "checkpoints") if (source / "checkpoints").is_dir() else None
        if found is None:
            raise InputError(f"supernet: no checkpoint in {source}")
        source = found
    elif not source.is_file():
        raise InputError(f"supernet: no such file or folder {source}")
    model = model_from_checkpoint(source)
    if not isinstance(model, SuperNet):
        raise InputError(f"supernet: {source} holds a standalone model, not a supernet")
    return model, str(source)


def _init_ray(cfg: SearchJobConfig) -> None:
    import ray

    if ray.is_initialized():
        return
    if cfg.ray.address:
        try:
            ray.init(address=cfg.ray.address, log_to_driver=False)
        except Exception as exc:  # noqa: BLE001 - any connection failure is one line for the user
            raise InputError(f"ray.address: cannot connect to {cfg.ray.address} ({type(exc).__name__})") from None
    else:
        ray.init(num_cpus=cfg.ray.num_cpus, object_store_memory=cfg.ray.object_store_mb * 2**20,
                 include_dashboard=False, log_to_driver=False)


def _latency_fn(cfg: SearchJobConfig, table):
    from slimnas.latency import CalibratedPredictor
    from slimnas.latency.actor import LatencyClient, start_latency_actor

    actor = start_latency_actor({"table": table}, name=f"lut-{cfg.name}", detached=False,
                                resources=cfg.ray.latency_resources)
    client = LatencyClient(actor, table="table")
    if cfg.latency.calibration is None:
        return client.predict_many
    calibration = CalibratedPredictor.load(cfg.latency.calibration, table)
    return calibration.predict_many  # the calibrated predictor runs in the driver on the same table


def _budgets(cfg: SearchJobConfig, slimming: SlimmingSearch | None) -> dict[float, int]:
    if isinstance(cfg.budget, int):
        return {t: cfg.budget for t in cfg.targets}
    if slimming is None:
        raise InputError("budget: 'auto' matches slimming's evaluations; add 'slimming' to methods or give a number")
    out = {}
    for target in cfg.targets:
        step = next((s for s in slimming.trajectory if s["latency_ms"] <= target), None)
        out[target] = max(1, step["evaluations"] if step else slimming.evaluations)
    return out


def run_search_job(cfg: SearchJobConfig, restore: bool = False,
                   echo: Callable[[str], None] = lambda line: log.info(line)) -> SearchJobResult:
    """Run (or, with ``restore``, continue) a search job. See the module docstring."""
    from ray import tune

    from slimnas.latency import LatencyTable
    from slimnas.trainers import check_data

    from .tune import run_tune
    from .tune.trainable import evaluate_candidate, evaluation_payload

    table = LatencyTable.load(cfg.latency.table)
    supernet, checkpoint = load_supernet(cfg.supernet)
    space = supernet.space
    if table.space.to_dict() | {"name": ""} != space.to_dict() | {"name": ""}:
        raise InputError(f"latency.table: measured for space {table.space.name!r}, the supernet's is {space.name!r}")
    check_data(cfg.data)
    job_dir = cfg.job_dir()
    job_dir.mkdir(parents=True, exist_ok=True)
    _init_ray(cfg)
    latency_fn = _latency_fn(cfg, table)
    importance = supernet.importance()
    payload = evaluation_payload(supernet, cfg.data.model_dump(), cfg.eval_images, key=f"{checkpoint}:{cfg.name}")
    trainable = tune.with_parameters(evaluate_candidate, payload=payload)
    resources = {"cpu": cfg.ray.cpus_per_trial, "gpu": cfg.ray.gpus_per_trial}
    results: list[MethodResult] = []
    histories: dict[str, list[dict[str, Any]]] = {}
    trajectories: dict[str, list[dict[str, Any]]] = {}

    def run(algorithm: SearchAlgorithm, label: str):
        echo(f"[search] {label}: running")
        started = time.perf_counter()
        outcome = run_tune(algorithm, trainable, label, job_dir / "tune", early_stop=cfg.early_stop.enabled,
                           rule=cfg.early_stop.rule, z=cfg.early_stop.z, resources=resources,
                           max_concurrent_trials=cfg.ray.max_concurrent, restore=restore)
        wall = time.perf_counter() - started
        histories[label] = [{"arch": e.arch.to_dict(), "latency_ms": e.latency_ms, "accuracy": e.accuracy,
                             "early_stopped": e.candidate.id in outcome.searcher.early_stopped}
                            for e in outcome.algorithm.history]
        echo(f"[search] {label}: {outcome.algorithm.evaluations} evaluations in {wall:.1f} s "
             f"({outcome.algorithm.stop_reason})")
        return outcome, wall

    def record(method: str, target: float, algorithm: SearchAlgorithm, evaluations: int, wall: float,
               early: dict[str, int]) -> None:
        best = algorithm.answer(target)
        results.append(MethodResult(method, target, None if best is None else best.arch.to_dict(),
                                    None if best is None else best.latency_ms,
                                    None if best is None else best.accuracy, evaluations, wall,
                                    early_stop=dict(early), stop_reason=algorithm.stop_reason))

    slimming = None
    for method in [m for m in cfg.methods if m.startswith("slimming")]:
        mode = "extended" if method == "slimming-extended" else "paper"
        algorithm = SlimmingSearch(space, start_arch(space, importance), importance, latency_fn, cfg.targets,
                                   mode=mode, mb3d_removal=cfg.slimming.mb3d_removal, seed=cfg.seed)
        outcome, wall = run(algorithm, method)
        trajectories[method] = outcome.algorithm.trajectory
        for target in cfg.targets:
            step = next((s for s in outcome.algorithm.trajectory if s["latency_ms"] <= target), None)
            used = step["evaluations"] if step else outcome.algorithm.evaluations
            record(method, target, outcome.algorithm, used, wall, outcome.early_stop)
        if method == "slimming":
            slimming = outcome.algorithm
    baselines = [m for m in cfg.methods if not m.startswith("slimming")]
    budgets = _budgets(cfg, slimming) if baselines else {}
    for method in baselines:
        if method == "nsga2":
            budget = max(budgets.values())
            # one front for every target; archs slower than the loosest target serve none and cost no evaluation
            outcome, wall = run(NSGA2Search(space, latency_fn, budget, seed=cfg.seed, target_ms=max(cfg.targets)),
                                method)
            for target in cfg.targets:
                record(method, target, outcome.algorithm, outcome.algorithm.evaluations, wall, outcome.early_stop)
            continue
        for target in cfg.targets:
            factory = {"random": RandomSearch, "exhaustive": ExhaustiveSearch, "tpe": TPESearch}[method]
            algorithm = factory(space, latency_fn, target, budgets[target], seed=cfg.seed)
            outcome, wall = run(algorithm, f"{method}@{target:g}ms")
            record(method, target, outcome.algorithm, outcome.algorithm.evaluations, wall, outcome.early_stop)
    if cfg.latency.measure_final:
        _measure_final(results, table, cfg, echo)
    job = SearchJobResult(cfg.model_dump(), results, histories, trajectories, str(job_dir))
    atomic_write_text(job_dir / "results.json", json.dumps({**asdict(job), "supernet_checkpoint": checkpoint},
                                                           indent=1))
    atomic_write_text(job_dir / "results.csv", job.to_csv())
    if cfg.tracking.enabled:
        from .search_tracking import log_search_job

        job.mlflow_run_id = log_search_job(job, cfg, supernet, table)
    return job


def _measure_final(results: list[MethodResult], table, cfg: SearchJobConfig, echo: Callable[[str], None],
                   passes: int = 2) -> None:
    """Time each distinct winning arch end to end on the table's backend and settings (when it runs here).

    The first network is timed once and discarded (the process has just handed the cores back from Tune's workers,
    and the first timings after that ran up to 1.9x slow); then every network is timed in ``passes`` interleaved
    passes whose samples are pooled, as the table builder does, so one slow phase of the machine cannot own a result.
    """
    from slimnas.latency.backends import get_backend
    from slimnas.latency.validate import measure_networks

    meta = table.meta
    options = {k: v for k, v in meta.options.items() if k != "rotation_mb"}
    backend = get_backend(meta.backend, threads=meta.threads, dtype=meta.dtype, repeats=cfg.latency.measure_repeats,
                          **options)
    reason = backend.unavailable_reason()
    if reason:
        echo(f"[search] final latencies not measured: {reason}")
        return
    archs = {json.dumps(r.arch, sort_keys=True): Arch.from_dict(r.arch) for r in results if r.arch is not None}
    timings = measure_networks(table, backend, list(archs.values()), passes, warmup=True)
    measured = {key: timing.median for key, timing in zip(archs, timings)}
    for r in results:
        if r.arch is not None:
            r.measured_ms = measured[json.dumps(r.arch, sort_keys=True)]
    echo(f"[search] measured {len(measured)} winning archs end to end on {meta.backend}")
