"""A search job: slimming and the enumeration baselines, side by side, on one supernet and one latency table.

Methods are plug-ins (:mod:`slimnas.search.methods`): the job looks each name of ``methods:`` up in
:data:`slimnas.registry.METHODS` and plans its runs from the spec's declared capabilities, never from the name: a
``sweep`` method runs once for all targets, another once per target; methods that take no budget (slimming) run
first; ``early_stop`` says whether the early-stop scheduler runs for it; the spec builds the algorithm from a
:class:`~slimnas.search.MethodRequest`.

Every method sees the same evaluator (supernet weights, BN recalibrated, top-1 on the validation images), the same
latency function (the table, served by the Ray :mod:`latency actor <slimnas.latency.actor>`) and the same budget
accounting (subnet evaluations). Each candidate evaluation is a Ray Tune trial (:mod:`slimnas.platform.tune`).

One Tune experiment runs every search run of the job (``<staged folder>/tune/search``;
:func:`~slimnas.platform.tune.runner.run_phases`), in phases: the methods that take no budget (slimming), then every
other method at every target, all at once, with the budgets slimming's run gives, then the verification's extra
slimming rounds (below), one at a time. Its trials are thin calls to the job's evaluator actors, one per trial slot
(:mod:`~slimnas.platform.tune.evaluators`: each sets up once -- supernet, data -- and evaluates for every run; all are
killed when the experiment ends, also on error); each run keeps its own state file ``tune/<label>.searcher.json``.
A run's ``wall_s`` is the time from its phase's start to its last result (the runs of a phase overlap); ``eval_s`` the
sum of its evaluations' own times; the job's ``timing`` (:class:`SearchTiming`) how the time split.

Budgets (``budget: auto``): slimming runs once for the whole sweep; for each target, a baseline gets the evaluations
slimming had used when it first reached that target (so "equal budgets" is exact per target; the method whose spec
defines ``auto_budget`` says how many). NSGA-II runs once with the largest of those budgets and answers every target
from its Pareto front. A fixed ``budget: N`` gives every baseline and target N evaluations.

Winners verified on the device (the closed loop, :mod:`slimnas.search.verification`): at the end, every winner is
measured end to end on the table's backend (one call for all of them, then the replacements every answer over its
target needs, together, round by round: :func:`~slimnas.search.verification.measure_in_rounds`). A winner slower
than its target by more than ``latency.tolerance_pct`` is not reported as meeting it: a baseline takes its next best
evaluated arch that measures within the tolerance; slimming walks on along its trajectory and, past its end, slims on
one round at a time (each round a one-run phase ``<method>-verify-<n>`` of the job's Tune experiment, evaluated by its
evaluators: the verification runs as that experiment's last phase; at most ``latency.max_extra_steps``), the
extra evaluations counted in its ``evaluations`` and reported as ``extra_evaluations`` (their wall time is added to
its ``wall_s``). The measuring is one function, :func:`_measure_on_device`; ``run_search_job(measure=...)`` replaces
it (a fake device in tests). Where the table's backend cannot run (Core ML off macOS, ``torch-cuda`` without a GPU)
the job says that verification is pending and how to time the winners on the device; ``meets_target`` stays empty.

Results: for each (method, target) the winning arch, its predicted latency (table), its measured latency and whether it
meets the target, its top-1, the evaluations used (and how many the verification added) and the wall time; written to
``<output>/<name>/results.{json,csv}`` (atomically) and to MLflow (:mod:`slimnas.platform.tracking.search`). Each
answer's network is saved as it was evaluated (BatchNorm statistics recalibrated), with its model card, in
``<output>/<name>/winners/<method>@<target>ms/`` (:mod:`slimnas.platform.stages.winners`; load one with
:func:`slimnas.load_winner`). The job's ``report.md``, with ``pareto.png`` beside it, sums it up
(:mod:`slimnas.platform.stages.report`).

Staging and restore. A job runs in ``<output>/<name>.staging/`` (its Tune experiments, the searchers' state files, the
device measurements, the MLflow run id, then the results, ``results.json`` last) and swaps that folder in for
``<output>/<name>/`` only when it has finished (:class:`~slimnas.platform.runtime.staging.StagedFolder`): the previous
job's folder stays whole until then. ``restore=True`` (``--restore``) continues a killed run's staged folder, in a new
process: each search run continues from its state file (:mod:`slimnas.platform.tune.runner`; a run
that had finished is not run again), device measurements already taken are reused, and the MLflow run is logged once. A
restored run reaches the same results as an uninterrupted one: the same answer (arch, predicted latency, top-1,
evaluations) per method and target and the same slimming trajectory. Not part of that promise: wall times, the
early-stop counters (in-flight work is redone), which concurrent losers were stopped early (and so the bound recorded
for them), measured latencies (timing noise; those the killed run took are reused), and decisions that are not
reproducible anyway (early stopping's ``confident`` rule can, rarely, stop a candidate that would have won, depending on
the order concurrent trials report in; ``rule: exact`` cannot). A restore of a finished job with the same settings does
nothing; a staged run started with other settings is not continued (one line, exit 2).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slimnas.config import atomic_write_text
from slimnas.errors import InputError, SlimnasError
from slimnas.platform.runtime.ray_runtime import init_ray
from slimnas.platform.runtime.staging import StagedFolder
from slimnas.platform.stages.comparison import Interval, comparison_text, wilson_interval
from slimnas.platform.stages.search_config import SearchJobConfig, TargetsReference
from slimnas.platform.tune.multiplex import TuneOutcome, TuneRun
from slimnas.search import MethodRequest, MethodSpec, SearchAlgorithm, SlimmingSearch, method_spec
from slimnas.search.methods import auto_budget_problem
from slimnas.search.slimming import TrajectoryStep
from slimnas.search.verification import (
    ContinueRoundFn,
    MeasurementCache,
    SlimmingRun,
    Verification,
    Walk,
    measure_in_rounds,
    tolerance_limit,
    unverified,
    verify_baseline,
    verify_slimming,
)
from slimnas.search_spaces import Arch

if TYPE_CHECKING:
    from slimnas.platform.tune.runner import PhasesOutcome

__all__ = ["run_search_job", "MethodResult", "SearchJobResult", "SearchTiming", "load_supernet", "DeviceMeasure",
           "finished_job", "job_folder", "evaluation_images"]

log = logging.getLogger(__name__)

#: Measured latency (ms) of each arch on the table's device, or ``None`` when that device cannot measure here.
DeviceMeasure = Callable[[Sequence[Arch]], Sequence[float] | None]
#: Told each search run's label and live algorithm as the run starts (e.g. a progress monitor).
WatchRun = Callable[[str, SearchAlgorithm], None]


@dataclass
class MethodResult:
    """One (method, target) of a job. ``evaluations`` include ``extra_evaluations`` (spent by the verification);
    ``verification`` is ``met``, ``not met``, ``pending`` (the device cannot measure here), ``off``
    (``measure_final: false``) or ``no answer``; ``verify_steps`` counts the candidates or steps taken after the
    original answer."""

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
    meets_target: bool | None = None
    verify_steps: int = 0
    extra_evaluations: int = 0
    verification: str = ""
    verify_note: str = ""
    images: int | None = None  # the validation images top-1 was measured on (its confidence interval's n)
    eval_s: float = 0.0  # the run's evaluations' own times, summed (runs share one Tune experiment: see wall_s)

    def top1_interval(self) -> Interval | None:
        """The 95% Wilson interval of ``top1`` over ``images`` (``None`` without either)."""
        return None if self.top1 is None or not self.images else wilson_interval(self.top1, self.images)

    def meets_text(self) -> str:
        """``yes``, ``NO``, ``pending`` or ``-`` (not measured)."""
        if self.meets_target is not None:
            return "yes" if self.meets_target else "NO"
        return "pending" if self.verification == "pending" else "-"


@dataclass
class SearchTiming:
    """Where a job's search time went (``results.json``'s ``timing``; ``docs/benchmarks.md``): ``evaluations`` run
    by this process and ``eval_s``, the sum of their own times (measured inside the evaluators,
    see :mod:`~slimnas.platform.tune.trainable`); ``tune_wall_s``: the wall time of the Tune experiments that ran them
    (set-up included); ``worker_setups`` and ``setup_s``: the evaluators that built the supernet and loaded the data,
    and the seconds that took. A restored job counts what its own process ran."""

    evaluations: int = 0
    eval_s: float = 0.0
    tune_wall_s: float = 0.0
    worker_setups: int = 0
    setup_s: float = 0.0

    def add(self, experiment: PhasesOutcome) -> None:
        self.evaluations += experiment.evaluations
        self.eval_s += experiment.eval_s
        self.tune_wall_s += experiment.wall_s
        self.worker_setups += len(experiment.worker_setups)
        self.setup_s += sum(experiment.worker_setups)


@dataclass
class SearchJobResult:
    config: dict[str, Any]
    results: list[MethodResult]
    histories: dict[str, list[dict[str, Any]]]  # per method run: every evaluation (arch, latency, accuracy)
    trajectories: dict[str, list[TrajectoryStep]]  # slimming runs' trajectories
    job_dir: str
    mlflow_run_id: str | None = None
    timing: SearchTiming = field(default_factory=SearchTiming)

    @property
    def targets_reference(self) -> TargetsReference | None:
        """What relative targets were resolved from (the job config's ``targets_reference``), if they were."""
        ref = self.config.get("targets_reference")
        return None if ref is None else TargetsReference.model_validate(ref)

    def table_text(self) -> str:
        """The comparison (:func:`~slimnas.platform.stages.comparison.comparison_text`), one block per target:
        ``meets`` is yes / NO / pending / - ; ``95% CI`` top-1's Wilson interval over the validation images;
        ``best`` ``*`` the best answer meeting the target, ``~`` within noise of it; ``extra`` the evaluations
        verification added. Then where relative targets came from, and the legend."""
        from slimnas.platform.stages.targets import reference_text

        ref = self.targets_reference
        return comparison_text(self.results, lambda r: "-" if r.arch is None else str(Arch.from_dict(r.arch)),
                               notes=[] if ref is None else [reference_text(ref)])

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``results.json``)."""
        return {**asdict(self), "trajectories": {label: [step.to_dict() for step in steps]
                                                 for label, steps in self.trajectories.items()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchJobResult:
        trajectories = {label: [TrajectoryStep.from_dict(s) for s in steps]
                        for label, steps in data["trajectories"].items()}
        return cls(data["config"], [MethodResult(**r) for r in data["results"]], data["histories"], trajectories,
                   data["job_dir"], data.get("mlflow_run_id"), SearchTiming(**data.get("timing", {})))

    @classmethod
    def load(cls, path: str | Path) -> SearchJobResult:
        """A job's ``results.json``."""
        return cls.from_dict(json.loads(Path(path).read_text()))

    def to_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["method", "target_ms", "predicted_ms", "measured_ms", "meets_target", "verification",
                         "verify_steps", "top1", "top1_low95", "top1_high95", "images", "evaluations",
                         "extra_evaluations", "wall_s", "trials_stopped",
                         "batches_saved", "stop_reason", "arch"])
        for r in self.results:
            band = r.top1_interval()
            writer.writerow([r.method, r.target_ms, r.predicted_ms, r.measured_ms,
                             "" if r.meets_target is None else r.meets_target, r.verification, r.verify_steps,
                             r.top1, "" if band is None else round(band.low, 5),
                             "" if band is None else round(band.high, 5), r.images or "", r.evaluations,
                             r.extra_evaluations, round(r.wall_s, 2),
                             r.early_stop.get("trials_stopped", ""), r.early_stop.get("batches_saved", ""),
                             r.stop_reason, "" if r.arch is None else json.dumps(r.arch)])
        return buffer.getvalue()


def load_supernet(path: str):
    """The supernet of a checkpoint file, or of the latest checkpoint in a run's folder."""
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
    if not hasattr(model, "extract") or not hasattr(model, "importance"):
        raise InputError(f"supernet: {source} holds a standalone model, not a supernet")
    return model, str(source)


def evaluation_images(cfg: SearchJobConfig, img_size: int) -> int:
    """How many validation images each evaluation measures top-1 on: the evaluation trainable's choice
    (:mod:`slimnas.platform.tune.trainable`: whole batches of ``data.eval_batch_size`` until ``eval_images`` are
    reached, or the whole validation set). The ``n`` of top-1's confidence interval. Opens the data set's index only
    (no image is decoded)."""
    from slimnas.trainers import AugmentConfig, build_data

    bundle = build_data(cfg.data, AugmentConfig().resolve(cfg.data.kind), img_size)
    total = len(bundle.val.sampler)
    if cfg.eval_images is None:
        return total
    batch = bundle.val.batch_size
    return min(total, -(-cfg.eval_images // batch) * batch)


def _latency_fn(cfg: SearchJobConfig, table):
    from slimnas.latency import CalibratedPredictor
    from slimnas.latency.actor import LatencyClient, start_latency_actor

    name = f"lut-{cfg.name}"
    actor = start_latency_actor({"table": table}, name=name, detached=False, resources=cfg.ray.latency_resources)
    client = LatencyClient(actor, table="table", name=name)  # pickles as its name: reconnects after a restore
    if cfg.latency.calibration is None:
        return client.predict_many
    calibration = CalibratedPredictor.load(cfg.latency.calibration, table)
    return calibration.predict_many  # the calibrated predictor runs in the driver on the same table


def _method_specs(cfg: SearchJobConfig) -> dict[str, MethodSpec]:
    """Each method of the job, resolved and checked before any work starts (one line naming the field if not)."""
    specs = {}
    for name in cfg.methods:
        try:
            specs[name] = spec = method_spec(name)
        except InputError as exc:
            raise InputError(f"methods: {exc}") from None
        if spec.settings is not None and spec.settings not in type(cfg).model_fields:
            raise InputError(f"methods: {name!r} reads the config section {spec.settings!r}, which a search job "
                             f"does not have")
    if cfg.budget == "auto" and (problem := auto_budget_problem(cfg.methods)):
        raise InputError(f"budget: {problem}")
    return specs


def _options(cfg: SearchJobConfig, spec: MethodSpec) -> dict[str, Any]:
    """The fields of the config section a method reads (its ``settings``), e.g. ``slimming.mb3d_removal``."""
    return {} if spec.settings is None else getattr(cfg, spec.settings).model_dump(mode="json")


@dataclass
class _Run:
    """One search run of a job (a Tune experiment; for slimming, plus its verification rounds)."""

    method: str
    label: str
    algorithm: SearchAlgorithm
    targets: list[float]
    wall_s: float
    early_stop: dict[str, int]
    early_stopped: set[int] = field(default_factory=set)
    stoppable: bool = True  # the method can be stopped early (its spec's ``early_stop``)
    eval_seconds: dict[int, float] = field(default_factory=dict)  # candidate -> its evaluation's own time


#: The Tune experiment (in ``<staged folder>/tune/``) that runs all of a job's search runs, phase by phase
#: (:func:`~slimnas.platform.tune.runner.run_phases`); each run keeps its state file ``tune/<label>.searcher.json``.
_EXPERIMENT = "search"


#: Config sections that do not change a job's results (a restore may change them).
_NEUTRAL_SECTIONS = {"ray", "tracking"}
_RESULTS = "results.json"


def job_folder(cfg: SearchJobConfig) -> StagedFolder:
    """The job's folder (``<output>/<name>``) and its staged run (see the module docstring)."""
    return StagedFolder(cfg.job_dir(), _RESULTS)


def _settings(config: dict[str, Any]) -> dict[str, Any]:
    """The settings that make a job's results (JSON round trip, so stored and fresh configs compare equal)."""
    return json.loads(json.dumps({k: v for k, v in config.items() if k not in _NEUTRAL_SECTIONS}))


def _difference(stored: dict[str, Any], wanted: dict[str, Any]) -> str:
    from slimnas.platform.tracking.store import flatten

    a, b = flatten(stored), flatten(wanted)
    key = next((k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)), None)
    return "none" if key is None else f"{key}: {a.get(key, '-')} -> {b.get(key, '-')}"


def finished_job(cfg: SearchJobConfig) -> SearchJobResult | None:
    """The finished job in ``cfg``'s folder when it was made with ``cfg``'s settings and no run of it is staged: what
    ``restore`` returns without doing anything. ``None`` otherwise."""
    folder = job_folder(cfg)
    folder.settle()
    if folder.has_staged_run() or not folder.finished():
        return None
    try:
        job = SearchJobResult.load(folder.final / _RESULTS)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    same = _settings(job.config) == _settings(cfg.model_dump(mode="json"))
    return job if same else None


def _begin(cfg: SearchJobConfig, restore: bool, echo: Callable[[str], None]) -> tuple[StagedFolder, bool]:
    """Check that a restore can continue the staged run (before any work); the folder and whether it continues."""
    folder = job_folder(cfg)
    folder.settle()
    wanted = _settings(cfg.model_dump(mode="json"))
    staged = folder.staged_settings() if restore else None
    if staged is not None and staged != wanted:
        raise InputError(f"--restore: the unfinished run in {folder.staging} was started with other settings "
                         f"({_difference(staged, wanted)}); run without --restore to discard it and start over")
    if restore and staged is None:
        echo(f"[search] nothing to restore in {folder.staging}: starting the job")
    return folder, staged is not None


def run_search_job(cfg: SearchJobConfig, restore: bool = False,
                   echo: Callable[[str], None] = lambda line: log.info(line),
                   measure: DeviceMeasure | None = None, watch: WatchRun | None = None) -> SearchJobResult:
    """Run (or, with ``restore``, continue) a search job. See the module docstring.

    ``measure``: the device the winners are verified on (archs -> measured ms, or ``None``: cannot measure here);
    default: the table's backend, here (:func:`_measure_on_device`). ``watch``: told each run's label and algorithm
    as it starts (:class:`~slimnas.platform.stages.progress.SearchMonitor.watch`).
    """
    from slimnas.latency import LatencyTable
    from slimnas.platform.tune import run_phases
    from slimnas.platform.tune.evaluators import EvaluatorPool, evaluator_slots
    from slimnas.platform.tune.trainable import (
        THIN_TRIAL_RESOURCES,
        evaluate_on_evaluator,
        evaluation_payload,
        supernet_evaluation,
    )
    from slimnas.trainers import check_data

    if restore and (done := finished_job(cfg)) is not None:
        echo(f"[search] job '{cfg.name}' had finished: nothing to restore ({done.job_dir}/{_RESULTS} unchanged)")
        return done
    specs = _method_specs(cfg)
    folder, continuing = _begin(cfg, restore, echo)
    table = LatencyTable.load(cfg.latency.table)
    supernet, checkpoint = load_supernet(cfg.supernet)
    space = supernet.space
    if table.space.to_dict() | {"name": ""} != space.to_dict() | {"name": ""}:
        raise InputError(f"latency.table: measured for space {table.space.name!r}, the supernet's is {space.name!r}")
    check_data(cfg.data)
    images = evaluation_images(cfg, space.img_size)
    folder.begin(_settings(cfg.model_dump(mode="json")), continuing, echo=lambda line: echo(f"[search] {line}"))
    job_dir, work = folder.final, folder.staging
    init_ray(cfg.ray, log_to_driver=False)
    payload = evaluation_payload(supernet, cfg.data.model_dump(), cfg.eval_images, key=f"{checkpoint}:{cfg.name}")
    slot_resources = {"cpu": cfg.ray.cpus_per_trial, "gpu": cfg.ray.gpus_per_trial}
    evaluators = EvaluatorPool(supernet_evaluation, payload, evaluator_slots(
        cfg.ray.cpus_per_trial, cfg.ray.gpus_per_trial, cfg.ray.max_concurrent), slot_resources,
        prefix=f"slimnas-eval-{cfg.name}")
    evaluators.start()  # they set up (supernet, data) while the latency service and Tune start
    try:
        latency_fn = _latency_fn(cfg, table)
        importance = supernet.importance() if any(s.needs_importance for s in specs.values()) else None
    except BaseException:
        evaluators.close()
        raise
    runs: list[_Run] = []  # in plan order (the order of the results)
    run_options = {"rule": cfg.early_stop.rule, "z": cfg.early_stop.z, "resources": THIN_TRIAL_RESOURCES,
                   "max_concurrent_trials": cfg.ray.max_concurrent, "restore": continuing}

    def started(label: str, algorithm: SearchAlgorithm) -> None:
        echo(f"[search] {label}: running")
        if watch is not None:
            watch(label, algorithm)

    def finished(outcome: TuneOutcome) -> None:
        echo(f"[search] {outcome.label}: {outcome.algorithm.evaluations} evaluations, done after "
             f"{outcome.wall_s:.1f} s ({outcome.algorithm.stop_reason})")

    def planned(method: str, label: str, spec: MethodSpec, targets: list[float], budget: int | None) -> TuneRun:
        request = MethodRequest(space, latency_fn, tuple(targets), budget, cfg.seed,
                                importance if spec.needs_importance else None, _options(cfg, spec))
        algorithm = spec.build(request)
        runs.append(_Run(method, label, algorithm, targets, 0.0, {}, stoppable=spec.early_stop))
        return TuneRun(label, algorithm, cfg.early_stop.enabled and spec.early_stop)

    def phase(methods: list[str], budgets: dict[float, int]) -> list[TuneRun]:
        out = []
        for method in methods:
            spec = specs[method]
            if spec.sweep:  # one run answers the whole sweep (given the largest of the targets' budgets)
                out.append(planned(method, method, spec, list(cfg.targets),
                                   max(budgets.values()) if spec.uses_budget else None))
            else:
                out += [planned(method, f"{method}@{t:g}ms", spec, [t], budgets[t] if spec.uses_budget else None)
                        for t in cfg.targets]
        return out

    # Two phases: the methods that take no budget (in config order), then the others, given a fixed budget or the
    # budgets ('auto') that the first method of phase one that defines 'auto' derives from its run. See _EXPERIMENT.
    phases = [[m for m in cfg.methods if not specs[m].uses_budget], [m for m in cfg.methods if specs[m].uses_budget]]

    def on_device(archs: Sequence[Arch]) -> list[float] | None:
        return _measure_on_device(table, archs, echo)

    def continue_round(job_run: _Run) -> ContinueRoundFn:
        """Slimming's extra rounds: a one-run phase of the job's experiment each (the same evaluators evaluate them)."""
        def go(algorithm: SlimmingSearch, index: int) -> SlimmingSearch:
            extra = verifier.round(TuneRun(f"{job_run.label}-verify-{index}", algorithm,
                                           job_run.stoppable and cfg.early_stop.enabled))
            job_run.wall_s += extra.wall_s
            for key, value in extra.early_stop.items():
                job_run.early_stop[key] = job_run.early_stop.get(key, 0) + value
            job_run.early_stopped |= set(extra.searcher.early_stopped)
            job_run.eval_seconds = {**job_run.eval_seconds, **extra.searcher.eval_seconds}
            return extra.algorithm
        return go

    verifier = _VerificationPhase(lambda: _verify_winners(
        runs, cfg, _remembered(measure or on_device, work / "measurements.json"), continue_round, echo,
        pending_line=lambda: _pending_line(table, job_dir)))

    def plan(done: dict[str, TuneOutcome]) -> list[TuneRun] | None:
        """The next phase's runs (every run planned before has finished: ``done``); after the search runs, the
        verification's extra rounds, one at a time; ``None`` at the end."""
        planned_methods = {r.method for r in runs}
        remaining = [methods for methods in phases if not set(methods) <= planned_methods]
        if not remaining:
            if not verifier.started:
                for job_run in runs:
                    outcome = done[job_run.label]
                    job_run.wall_s, job_run.early_stop = outcome.wall_s, dict(outcome.early_stop)
                    job_run.early_stopped = set(outcome.searcher.early_stopped)
                    job_run.eval_seconds = dict(outcome.searcher.eval_seconds)
            return verifier.next_phase()
        if isinstance(cfg.budget, int):
            return phase(remaining[0], {t: cfg.budget for t in cfg.targets})
        auto = next((r for r in runs if specs[r.method].auto_budget is not None), None)
        budgets: dict[float, int] = {}
        if auto is not None:  # its runs have finished: each answers its targets
            answers = {t: done[r.label].algorithm for r in runs if r.method == auto.method for t in r.targets}
            budgets = {t: specs[auto.method].auto_budget(answers[t], t) for t in cfg.targets}
        return phase(remaining[0], budgets)

    try:
        experiment = run_phases(plan, evaluate_on_evaluator, _EXPERIMENT, work / "tune", on_start=started,
                                on_finish=lambda outcome: (finished(outcome), verifier.finished(outcome)),
                                slots=evaluators.names, slots_ready=evaluators.ready, **run_options)
        verified = verifier.result()
        timing = SearchTiming()
        timing.add(experiment)
        echo(f"[search] {timing.evaluations} evaluations in one Tune experiment: {timing.eval_s:.1f} s of "
             f"evaluating (their own times, summed over {evaluators.count} evaluator(s)) in "
             f"{timing.tune_wall_s:.1f} s ({timing.worker_setups} evaluator set-up(s), {timing.setup_s:.1f} s)")
        results, histories, trajectories = _results(runs, verified, images)
        job = SearchJobResult(cfg.model_dump(), results, histories, trajectories, str(job_dir), timing=timing)
        _save_winners(job, evaluators.networks, supernet, checkpoint, table, cfg.latency.table, work, echo)
    finally:
        evaluators.close()
    _write_report(job, work)
    if cfg.tracking.enabled:
        job.mlflow_run_id = _log_once(work / "mlflow-run.json",
                                      lambda: _log_tracking(job, cfg, supernet, table, work, echo))
    atomic_write_text(work / "results.csv", job.to_csv())
    atomic_write_text(work / _RESULTS, json.dumps({**job.to_dict(), "supernet_checkpoint": checkpoint}, indent=1))
    folder.commit()  # results.json (written last) completes the staged folder: swap it in
    return job


def _save_winners(job: SearchJobResult, networks: Callable[[list[dict[str, Any]]], list[Any]], supernet: Any,
                  checkpoint: str, table: Any, table_path: str, work: Path, echo: Callable[[str], None]) -> None:
    """Every winner saved as the network that was evaluated (built again by the job's evaluators: ``networks``), with
    its model card, in ``work/winners/``."""
    from slimnas.platform.stages.winners import save_winners

    save_winners(job.results, work, networks=networks, supernet=supernet, checkpoint=checkpoint, table=table,
                 table_path=table_path, echo=echo)


def _write_report(job: SearchJobResult, work: Path) -> None:
    """The job's ``report.md`` and ``pareto.png`` (:mod:`slimnas.platform.stages.report`) in the staged folder."""
    from slimnas.platform.stages.report import write_search_report

    write_search_report(job, work)


def _log_tracking(job: SearchJobResult, cfg: SearchJobConfig, supernet: Any, table: Any, work: Path,
                  echo: Callable[[str], None]) -> str:
    """Log ``job`` to MLflow from the staged folder ``work`` (its winners, ``pareto.png``, ``report.md``)."""
    from dataclasses import replace

    from slimnas.platform.tracking.search import log_search_job

    return log_search_job(replace(job, job_dir=str(work)), cfg, supernet, table, echo=echo)


def _log_once(path: Path, log_run: Callable[[], str]) -> str:
    """The MLflow run id recorded at ``path`` by a killed run of this job, else ``log_run()``'s, recorded there."""
    if path.is_file():
        return json.loads(path.read_text())["mlflow_run_id"]
    run_id = log_run()
    atomic_write_text(path, json.dumps({"mlflow_run_id": run_id}))
    return run_id


def _remembered(measure: DeviceMeasure, path: Path) -> DeviceMeasure:
    """``measure`` with its results kept at ``path`` (arch JSON -> ms): a restored job reuses the measurements of the
    killed run, so its verification takes the same decisions."""
    known: dict[str, float] = json.loads(path.read_text()) if path.is_file() else {}

    def go(archs: Sequence[Arch]) -> Sequence[float] | None:
        todo = [a for a in archs if a.to_json() not in known]
        if todo:
            values = measure(todo)
            if values is None:
                return None
            known.update({a.to_json(): float(v) for a, v in zip(todo, values)})
            atomic_write_text(path, json.dumps(known))
        return [known[a.to_json()] for a in archs]
    return go


def _results(runs: list[_Run], verified: dict[tuple[str, float], Verification], images: int | None = None
             ) -> tuple[list[MethodResult], dict[str, list[dict[str, Any]]], dict[str, list[TrajectoryStep]]]:
    """Each (method, target)'s result, and each run's evaluations and (slimming) trajectory, after verification;
    ``images``: the validation images each top-1 was measured on."""
    results, histories, trajectories = [], {}, {}
    for run in runs:
        algorithm = run.algorithm
        histories[run.label] = [{"arch": e.arch.to_dict(), "latency_ms": e.latency_ms, "accuracy": e.accuracy,
                                 "early_stopped": e.candidate.id in run.early_stopped,
                                 "eval_s": run.eval_seconds.get(e.candidate.id)} for e in algorithm.history]
        if isinstance(algorithm, SlimmingSearch):
            trajectories[run.label] = list(algorithm.trajectory)
        for target in run.targets:
            v = verified[(run.label, target)]
            best = v.answer
            results.append(MethodResult(
                run.method, target, None if best is None else best.arch.to_dict(),
                None if best is None else best.latency_ms, None if best is None else best.accuracy, v.evaluations,
                run.wall_s, v.measured_ms, early_stop=dict(run.early_stop), stop_reason=algorithm.stop_reason,
                meets_target=v.meets_target, verify_steps=v.verify_steps, extra_evaluations=v.extra_evaluations,
                verification=v.state, verify_note=v.note, images=None if best is None else images,
                eval_s=round(sum(run.eval_seconds.values()), 3)))
    return results, histories, trajectories


class _VerificationPhase:
    """The verification (:func:`_verify_winners`) as the last phase of the job's Tune experiment.

    It runs in a thread, started when the plan reaches it (every search run has finished; Tune's loop waits in the
    plan meanwhile, its evaluators idle). Each extra slimming round it asks for (:meth:`round`) is handed to the
    experiment as a one-run phase (:meth:`next_phase`, called by the plan in Tune's thread), evaluated by the evaluators
    already set up, and the thread waits for the run's outcome (:meth:`finished`, the experiment's ``on_finish``)."""

    def __init__(self, verify: Callable[[], dict[tuple[str, float], Verification]]) -> None:
        self._verify = verify
        self._asks: queue.Queue[TuneRun | None] = queue.Queue()
        self._waiting: dict[str, tuple[threading.Event, list[TuneOutcome]]] = {}
        self._thread: threading.Thread | None = None
        self._verified: dict[tuple[str, float], Verification] | None = None
        self._error: BaseException | None = None

    @property
    def started(self) -> bool:
        return self._thread is not None

    def next_phase(self) -> list[TuneRun] | None:
        """The next extra round to evaluate (a one-run phase), or ``None`` once the verification has ended."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._main, name="slimnas-verification", daemon=True)
            self._thread.start()
        run = self._asks.get()
        return None if run is None else [run]

    def _main(self) -> None:
        try:
            self._verified = self._verify()
        except BaseException as exc:  # noqa: BLE001 - raised again in the driver's thread by result()
            self._error = exc
        finally:
            self._asks.put(None)

    def round(self, run: TuneRun) -> TuneOutcome:
        """Evaluate ``run`` in the experiment (called in the verification's thread); its outcome."""
        done: tuple[threading.Event, list[TuneOutcome]] = (threading.Event(), [])
        self._waiting[run.label] = done
        self._asks.put(run)
        done[0].wait()
        return done[1][0]

    def finished(self, outcome: TuneOutcome) -> None:
        waiting = self._waiting.pop(outcome.label, None)
        if waiting is not None:
            waiting[1].append(outcome)
            waiting[0].set()

    def result(self) -> dict[tuple[str, float], Verification]:
        """The verification's answers (its error, raised here); after the experiment has ended."""
        if self._thread is not None:
            self._thread.join()
        if self._error is not None:
            raise self._error
        if self._verified is None:
            raise SlimnasError("the verification did not run: the search experiment ended before its last phase")
        return self._verified


class _Pending(Exception):
    """The device cannot measure here."""


def _verify_winners(runs: list[_Run], cfg: SearchJobConfig, measure: DeviceMeasure,
                    continue_round: Callable[[_Run], ContinueRoundFn], echo: Callable[[str], None],
                    pending_line: Callable[[], str]) -> dict[tuple[str, float], Verification]:
    """The closed loop over every (run, target) (see the module docstring); keyed by (run label, target)."""
    lat = cfg.latency
    if not lat.measure_final:
        echo("[search] winners not measured (latency.measure_final: false): meets_target stays empty")
        return {(r.label, t): unverified(r.algorithm, t, "off") for r in runs for t in r.targets}

    def device(archs: Sequence[Arch]) -> Sequence[float]:
        values = measure(archs)
        if values is None:
            raise _Pending
        return values

    cache = MeasurementCache(device)
    winners = {a.arch.to_json(): a.arch for r in runs for t in r.targets if (a := r.algorithm.answer(t)) is not None}
    try:
        cache.measure(list(winners.values()))
    except _Pending:
        echo(pending_line())
        return {(r.label, t): unverified(r.algorithm, t, "pending") for r in runs for t in r.targets}
    # the replacements every answer over its target needs, measured together, round by round (one session each)
    # (a probe walk of slimming gets a SlimmingRun of its own that cannot evaluate: it only says what it would time)
    measure_in_rounds([_walk(run, target, lat.tolerance_pct) for run in runs for target in run.targets], cache)
    out: dict[tuple[str, float], Verification] = {}
    extra = 0
    for run in runs:
        if isinstance(run.algorithm, SlimmingSearch):
            loop = SlimmingRun(run.algorithm, continue_round(run), lat.max_extra_steps)
            for target in sorted(run.targets, reverse=True):  # loosest first: a tighter walk starts further on
                out[(run.label, target)] = _walk(run, target, lat.tolerance_pct, loop)(cache)
            run.algorithm = loop.algorithm
            extra += loop.extra_evaluations
        else:
            for target in run.targets:
                out[(run.label, target)] = _walk(run, target, lat.tolerance_pct)(cache)
        for target in run.targets:
            _echo_verification(echo, run, out[(run.label, target)], lat.tolerance_pct)
    met = [v for v in out.values() if v.meets_target]
    echo(f"[search] verified on the device ({len(cache.measured)} networks measured): {len(met)} answer(s) meet "
         f"their target within {lat.tolerance_pct:g}% ({sum(bool(v.verify_steps) for v in met)} after a "
         f"replacement), {sum(v.meets_target is False for v in out.values())} do not; {extra} extra evaluations")
    return out


def _walk(run: _Run, target: float, tolerance_pct: float, loop: SlimmingRun | None = None) -> Walk:
    """``run``'s verification walk at ``target``: slimming's along ``loop`` (default: a new one that cannot evaluate),
    a baseline's through its ranked candidates."""
    if isinstance(run.algorithm, SlimmingSearch):
        along = loop if loop is not None else SlimmingRun(run.algorithm)
        return partial(verify_slimming, along, target, tolerance_pct=tolerance_pct)
    return partial(verify_baseline, run.algorithm, target, tolerance_pct=tolerance_pct, stopped=run.early_stopped)


def _echo_verification(echo: Callable[[str], None], run: _Run, v: Verification, tolerance_pct: float) -> None:
    where = f"[search] {run.method} @ {v.target_ms:g} ms"
    if v.meets_target is False:
        echo(f"{where}: NOT met on the device: {v.note}")
    elif v.meets_target and v.verify_steps:
        taken = (f"{v.verify_steps} step(s) on along its trajectory (+{v.extra_evaluations} evaluations)"
                 if isinstance(run.algorithm, SlimmingSearch) else f"its next arch (#{v.verify_steps + 1} by accuracy)")
        echo(f"{where}: the predicted answer measured over {tolerance_limit(v.target_ms, tolerance_pct):.4g} ms; "
             f"{taken} measures {v.measured_ms:.4g} ms")


def _measure_on_device(table, archs: Sequence[Arch], echo: Callable[[str], None] = log.info) -> list[float] | None:
    """Each arch's latency (ms) measured end to end on the table's backend and settings, under the table's own
    measurement protocol (:mod:`slimnas.latency.protocol`: the statistic the table predicts, interleaved passes,
    disturbed passes re-measured); ``None`` when that backend cannot run here. The one place a job times networks.

    The first network is timed for one pass and discarded: the process has just handed the cores back from Tune's
    workers, and the first timings after that ran up to 1.9x slow. Latencies are brought to the machine speed the
    table was built at (its reference networks, :mod:`slimnas.latency.reference`), the speed its predictions and the
    targets derived from them belong to.
    """
    from slimnas.latency.validate import backend_for, measure_networks

    backend = backend_for(table)
    if backend.unavailable_reason():
        return None
    measured = measure_networks(table, backend, list(archs), warmup=True)
    if measured and measured[0].speed != 1.0:
        echo(f"[search] measured {len(measured)} network(s) on {table.meta.backend}; the reference networks took "
             f"x{measured[0].speed:.3f} their time at the table's build, so latencies are reported divided by it")
    if measured and measured[0].attempts > 1:
        echo(f"[search] the machine was disturbed for most of a measurement of the winners: measured "
             f"{measured[0].attempts} times, the most settled attempt kept")
    if measured and measured[0].unsettled:
        echo(f"[search] every attempt was disturbed ({measured[0].unsettled}): these measured latencies, and which "
             f"winners meet their targets, say more about the machine than about the networks")
    return [m.value for m in measured]


def _pending_line(table, job_dir: Path) -> str:
    """What the job says when the table's device cannot measure here: why, and how to verify on the device."""
    from slimnas.latency.validate import backend_for

    meta = table.meta
    reason = backend_for(table).unavailable_reason() or "the measuring device is not available"
    line = (f"[search] verification pending: the winners were not measured on {meta.backend} ({reason}); "
            f"meets_target stays empty. Each winner's arch is in {job_dir / 'results.json'} and in its MLflow child "
            f"run's arch.json: time those networks on the device")
    if meta.backend == "coreml":
        line += (". Measurements of the table's parts come back through the Core ML bundle: `slimnas lut build "
                 "--backend coreml --bundle DIR`, time DIR on the device, then `slimnas lut import-measurements "
                 "--bundle DIR --measurements FILE --out TABLE`")
    return line
