"""The pipeline job (``slimnas run`` and ``slimnas quickstart``): train the supernet, build and validate the latency
table, then run the search job (slimming against the baselines at the latency targets).

Every input is checked first (:func:`~slimnas.platform.preflight.check_pipeline`), then each stage runs or is reused:

- **train**: reused when the run folder holds the final checkpoint of a run with the same settings; an interrupted run
  resumes from its last checkpoint; a run made with other settings stops the job (one line naming the first
  difference) instead of being overwritten. ``--force train`` retrains: the old run folder is moved to
  ``<run>.previous`` and deleted only once the new run has finished.
- **table**: see :mod:`slimnas.platform.latency_stage` (an interrupted build resumes from its journal).
- **search**: reused when ``results.json`` exists and the job's inputs (its config with the targets resolved, the
  checkpoint's SHA-256, the table's creation time) are those recorded in ``pipeline.json``; otherwise it runs again
  (``--restore`` continues a killed search job, see :mod:`slimnas.platform.search_job`; the job runs in a staged
  folder, so the earlier results stay whole until the new ones replace them).

``<output>/pipeline.json`` records, per stage, what ran or was reused, its wall time and its outputs; it is rewritten
atomically after each stage, so a failed run leaves the earlier stages' records and outputs intact.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slimnas.config import atomic_write_text
from slimnas.errors import InputError

from .pipeline_config import STAGES, PipelineConfig
from .progress import Echo, ProgressLine, SearchMonitor, StageLog, TrainProgress, clock, stderr_echo

__all__ = ["run_pipeline", "PipelineResult", "init_ray"]

STATE_FILE = "pipeline.json"
#: Training settings that do not change the trained weights (ignored when deciding whether a run can be reused).
_NEUTRAL = ("tracking.", "run.resume", "run.log_every", "run.keep_checkpoints", "run.out_dir", "data.workers",
            "data.eval_batch_size", "distributed.address", "distributed.max_failures", "distributed.storage_path")


@dataclass
class PipelineResult:
    config: PipelineConfig
    job: Any  # SearchJobResult
    state: dict[str, Any]
    times: dict[str, float] = field(default_factory=dict)
    total_s: float = 0.0

    def summary_text(self) -> str:
        """The comparison table, where the results are, and how to look at them in MLflow."""
        job, cfg = self.job, self.config
        lines = [job.table_text(), "", f"Pareto plot:   {Path(job.job_dir) / 'pareto.png'}",
                 f"results:       {Path(job.job_dir) / 'results.csv'}"]
        stages = self.state.get("stages", {})
        summary = (stages.get("table", {}).get("validation") or {}).get("plain_all")
        if summary:
            lines.append(f"latency table: {stages['table']['path']} (validated: {_validation_text(summary)})")
        if cfg.tracking.enabled:
            uri = cfg.tracking_uri()
            run = stages.get("search", {}).get("mlflow_run_id")
            lines.append(f"MLflow:        experiment '{cfg.tracking.experiment}' at {uri}"
                         + (f" (search run {run})" if run else ""))
            if uri.startswith("sqlite:"):
                lines.append(f"  compare the candidates in the MLflow UI: slimnas ui --backend-store-uri {uri}"
                             "   (then open http://127.0.0.1:5000)")
            else:
                lines.append(f"  compare the candidates in the MLflow UI: open {uri}")
        times = ", ".join(f"{stage} {self.times[stage]:.0f} s" for stage in STAGES if stage in self.times)
        lines.append(f"stage times:   {times}; total {clock(self.total_s)}")
        return "\n".join(lines)


def init_ray(cfg: PipelineConfig) -> bool:
    """Connect to ``ray.address`` (or ``$RAY_ADDRESS``, set inside a Ray job), else start a local Ray. Returns
    whether this call initialised Ray."""
    import os

    import ray

    if ray.is_initialized():
        return False
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    if address:
        try:
            ray.init(address=address, log_to_driver=True)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise InputError(f"ray.address: cannot connect to {address} ({type(exc).__name__})") from None
    else:
        ray.init(num_cpus=cfg.ray.num_cpus, object_store_memory=cfg.ray.object_store_mb * 2**20,
                 include_dashboard=False, log_to_driver=False)
    return True


def _sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _save_state(path: Path, state: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(state, indent=1, default=str))


# ---------------------------------------------------------------------------------------------------- train
def _checkpoint_folder(tcfg: Any) -> Path:
    from slimnas.trainers import checkpoint_dir

    if not tcfg.distributed.enabled:
        return checkpoint_dir(tcfg)
    storage = tcfg.distributed.storage_path or tcfg.run.out_dir
    if "://" in storage:
        raise InputError("train.distributed.storage_path: the pipeline reads the supernet checkpoint from it; use a "
                         "filesystem path shared by the nodes (e.g. /mnt/shared/...), not a URI")
    return Path(storage).expanduser().resolve() / tcfg.run.name


def _config_difference(stored: dict[str, Any], wanted: dict[str, Any]) -> str | None:
    from .tracking import flatten

    a, b = flatten(stored), flatten(wanted)
    for key in sorted(set(a) | set(b)):
        if key.startswith(_NEUTRAL) or a.get(key) == b.get(key):
            continue
        return f"{key}: {a.get(key, '-')} -> {b.get(key, '-')}"
    return None


def _train_stage(cfg: PipelineConfig, force: set[str], log: StageLog, echo: Echo) -> tuple[str, str, str]:
    from slimnas.trainers import latest_checkpoint, load_checkpoint

    from .training import run_training

    tcfg = cfg.train_config()
    folder = _checkpoint_folder(tcfg)
    found = latest_checkpoint(folder)
    previous = folder.parent.with_name(folder.parent.name + ".previous") if folder.name == "checkpoints" else \
        folder.with_name(folder.name + ".previous")
    moved = None
    if found is not None and "train" in force:
        moved = previous
        shutil.rmtree(moved, ignore_errors=True)
        (folder.parent if folder.name == "checkpoints" else folder).rename(moved)
        found = None
    if found is not None:
        ckpt = load_checkpoint(found, "train")
        diff = _config_difference(ckpt.get("config", {}), tcfg.model_dump(mode="json"))
        if diff is not None:
            raise InputError(f"train: {folder} holds a supernet trained with other settings ({diff}); "
                             f"pass --force train to retrain it, or set train.run.name")
        if ckpt["epoch"] >= tcfg.run.epochs and ckpt.get("channels_sorted"):
            log.start("train", f"reusing the trained supernet {found}")
            log.end("train", "reused")
            return str(found), _sha256(found), "reused"
    epochs = tcfg.run.epochs
    log.start("train", f"supernet of space '{cfg.train.space}' on {tcfg.data.kind} data, {epochs} epochs, "
                       f"Gumbel {tcfg.gumbel.mode} mode -> {folder}")
    import torch

    previous_threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        result = run_training(tcfg, progress=False,
                              callback_factories=[functools.partial(TrainProgress, "train", echo)])
    finally:
        torch.set_num_threads(previous_threads)
    if moved is not None:
        shutil.rmtree(moved, ignore_errors=True)
    final = result.metrics.get("val_top1")
    log.end("train", f"done, max-arch val top-1 {final:.3f}" if final is not None else "done")
    return str(result.checkpoint), _sha256(result.checkpoint), "ran"


# ---------------------------------------------------------------------------------------------------- table
def _table_stage(cfg: PipelineConfig, force: set[str], num_classes: int, log: StageLog, echo: Echo,
                 runtime: dict[str, Any]):
    from slimnas.latency import LatencyTable
    from slimnas.search_spaces.efficientformer import SearchSpace

    from .latency_stage import measure, measure_on_ray, reusable_table, validation_is_current

    lat, path, vdir = cfg.latency, cfg.table_path, cfg.validation_dir
    space = SearchSpace.resolve(cfg.train.space)
    table = None if "table" in force else reusable_table(lat, path, space, num_classes)
    validate = lat.validate_.num_archs > 0
    summary = validation_is_current(lat, table, vdir) if (table is not None and validate) else None
    if table is not None and (summary is not None or not validate):
        log.start("table", f"reusing {path}")
        log.end("table", "reused")
        return table, summary, "reused"
    build = table is None
    where = "here" if lat.resources is None else f"on a Ray node with {lat.resources}"
    what = (f"measuring every part of space '{space.name}' on {lat.backend} {where} (batch {lat.batch}, "
            f"{lat.protocol.passes} interleaved passes, {lat.protocol.statistic}) -> {path}" if build
            else f"reusing {path}")
    log.start("table", what + (f"; then validating on {lat.validate_.num_archs} random networks" if validate else ""))
    if lat.resources is None:
        printers = {"table": ProgressLine("table", echo),
                    "validate": ProgressLine("validate", echo, what="network passes")}
        summary = measure(lat, space, num_classes, path, vdir, build, validate, fresh="table" in force,
                          on_progress=lambda step, p: printers[step](p))
    else:
        runtime["ray_started"] = init_ray(cfg) or runtime.get("ray_started", False)
        summary = measure_on_ray(lat, space, num_classes, path, vdir, build, validate,
                                 heartbeat=lambda s: echo(f"[table] measuring on Ray, elapsed {clock(s)}"))
    table = LatencyTable.load(path)
    plain = (summary or {}).get("plain_all", {})
    done = f"{len(table)} entries" + (f"; validation: {_validation_text(plain)}" if plain else "")
    log.end("table", done)
    return table, summary or None, "built" if build else "validated"


def _validation_text(summary: dict[str, Any]) -> str:
    """One line of a validation's figures (the issue-10 acceptance measures: within +-10% and Kendall tau)."""
    return (f"{summary['n']} networks measured end to end, {100 * summary['within_10pct']:.0f}% within +-10% of the "
            f"table, mean absolute error {summary['mape_pct']:.1f}%, Kendall tau {summary['kendall_tau']:.3f}")


# ---------------------------------------------------------------------------------------------------- search
def _load_job(path: Path):
    from .search_job import MethodResult, SearchJobResult

    data = json.loads(path.read_text())
    return SearchJobResult(data["config"], [MethodResult(**r) for r in data["results"]], data["histories"],
                           data["trajectories"], data["job_dir"], data.get("mlflow_run_id"))


def _targets(cfg: PipelineConfig, table: Any, calibration: str | None) -> list[float]:
    if cfg.search.targets is not None:
        return list(cfg.search.targets)
    from slimnas.latency import CalibratedPredictor

    predictor = CalibratedPredictor.load(calibration, table) if calibration else table
    full = float(predictor.predict_many([table.space.max_arch()])[0])
    return [round(f * full, 4) for f in cfg.search.targets_relative or []]


def _search_stage(cfg: PipelineConfig, force: set[str], restore: bool, log: StageLog, echo: Echo,
                  record: dict[str, Any], runtime: dict[str, Any], checkpoint: str, sha: str, table: Any):
    from .search_job import run_search_job

    calibration = None
    if cfg.search.predictor == "calibrated":
        calibration = str(cfg.validation_dir / "calibration.json")
        if not Path(calibration).is_file():
            raise InputError(f"search.predictor: no calibrated predictor at {calibration} (the validation fits one "
                             f"when latency.validate.num_archs gives at least 6 random networks)")
    targets = _targets(cfg, table, calibration)
    job_cfg = cfg.search_job(checkpoint, str(cfg.table_path), targets, calibration)
    inputs = {"config": job_cfg.model_dump(mode="json", exclude={"ray", "tracking"}), "supernet_sha256": sha,
              "table_created": table.meta.created}
    results = job_cfg.job_dir() / "results.json"
    if "search" not in force and results.is_file() and record.get("inputs") == inputs:
        log.start("search", f"reusing {results}")
        job = _load_job(results)
        job.mlflow_run_id = record.get("mlflow_run_id")
        log.end("search", "reused")
        return job, inputs, targets, "reused"
    log.start("search", f"{', '.join(job_cfg.methods)} at {len(targets)} target(s) "
                        f"({', '.join(f'{t:g}' for t in job_cfg.targets)} ms) on Ray Tune -> {job_cfg.job_dir()}")
    runtime["ray_started"] = init_ray(cfg) or runtime.get("ray_started", False)
    monitor = SearchMonitor(min(targets), echo).start()
    try:
        job = run_search_job(job_cfg, restore=restore, echo=monitor)
    finally:
        monitor.stop()
    evaluations = sum(len(h) for h in job.histories.values())
    log.end("search", f"done, {evaluations} subnet evaluations")
    return job, inputs, targets, "ran"


# ---------------------------------------------------------------------------------------------------- the job
def _stages(force: Iterable[str]) -> set[str]:
    chosen = set(force)
    unknown = chosen - set(STAGES) - {"all"}
    if unknown:
        raise InputError(f"--force: unknown stage(s) {sorted(unknown)} (expected {', '.join(STAGES)} or all)")
    return set(STAGES) if "all" in chosen else chosen


def run_pipeline(cfg: PipelineConfig, force: Iterable[str] = (), restore: bool = False,
                 echo: Echo = stderr_echo) -> PipelineResult:
    """Run (or reuse) train -> table -> search; see the module docstring."""
    from .preflight import check_pipeline

    forced = _stages(force)
    started = time.perf_counter()
    num_classes = check_pipeline(cfg, forced)
    out = cfg.output_dir
    state_path = out / STATE_FILE
    try:
        previous = json.loads(state_path.read_text()) if state_path.is_file() else {}
    except json.JSONDecodeError:
        previous = {}
    state = {"name": cfg.name, "config": cfg.model_dump(mode="json", by_alias=True),
             "stages": dict(previous.get("stages", {})), "mlflow_run_id": previous.get("mlflow_run_id")}
    runtime: dict[str, Any] = {}
    if cfg.tracking.enabled:
        from .pipeline_tracking import ensure_experiment

        ensure_experiment(cfg.tracking_uri(), cfg.tracking.experiment)
    log = StageLog(cfg.name, STAGES, echo)
    try:
        checkpoint, sha, status = _train_stage(cfg, forced, log, echo)
        state["stages"]["train"] = {"status": status, "wall_s": log.times["train"], "checkpoint": checkpoint,
                                    "sha256": sha}
        _save_state(state_path, state)
        table, summary, status = _table_stage(cfg, forced, num_classes, log, echo, runtime)
        state["stages"]["table"] = {"status": status, "wall_s": log.times["table"], "path": str(cfg.table_path),
                                    "created": table.meta.created, "entries": len(table), "validation": summary}
        _save_state(state_path, state)
        job, inputs, targets, status = _search_stage(cfg, forced, restore, log, echo,
                                                     state["stages"].get("search", {}), runtime, checkpoint, sha, table)
        state["stages"]["search"] = {"status": status, "wall_s": log.times["search"], "inputs": inputs,
                                     "targets": targets, "job_dir": job.job_dir, "mlflow_run_id": job.mlflow_run_id}
        state["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        _save_state(state_path, state)
        if cfg.tracking.enabled and any(r.get("status") != "reused" for r in state["stages"].values()):
            from .pipeline_tracking import log_pipeline_run

            state["mlflow_run_id"] = log_pipeline_run(cfg, state, state_path, cfg.validation_dir)
            _save_state(state_path, state)
    finally:
        if runtime.get("ray_started"):
            import ray

            ray.shutdown()
    return PipelineResult(cfg, job, state, dict(log.times), time.perf_counter() - started)
