"""Running search runs as one Ray Tune experiment (each candidate evaluation is a trial).

:func:`run_phases` runs the runs a plan gives, phase by phase, in one experiment
(:class:`~slimnas.platform.tune.multiplex.MultiplexSearcher`): a search job's every (method, target) shares the
experiment and the job's evaluator actors (``slots``; :mod:`~slimnas.platform.tune.evaluators`), which hold the
supernet and data, instead of paying an experiment's set-up each; Tune keeps one idle (thin) trial actor per evaluator
across round barriers (:func:`_trial_actors_kept`). :func:`run_tune` runs one algorithm (a plan of one run;
tests) with whatever trainable it is given.

The trainable gets ``config = {"candidate_id", "arch", "latency_ms", "method", "run"}`` (and ``"evaluator"``, with
``slots``) and reports, after each
validation batch, ``correct``, ``seen`` and ``total`` (images), ``batches_done``, ``batches_total`` and ``eval_s`` (the
evaluation's own time so far), and at the end the same plus ``accuracy``. (Tune's metric for the searcher is
``seen``, present in every report; the searcher itself reads ``accuracy``, or the bound a trial was stopped on.)

``restore=True`` continues a killed driver's experiment, in this or a new process, from the runs' state files
(``<storage>/<label>.searcher.json``, written after every ask and tell; see
:mod:`~slimnas.platform.tune.searcher`): a run whose file says it had finished is not run again (its algorithm is
loaded from the file), an unfinished run continues from it and evaluates again the candidates that were in flight.
If every run had finished, no Tune experiment starts. Otherwise the continuation is a new Tune experiment in the same
folder: Tune's own record of the killed experiment holds nothing the state files lack, and restoring it
(``Tuner.restore``) would unpickle a searcher whose runs, planned phase by phase, the new driver has to rebuild anyway.

The algorithms passed in (by ``plan``) must be built as the first run built them (same method, space, targets, seed,
budget); their state is then replaced by the saved one. Of Tune's per-result loggers only the JSON one runs (Tune reads
its ``result.json`` at the end; ``TUNE_DISABLE_AUTO_CALLBACK_LOGGERS`` around ``fit`` drops the CSV and TensorBoard
ones): the results that matter are in the state files.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.logger import JsonLoggerCallback

from slimnas.errors import SlimnasError
from slimnas.platform.tune.multiplex import MultiplexSearcher, Plan, TuneOutcome, TuneRun
from slimnas.platform.tune.scheduler import EarlyStopScheduler
from slimnas.search import SearchAlgorithm

__all__ = ["run_tune", "run_phases", "TuneOutcome", "TuneRun", "PhasesOutcome"]

log = logging.getLogger(__name__)


@dataclass
class PhasesOutcome:
    """The finished runs (``runs``: label -> :class:`TuneOutcome`, in plan order) and the experiment's figures:
    ``wall_s`` (the Tune experiment, its set-up included; 0 when every run had finished before), ``evaluations`` and
    ``eval_s`` (the evaluations run in this experiment and the sum of their own times) and ``worker_setups`` (seconds
    each evaluator (or fresh worker) took to build the supernet and load the data)."""

    runs: dict[str, TuneOutcome] = field(default_factory=dict)
    wall_s: float = 0.0
    evaluations: int = 0
    eval_s: float = 0.0
    worker_setups: tuple[float, ...] = ()


def run_phases(
    plan: Plan,
    trainable: Callable[[dict[str, Any]], None],
    name: str,
    storage_path: str | os.PathLike,
    *,
    rule: str = "confident",
    z: float = 3.0,
    resources: dict[str, float] | None = None,
    max_concurrent_trials: int | None = None,
    restore: bool = False,
    on_start: Callable[[str, SearchAlgorithm], None] | None = None,
    on_finish: Callable[[TuneOutcome], None] | None = None,
    slots: Sequence[str] = (),
    slots_ready: Callable[[float], Collection[str]] | None = None,
) -> PhasesOutcome:
    """Run (or, with ``restore``, continue) the runs of ``plan`` as the Tune experiment ``storage_path/name``; state
    files in ``storage_path``. ``slots``: the names of the evaluator actors the trials call (``config["evaluator"]``,
    one trial per evaluator at a time; :mod:`~slimnas.platform.tune.evaluators`), given to a trial only once
    ``slots_ready(wait_s)`` names them (waiting up to ``wait_s`` for a first one). See the module docstring and
    :class:`MultiplexSearcher`."""
    # Tune's newer console output prints experiment tables even at verbose=0; the legacy reporter honours it.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    storage = Path(storage_path).resolve()
    storage.mkdir(parents=True, exist_ok=True)
    experiment = storage / name
    searcher = MultiplexSearcher(plan, storage, str(experiment), restore=restore,
                                 max_concurrent=max_concurrent_trials, on_start=on_start, on_finish=on_finish,
                                 slots=slots, slots_ready=slots_ready)
    outcome = PhasesOutcome()
    if searcher.advance():
        started = time.perf_counter()
        shutil.rmtree(experiment, ignore_errors=True)  # a killed run's experiment: continued from the state files
        tuner = tune.Tuner(
            tune.with_resources(trainable, resources or {"cpu": 1}),
            tune_config=tune.TuneConfig(search_alg=searcher, scheduler=EarlyStopScheduler(searcher, rule=rule, z=z),
                                        num_samples=-1, reuse_actors=True),
            run_config=tune.RunConfig(name=name, storage_path=str(storage), verbose=0,
                                      callbacks=[JsonLoggerCallback()]),  # Tune's result record reads result.json
        )
        with _env("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1"), _trial_actors_kept(len(slots)):
            tuner.fit()  # (no CSV and TensorBoard loggers)
        outcome.wall_s = time.perf_counter() - started
        outcome.evaluations, outcome.eval_s = len(searcher.told_here), sum(searcher.told_here)
        outcome.worker_setups = tuple(searcher.worker_setups.values())
    if not searcher.finished:  # Tune ends an experiment only when the searcher says FINISHED (or it was stopped)
        raise SlimnasError(f"{name}: the Tune experiment ended with search runs unfinished "
                           f"({', '.join(searcher.unfinished()) or 'runs not yet planned'}); rerun with --restore to "
                           f"continue")
    outcome.runs = searcher.outcomes()
    return outcome


def run_tune(
    algorithm: SearchAlgorithm,
    trainable: Callable[[dict[str, Any]], None],
    name: str,
    storage_path: str | os.PathLike,
    *,
    early_stop: bool = True,
    rule: str = "confident",
    z: float = 3.0,
    resources: dict[str, float] | None = None,
    max_concurrent_trials: int | None = None,
    restore: bool = False,
) -> TuneOutcome:
    """Run (or, with ``restore``, continue) ``algorithm`` as the Tune experiment ``storage_path/name`` (its state
    file ``storage_path/<name>.searcher.json``)."""
    def plan(done: dict[str, TuneOutcome]) -> list[TuneRun] | None:
        return None if done else [TuneRun(name, algorithm, early_stop)]

    return run_phases(plan, trainable, name, storage_path, rule=rule, z=z, resources=resources,
                      max_concurrent_trials=max_concurrent_trials, restore=restore).runs[name]


@contextlib.contextmanager
def _trial_actors_kept(count: int) -> Iterator[None]:
    """Inside the block, Tune keeps up to ``count`` trial actors, one per evaluator (``count`` 0: Tune's own policy).

    Two rules of Tune's actor management (Ray 2.60, ``TuneController``) put every trial into one actor, one at a time:
    its actor cache (``_actor_cache``, an ``_ObjectCache(may_keep_one=True)``) keeps as many idle actors as trials
    are staged, and one when none is, so at every round barrier (the searcher waits for a round's results) all idle
    trial actors but one are removed; and a trial waiting for its new actor takes any cached actor that frees up first
    (``_maybe_reuse_cached_actor``), removing its own unused -- an evaluation (~0.5 s) is shorter than an actor's
    start, so the second actor never got to run. Here idle actors are kept up to ``count``, and a trial whose own
    actor is on its way waits for it (a trial not yet given one still takes a cached actor). Safe for thin trials
    (:mod:`~slimnas.platform.tune.trainable`): they reserve no CPU, so a kept actor holds nothing another trial needs.
    Where Ray's internals differ, Tune's own policy stays (slower, not wrong), with a warning."""
    try:
        from ray.tune.execution import tune_controller
        from ray.tune.utils.object_cache import _ObjectCache
    except ImportError:
        tune_controller = _ObjectCache = None
    controller = getattr(tune_controller, "TuneController", None)
    reuse = getattr(controller, "_maybe_reuse_cached_actor", None)
    if count < 1 or reuse is None or getattr(tune_controller, "_ObjectCache", None) is not _ObjectCache:
        if count >= 1:
            log.warning("Ray Tune's actor management is not what slimnas expects (Ray %s): trials may run one at a "
                        "time", _ray_version())
        yield
        return

    class _KeepIdle(_ObjectCache):
        def cache_object(self, key: Any, obj: Any) -> bool:
            if self._num_cached_objects < count:
                self._cached_objects[key].append(obj)
                self._num_cached_objects += 1
                return True
            return super().cache_object(key, obj)

        def flush_cached_objects(self, force_all: bool = False) -> Iterator[Any]:
            if force_all or self._num_cached_objects > count:
                yield from super().flush_cached_objects(force_all=force_all)

    def wait_for_own_actor(self: Any, trial: Any) -> bool:
        if trial in getattr(self, "_trial_to_actor", {}) and trial not in getattr(self, "_resetting_trials", ()):
            return False  # its own actor is being started: keep the cached one for the next trial
        return reuse(self, trial)

    tune_controller._ObjectCache = _KeepIdle
    controller._maybe_reuse_cached_actor = wait_for_own_actor
    try:
        yield
    finally:
        tune_controller._ObjectCache = _ObjectCache
        controller._maybe_reuse_cached_actor = reuse


def _ray_version() -> str:
    import ray

    return ray.__version__


@contextlib.contextmanager
def _env(key: str, value: str) -> Iterator[None]:
    """``os.environ[key] = value`` inside the block (unless the user set it), as it was after."""
    old = os.environ.get(key)
    if old is None:
        os.environ[key] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
