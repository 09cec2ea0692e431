"""The pipeline job (``slimnas run`` and ``slimnas quickstart``): train the supernet, build and validate the latency
table, run the search job (slimming against the baselines at the latency targets), then retrain the chosen winners.

Every input is checked first (:func:`~slimnas.platform.runtime.preflight.check_pipeline`), then each stage runs or
is reused:

- **train**: reused when the run folder holds the final checkpoint of a run with the same settings; an interrupted run
  resumes from its last checkpoint; a run made with other settings stops the job (one line naming the first
  difference) instead of being overwritten. ``--force train`` retrains: the old run folder is moved to
  ``<run>.previous`` and deleted only once the new run has finished (put back if the new run fails before its first
  checkpoint; kept there if it is killed).
- **table**: see :mod:`slimnas.platform.stages.latency` (an interrupted build resumes from its journal).
- **search**: reused when ``results.json`` exists and the job's inputs (its config with the targets resolved, the
  checkpoint's SHA-256, the table's creation time) are those recorded in ``pipeline.json``; otherwise it runs again
  (``--restore`` continues a killed search job, see :mod:`slimnas.platform.stages.search`; the job runs in a staged
  folder, so the earlier results stay whole until the new ones replace them).
- **retrain** (when ``retrain.enabled``): the chosen winners trained again, each reused when its retrained folder was
  made from the same winner with the same settings, a killed training resumed from its last epoch; ``--force
  retrain`` trains every one again. See :mod:`slimnas.platform.stages.retrain`.

``<output>/report.md`` (:mod:`slimnas.platform.stages.report`) sums the job up after every run, its figures beside it.
``<output>/pipeline.json`` is the job's history (:mod:`slimnas.platform.pipeline.record`): one attempt per run that
did something, with, per stage, what ran or was reused, its wall time and its outputs. It is written atomically after
each stage that made an output and at the end; a run rejected before any work (bad input) leaves it untouched, a
failed one appends its attempt with the error. A stage that fails leaves the earlier outputs as they were: a forced
retraining that produced no checkpoint puts the old run back, a new table replaces the old one with its validation
once both are made, a search job runs in a staged folder; MLflow's experiment is created only when a stage first
runs.
"""

from __future__ import annotations

import functools
import logging
import shutil
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slimnas._io import file_sha256 as _sha256
from slimnas._threads import torch_threads
from slimnas.errors import InputError
from slimnas.platform.pipeline.config import STAGES, PipelineConfig
from slimnas.platform.pipeline.record import (
    STATE_FILE,
    Attempt,
    PipelineRecord,
    RetrainRecord,
    SearchInputs,
    SearchRecord,
    StageRecord,
    TableRecord,
    TrainRecord,
    now,
)
from slimnas.platform.stages.progress import SearchMonitor, StageLog
from slimnas.platform.stages.report import (
    REPORT_FILE,
    disturbed_validation_note,
    retrain_section,
    write_pipeline_report,
)
from slimnas.platform.tracking.views import comparison_urls
from slimnas.progress import Echo, ProgressLine, clock, stderr_echo

if TYPE_CHECKING:
    from slimnas.latency import LatencyTable
    from slimnas.platform.stages.search import SearchJobResult
    from slimnas.platform.stages.search_config import TargetsReference

__all__ = ["run_pipeline", "PipelineResult", "TableStageResult", "SearchStageResult", "init_ray"]

logger = logging.getLogger(__name__)

#: Training settings that do not change the trained weights (ignored when deciding whether a run can be reused).
_NEUTRAL = ("tracking.", "run.resume", "run.log_every", "run.keep_checkpoints", "run.out_dir", "data.workers",
            "data.eval_batch_size", "distributed.address", "distributed.max_failures", "distributed.storage_path")


@dataclass(frozen=True)
class TableStageResult:
    """What the table stage hands on: the table (the search stage's latency function) and the stage's record."""

    table: LatencyTable
    record: TableRecord


@dataclass(frozen=True)
class SearchStageResult:
    """What the search stage hands on: the job's results and the stage's record."""

    job: SearchJobResult
    record: SearchRecord


@dataclass
class PipelineResult:
    """A finished pipeline job: the search job's results, the current record of each stage (what ran or was reused
    in this run or, for a stage this run reused, the run that made its outputs) and the wall times."""

    config: PipelineConfig
    job: SearchJobResult
    stages: dict[str, StageRecord]
    times: dict[str, float] = field(default_factory=dict)
    total_s: float = 0.0

    def summary_text(self) -> str:
        """The comparison table, where the results are, and how to look at them in MLflow."""
        job, cfg = self.job, self.config
        lines = [job.table_text(), "", f"Pareto plot:   {Path(job.job_dir) / 'pareto.png'}",
                 f"results:       {Path(job.job_dir) / 'results.csv'}",
                 f"report:        {cfg.output_dir / REPORT_FILE}"]
        table, search = self.stages.get("table"), self.stages.get("search")
        validation = table.validation if isinstance(table, TableRecord) else None
        if validation and validation.get("plain_all"):
            lines.append(f"latency table: {table.path} (validated: {_validation_text(validation, table.path)})")
        if cfg.tracking.enabled:
            uri = cfg.tracking_uri()
            run = search.mlflow_run_id if isinstance(search, SearchRecord) else None
            lines.append(f"MLflow:        experiment '{cfg.tracking.experiment}' at {uri}"
                         + (f" (search run {run})" if run else ""))
            views = comparison_urls(uri, run, search.targets) if run else []
            if uri.startswith("sqlite:"):
                lines.append(f"  compare the candidates in the MLflow UI: slimnas ui --backend-store-uri {uri}"
                             + (", then open for each target:" if views else "   (then open http://127.0.0.1:5000)"))
            else:
                lines.append(f"  compare the candidates in the MLflow UI: open {uri}"
                             + (", at each target:" if views else ""))
            lines.extend(f"    {target:g} ms  {url}" for target, url in views)
        retrain = self.stages.get("retrain")
        if cfg.retrain.enabled and isinstance(retrain, RetrainRecord):
            from slimnas.platform.stages.retrain import retrain_text

            lines.append(retrain_text(retrain))
        times = ", ".join(f"{stage} {self.times[stage]:.0f} s" for stage in STAGES if stage in self.times)
        lines.append(f"stage times:   {times}; total {clock(self.total_s)}")
        return "\n".join(lines)


def init_ray(cfg: PipelineConfig) -> bool:
    """Connect to ``ray.address`` (or ``$RAY_ADDRESS``), else start a local Ray that does not outlive this process
    (:func:`slimnas.platform.runtime.ray_runtime.init_ray`). Returns whether this call initialised Ray."""
    from slimnas.platform.runtime.ray_runtime import init_ray as start

    return start(cfg.ray)


def _ensure_tracking(cfg: PipelineConfig, runtime: dict[str, Any]) -> None:
    """Create the job's MLflow experiment before the first stage that logs to it (not before: a run rejected before
    any work leaves the store as it was)."""
    if cfg.tracking.enabled and not runtime.get("experiment"):
        from slimnas.platform.tracking.pipeline import ensure_experiment

        runtime["experiment"] = ensure_experiment(cfg.tracking_uri(), cfg.tracking.experiment)


def _tracking_and_ray(cfg: PipelineConfig, runtime: dict[str, Any]) -> None:
    """The job's MLflow experiment (:func:`_ensure_tracking`) and Ray (:func:`init_ray`), both wanted by the search
    stage: the experiment is made in a thread while Ray starts, so MLflow's import and first contact with the store
    (~2.5 s on 2 cores when no earlier stage made them) overlap Ray's start (~4 s, mostly waiting for its processes).
    An error of either is raised once both have ended."""
    failed: list[BaseException] = []

    def track() -> None:
        try:
            _ensure_tracking(cfg, runtime)
        except BaseException as exc:  # noqa: BLE001 - raised in the caller's thread below
            failed.append(exc)

    thread = threading.Thread(target=track, name="slimnas-tracking", daemon=True)
    thread.start()
    try:
        runtime["ray_started"] = init_ray(cfg) or runtime.get("ray_started", False)
    finally:
        thread.join()
    if failed:
        raise failed[0]


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
    from slimnas.platform.tracking.store import flatten

    a, b = flatten(stored), flatten(wanted)
    for key in sorted(set(a) | set(b)):
        if key.startswith(_NEUTRAL) or a.get(key) == b.get(key):
            continue
        return f"{key}: {a.get(key, '-')} -> {b.get(key, '-')}"
    return None


def _train_stage(cfg: PipelineConfig, force: set[str], log: StageLog, echo: Echo,
                 runtime: dict[str, Any]) -> TrainRecord:
    from slimnas.platform.stages.training import TrainProgress, run_training
    from slimnas.trainers import latest_checkpoint, load_checkpoint

    tcfg = cfg.train_config()
    folder = _checkpoint_folder(tcfg)
    found = latest_checkpoint(folder)
    run_dir = folder.parent if folder.name == "checkpoints" else folder
    previous = run_dir.with_name(run_dir.name + ".previous")
    if found is not None and "train" not in force:
        ckpt = load_checkpoint(found, "train")
        diff = _config_difference(ckpt.get("config", {}), tcfg.model_dump(mode="json"))
        if diff is not None:
            raise InputError(f"train: {folder} holds a supernet trained with other settings ({diff}); "
                             f"pass --force train to retrain it, or set train.run.name")
        if ckpt["epoch"] >= tcfg.run.epochs and ckpt.get("channels_sorted"):
            log.start("train", f"reusing the trained supernet {found}")
            return TrainRecord("reused", log.end("train", "reused"), str(found), _sha256(found))
    epochs = tcfg.run.epochs
    log.start("train", f"supernet of space '{cfg.train.space}' on {tcfg.data.kind} data, {epochs} epochs, "
                       f"Gumbel {tcfg.gumbel.mode} mode -> {folder}")
    _ensure_tracking(cfg, runtime)
    if tcfg.distributed.enabled:  # Ray Train: the command's Ray, shut down at the job's end
        from slimnas.platform.runtime.ray_runtime import init_ray as start

        ray_cfg = cfg.ray.model_copy(update={"address": tcfg.distributed.address or cfg.ray.address})
        runtime["ray_started"] = start(ray_cfg, field="train.distributed.address") or runtime.get("ray_started", False)
    moved = None
    if found is not None:  # --force train: the old run stays aside until the new one has finished
        moved = previous
        if previous.exists():  # left by a forced run that was killed: run_dir holds that run's partial one
            shutil.rmtree(run_dir)
        else:
            run_dir.rename(previous)
    try:
        with torch_threads(cfg.threads):
            result = run_training(tcfg, progress=False,
                                  callback_factories=[functools.partial(TrainProgress, "train", echo)])
    except BaseException:
        if moved is not None and latest_checkpoint(folder) is None:  # nothing new to resume: put the old run back
            shutil.rmtree(run_dir, ignore_errors=True)
            moved.rename(run_dir)
        raise
    if moved is not None:
        shutil.rmtree(moved, ignore_errors=True)
    final = result.metrics.get("val_top1")
    wall = log.end("train", f"done, max-arch val top-1 {final:.3f}" if final is not None else "done")
    return TrainRecord("ran", wall, str(result.checkpoint), _sha256(result.checkpoint))


# ---------------------------------------------------------------------------------------------------- table
def _table_stage(cfg: PipelineConfig, force: set[str], num_classes: int, log: StageLog, echo: Echo,
                 runtime: dict[str, Any]) -> TableStageResult:
    from slimnas.latency import LatencyTable
    from slimnas.platform.stages.latency import measure, measure_on_ray, reusable_table, validation_is_current
    from slimnas.search_spaces import SearchSpace

    lat, path, vdir = cfg.latency, cfg.table_path, cfg.validation_dir
    space = SearchSpace.resolve(cfg.train.space)
    table = None if "table" in force else reusable_table(lat, path, space, num_classes)
    validate = lat.validate_.num_archs > 0
    summary = validation_is_current(lat, table, vdir) if (table is not None and validate) else None
    if table is not None and (summary is not None or not validate):
        log.start("table", f"reusing {path}")
        return _table_result(table, path, summary, "reused", log.end("table", "reused"))
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
    done = f"{len(table)} entries" + (f"; validation: {_validation_text(summary, path)}" if plain else "")
    if warning := table.meta.disturbed_build():
        done += f"; {warning} (slimnas run --force table)"
    return _table_result(table, path, summary or None, "built" if build else "validated", log.end("table", done))


def _table_result(table: LatencyTable, path: Path, summary: dict[str, Any] | None, status: str,
                  wall_s: float) -> TableStageResult:
    return TableStageResult(table, TableRecord(status, wall_s, str(path), table.meta.created, len(table), summary))


def _validation_text(validation: dict[str, Any], table_path: str | Path) -> str:
    """One line of a validation's figures (the issue-10 acceptance measures: within +-10% and Kendall tau), and, when
    the machine was disturbed through every attempt at it (``validation["measurement"]["unsettled"]``), that the
    figures are the machine's and how to measure again."""
    plain = validation["plain_all"]
    text = (f"{plain['n']} networks measured end to end, {100 * plain['within_10pct']:.0f}% within +-10% of the "
            f"table, mean absolute error {plain['mape_pct']:.1f}%, Kendall tau {plain['kendall_tau']:.3f}")
    disturbed = disturbed_validation_note(validation, table_path)
    return text + (f". {disturbed}" if disturbed else "")


# ---------------------------------------------------------------------------------------------------- search
def _targets(cfg: PipelineConfig, table: Any, calibration: str | None,
             checkpoint: str) -> tuple[list[float], TargetsReference | None]:
    """The search job's targets (ms) and, for ``targets_relative``, what they were resolved from: fractions of the
    predicted latency of the arch slimming starts from, read from the trained supernet's alpha (whether or not
    slimming is among the methods: see :mod:`slimnas.platform.stages.targets`), predicted by the job's predictor."""
    if cfg.search.targets is not None:
        return list(cfg.search.targets), None
    from slimnas.latency import CalibratedPredictor
    from slimnas.platform.stages.search import load_supernet
    from slimnas.platform.stages.targets import resolve_relative_targets

    predictor = CalibratedPredictor.load(calibration, table) if calibration else table
    supernet, _ = load_supernet(checkpoint)
    reference = resolve_relative_targets(cfg.search.targets_relative or [], supernet.space, supernet.importance(),
                                         predictor.predict_many, predictor=cfg.search.predictor)
    return reference.targets_ms(), reference


def _search_stage(cfg: PipelineConfig, force: set[str], restore: bool, log: StageLog, echo: Echo,
                  recorded: SearchRecord | None, runtime: dict[str, Any], trained: TrainRecord,
                  table: LatencyTable) -> SearchStageResult:
    from slimnas.platform.stages.search import SearchJobResult, job_folder, run_search_job
    from slimnas.platform.stages.targets import reference_text

    calibration = None
    if cfg.search.predictor == "calibrated":
        calibration = str(cfg.validation_dir / "calibration.json")
        if not Path(calibration).is_file():
            raise InputError(f"search.predictor: no calibrated predictor at {calibration} (the validation fits one "
                             f"when latency.validate.num_archs gives at least 6 random networks)")
    targets, reference = _targets(cfg, table, calibration, trained.checkpoint)
    job_cfg = cfg.search_job(trained.checkpoint, str(cfg.table_path), targets, calibration, reference)
    inputs = SearchInputs(job_cfg.model_dump(mode="json", exclude={"ray", "tracking"}), trained.sha256,
                          table.meta.created)
    job_folder(job_cfg).settle()  # a swap a killed run left half done: finish or undo it before deciding on reuse
    results = job_cfg.job_dir() / "results.json"
    if "search" not in force and results.is_file() and recorded is not None and inputs.same_as(recorded.inputs):
        log.start("search", f"reusing {results}")
        job = SearchJobResult.load(results)
        job.mlflow_run_id = recorded.mlflow_run_id
        return SearchStageResult(job, SearchRecord("reused", log.end("search", "reused"), inputs, tuple(targets),
                                                   job.job_dir, job.mlflow_run_id))
    where = (reference_text(reference) if reference is not None
             else f"targets {', '.join(f'{t:g}' for t in job_cfg.targets)} ms")
    log.start("search", f"{', '.join(job_cfg.methods)} at {len(targets)} target(s) on Ray Tune -> "
                        f"{job_cfg.job_dir()}; {where}")
    _tracking_and_ray(cfg, runtime)
    monitor = SearchMonitor(min(targets), echo).start()
    try:
        job = run_search_job(job_cfg, restore=restore, echo=monitor, watch=monitor.watch)
    finally:
        monitor.stop()
    evaluations = sum(len(h) for h in job.histories.values())
    wall = log.end("search", f"done, {evaluations} subnet evaluations")
    return SearchStageResult(job, SearchRecord("ran", wall, inputs, tuple(targets), job.job_dir, job.mlflow_run_id))


# ---------------------------------------------------------------------------------------------------- retrain
def _retrain_stage(cfg: PipelineConfig, force: set[str], log: StageLog, echo: Echo, runtime: dict[str, Any],
                   searched: SearchStageResult) -> RetrainRecord:
    from dataclasses import replace

    from slimnas.platform.stages.retrain import retrain_winners

    r = cfg.retrain
    which = "the best answer per target" if r.methods() is None else f"the winners of {', '.join(r.methods())}"
    how = "fine-tuned from the search's networks" if r.init == "supernet" else "trained from scratch"
    log.start("retrain", f"{which}, {how}, {cfg.retrain_epochs} epoch(s) each"
                         f"{' on Ray Train' if r.ray else ''} -> {cfg.search_dir / 'retrained'}")
    if r.ray:
        from slimnas.platform.runtime.ray_runtime import init_ray as start

        field = "train.distributed.address" if cfg.train.distributed.address else "ray.address"
        ray_cfg = cfg.ray.model_copy(update={"address": cfg.train.distributed.address or cfg.ray.address})
        runtime["ray_started"] = start(ray_cfg, field=field) or runtime.get("ray_started", False)
    with torch_threads(cfg.threads):
        record = retrain_winners(cfg, searched.job, cfg.search_dir, "retrain" in force, echo)
    ran = sum(m.status == "ran" for m in record.models)
    wall = log.end("retrain", "reused" if record.status == "reused" else
                   f"done, {ran} winner(s) retrained, {len(record.models) - ran} reused")
    return replace(record, wall_s=wall)


# ---------------------------------------------------------------------------------------------------- the job
def _stages(force: Iterable[str], cfg: PipelineConfig) -> set[str]:
    chosen = set(force)
    unknown = chosen - set(STAGES) - {"all"}
    if unknown:
        raise InputError(f"--force: unknown stage(s) {sorted(unknown)} (expected {', '.join(STAGES)} or all)")
    if "retrain" in chosen and not cfg.retrain.enabled:
        raise InputError("--force retrain: retrain.enabled is false (set it to retrain the winners)")
    return set(STAGES) if "all" in chosen else chosen


def _stage_names(cfg: PipelineConfig) -> tuple[str, ...]:
    """The stages this job runs (``retrain`` only when enabled)."""
    return tuple(s for s in STAGES if s != "retrain" or cfg.retrain.enabled)


class _Attempts:
    """This run's :class:`Attempt` in the job's :class:`PipelineRecord`, saved only when there is something to record
    (see :mod:`slimnas.platform.pipeline.record`)."""

    def __init__(self, path: Path, record: PipelineRecord, attempt: Attempt) -> None:
        self.path, self.record, self.attempt = path, record, attempt

    def stage(self, name: str, record: StageRecord) -> None:
        """Record a stage that has ended; saved when it made an output (a reuse is saved with the attempt's end)."""
        self.attempt.stages[name] = record
        if record.status != "reused":
            self.save()

    def save(self) -> None:
        if self.attempt not in self.record.attempts:
            self.record.attempts.append(self.attempt)
        self.record.save(self.path)

    def failed(self, exc: BaseException) -> None:
        """Record the failure, unless the run was rejected: bad input (``InputError``) before any output."""
        if isinstance(exc, InputError) and not self.attempt.did_work():
            return
        line = str(exc).strip().splitlines()
        self.attempt.status, self.attempt.ended = "failed", now()
        self.attempt.error = f"{type(exc).__name__}: {line[-1][:300]}" if line else type(exc).__name__
        try:
            self.save()
        except OSError as err:  # never hide the run's own error behind the record's
            logger.warning("could not record the failed attempt in %s: %s", self.path, err)


def run_pipeline(cfg: PipelineConfig, force: Iterable[str] = (), restore: bool = False,
                 echo: Echo = stderr_echo) -> PipelineResult:
    """Run (or reuse) train -> table -> search (-> retrain); see the module docstring."""
    from slimnas.platform.runtime.preflight import check_pipeline

    forced = _stages(force, cfg)
    started = time.perf_counter()
    if cfg.retrain.enabled and cfg.retrain.ray and not cfg.train.distributed.enabled:
        from slimnas.platform.runtime.preflight import check_ray_address

        check_ray_address(cfg.train.distributed.address, "train.distributed.address")  # retrain's Ray Train workers
    num_classes = check_pipeline(cfg, forced)
    state_path = cfg.output_dir / STATE_FILE
    record = PipelineRecord.load(state_path, cfg.name)
    before = record.stages()
    attempts = _Attempts(state_path, record, Attempt(now(), cfg.model_dump(mode="json", by_alias=True),
                                                     sorted(forced), restore))
    runtime: dict[str, Any] = {}
    log = StageLog(cfg.name, _stage_names(cfg), echo)
    try:
        trained = _train_stage(cfg, forced, log, echo, runtime)
        attempts.stage("train", trained)
        measured = _table_stage(cfg, forced, num_classes, log, echo, runtime)
        attempts.stage("table", measured.record)
        recorded = before.get("search")
        searched = _search_stage(cfg, forced, restore, log, echo,
                                 recorded if isinstance(recorded, SearchRecord) else None, runtime, trained,
                                 measured.table)
        attempts.stage("search", searched.record)
        if cfg.retrain.enabled:
            attempts.stage("retrain", _retrain_stage(cfg, forced, log, echo, runtime, searched))
        attempt = attempts.attempt
        attempt.status, attempt.ended = "finished", now()
        last = record.last_finished()
        if attempt.did_work() or last is None or last.config != attempt.config or last.started is None:
            attempts.save()  # (``started`` None: a record of an earlier slimnas, migrated on this first save)
        elif restore:  # a finished job restored: a no-op, and the record says nothing new
            echo(f"[{cfg.name}] every stage had finished: nothing to restore ({state_path} unchanged)")
        if attempt.did_work() or not (cfg.output_dir / REPORT_FILE).is_file():  # a no-op run changes no file
            retrained = record.stages().get("retrain") if cfg.retrain.enabled else None
            write_pipeline_report(cfg.output_dir, cfg.name, searched.job, table=measured.record,
                                  validation_dir=cfg.validation_dir, times=dict(log.times),
                                  extra=[retrain_section(retrained)] if isinstance(retrained, RetrainRecord) else [])
        if cfg.tracking.enabled and attempt.did_work():
            from slimnas.platform.tracking.pipeline import log_pipeline_run

            attempt.mlflow_run_id = log_pipeline_run(cfg, record.stages(), state_path, cfg.validation_dir)
            attempts.save()
    except BaseException as exc:
        attempts.failed(exc)
        raise
    finally:
        if runtime.get("ray_started"):
            import ray

            ray.shutdown()
    return PipelineResult(cfg, searched.job, record.stages(), dict(log.times), time.perf_counter() - started)
