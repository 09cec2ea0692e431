"""Several search runs in one Ray Tune experiment: a ``Searcher`` that routes each trial to the run it evaluates for.

A search job compares methods at several targets: every (method, target) is a search run with its own algorithm.
Started as a Tune experiment each, every run paid Tune's experiment set-up and new trial actors (new worker processes
that import torch, build the supernet and load the data) -- ~6-7 s per run, against ~0.4 s per evaluation. Here the
runs share one experiment, whose trials call the job's evaluator actors (:mod:`~slimnas.platform.tune.evaluators`,
the supernet and data loaded once each) for every evaluation of every run; concurrent runs also fill the evaluators a
single run's round barrier leaves idle.

Runs come in **phases** given by ``plan(done)``: called with the outcomes of the finished runs, it returns the next
phase's runs (a list, possibly empty) or ``None`` when there are no more. A search job's first phase is the methods
that take no budget (slimming), the second the baselines, whose equal budgets come from slimming's run; with a fixed
budget, one phase holds every run. A phase is planned once every run of the phases before it has finished.

Each run is an :class:`~slimnas.platform.tune.searcher.AskTellSearcher` with its own state file
(``<storage>/<label>.searcher.json``); ``suggest`` asks the unfinished runs in turn (round robin), so every run keeps
its own round barrier while the others use the free trial slots, and tags the config with ``run``.
``on_trial_complete`` tells the run the trial belongs to. The early-stop scheduler asks :meth:`run_for` which run
decides on a trial (``None`` for a run whose method is not stopped early). ``max_concurrent`` limits the trials in
flight across all runs (Tune's resources limit them too).

Evaluators. With ``slots`` (the names of the job's evaluator actors, :mod:`~slimnas.platform.tune.evaluators`) each
config handed out also names a free one (``config["evaluator"]``) among those ``slots_ready()`` says can take one,
held until Tune reports the trial complete (finished, stopped early or errored); with none free ``suggest`` waits.
So at most one trial uses an evaluator at a time, and the trials in flight are at most the slots. While no trial is
in flight and no evaluator is ready yet (the job's start: Ray is still starting their processes), ``suggest`` waits
for the first up to :data:`READY_WAIT_S` (``slots_ready(wait_s)``) instead of answering ``None`` at once: with
nothing in flight Tune polls a searcher that answered ``None`` once a second (``TuneController._update_trial_queue``,
Ray 2.60), which cost the job's start ~2 s.

Restore: a run's state is its state file, written after every ask and tell (see
:mod:`~slimnas.platform.tune.searcher`); with ``restore`` a run that has one continues from it (a finished run does
nothing, candidates in flight at the kill are evaluated again), so :mod:`~slimnas.platform.tune.runner` continues a
killed experiment as a new one. Nothing of this searcher needs Tune's pickle: its ``tuner.pkl`` copy drops the plan,
the callbacks and the algorithms (which may hold live Ray handles).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray.tune.search import Searcher

from slimnas.config import atomic_write_text
from slimnas.platform.tune.searcher import AskTellSearcher
from slimnas.search import SearchAlgorithm

__all__ = ["MultiplexSearcher", "TuneRun", "TuneOutcome", "Plan", "READY_WAIT_S"]

log = logging.getLogger(__name__)

#: How long ``suggest`` waits for a first evaluator to be ready while no trial is in flight (see the module docstring).
READY_WAIT_S = 5.0


@dataclass
class TuneRun:
    """One search run of an experiment: its ``label`` (names its state file), its algorithm, and whether the
    early-stop scheduler may stop its trials."""

    label: str
    algorithm: SearchAlgorithm
    early_stop: bool = True


@dataclass
class TuneOutcome:
    """A finished run. ``early_stop``: its early-stop counters (empty when it was not stopped early); ``wall_s``: from
    its phase's start to its last result, in this process; ``eval_s``: the sum of its evaluations' own times (in the
    evaluators, across a restore: see :mod:`~slimnas.platform.tune.trainable`)."""

    label: str
    algorithm: SearchAlgorithm
    searcher: AskTellSearcher
    early_stop: dict[str, int]
    experiment_path: str
    wall_s: float = 0.0
    eval_s: float = 0.0


#: The next phase's runs, given the finished runs' outcomes by label; ``None``: no more phases.
Plan = Callable[[dict[str, TuneOutcome]], list[TuneRun] | None]


@dataclass
class _Slot:
    run: TuneRun
    searcher: AskTellSearcher
    started: float
    outcome: TuneOutcome | None = None
    in_flight: set[str] = field(default_factory=set)


class MultiplexSearcher(Searcher):
    """The runs ``plan`` gives, phase by phase, in one Tune experiment (``experiment_path``); state files in
    ``storage``. ``on_start(label, algorithm)`` / ``on_finish(outcome)`` are told as each run starts and finishes."""

    def __init__(self, plan: Plan, storage: str | os.PathLike, experiment_path: str, *, restore: bool = False,
                 max_concurrent: int | None = None, slots: Sequence[str] = (),
                 slots_ready: Callable[[float], Collection[str]] | None = None,
                 on_start: Callable[[str, SearchAlgorithm], None] | None = None,
                 on_finish: Callable[[TuneOutcome], None] | None = None) -> None:
        super().__init__(metric="seen", mode="max")
        self.plan: Plan | None = plan
        self.storage, self.experiment_path, self.resume = Path(storage), experiment_path, restore
        self.max_concurrent = max_concurrent
        self.on_start, self.on_finish = on_start, on_finish
        self._slots: dict[str, _Slot] = {}
        self._trial_run: dict[str, str] = {}
        self._turn = 0
        self._exhausted = False
        self.slots = list(slots)  # evaluator names, free ones first in line
        self.slots_ready = slots_ready  # the evaluators that can take a trial now, waiting up to the seconds given
        # for a first one (None: all)
        self._trial_slot: dict[str, str] = {}  # trial -> the evaluator it holds
        self.told_here: list[float] = []  # own time of each evaluation told in this process
        self.worker_setups: dict[str, float] = {}  # trial -> seconds its evaluator took to set up

    # ------------------------------------------------------------------ pickling (Tune's tuner.pkl)
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(plan=None, on_start=None, on_finish=None, _slots={}, _trial_run={}, _trial_slot={},
                     slots_ready=None)
        return state

    # ------------------------------------------------------------------ runs and phases
    @property
    def finished(self) -> bool:
        """Every phase planned and every run finished."""
        return self._exhausted and all(slot.outcome is not None for slot in self._slots.values())

    def outcomes(self) -> dict[str, TuneOutcome]:
        """The finished runs' outcomes, in the order they were planned."""
        return {label: slot.outcome for label, slot in self._slots.items() if slot.outcome is not None}

    def unfinished(self) -> list[str]:
        return [label for label, slot in self._slots.items() if slot.outcome is None]

    def advance(self) -> bool:
        """Plan phases until one has a run to evaluate; ``False`` when every run has finished and no phase is left.
        Runs restored finished from their state files finish at once."""
        while not self._exhausted and not self.unfinished():
            runs = self.plan(self.outcomes()) if self.plan is not None else None
            if runs is None:
                self._exhausted = True
                break
            for run in runs:
                self._add(run)
        return bool(self.unfinished())

    def _add(self, run: TuneRun) -> None:
        if run.label in self._slots:
            raise ValueError(f"search run {run.label!r} planned twice")
        state_path = self.storage / f"{run.label}.searcher.json"
        searcher = AskTellSearcher(run.algorithm, run.label, state_path)
        if self.resume:
            searcher.resume_from_state_file()
        else:
            state_path.unlink(missing_ok=True)
        self._slots[run.label] = _Slot(run, searcher, time.perf_counter())
        if self.on_start is not None:
            self.on_start(run.label, run.algorithm)
        self._finish_if_done(run.label)

    def _finish_if_done(self, label: str) -> None:
        slot = self._slots[label]
        if slot.outcome is not None or slot.in_flight or not slot.run.algorithm.finished:
            return
        searcher = slot.searcher
        slot.outcome = TuneOutcome(label, slot.run.algorithm, searcher,
                                   dict(searcher.counters) if slot.run.early_stop else {}, self.experiment_path,
                                   time.perf_counter() - slot.started, sum(searcher.eval_seconds.values()))
        if self.on_finish is not None:
            self.on_finish(slot.outcome)

    # ------------------------------------------------------------------ Tune events
    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self.max_concurrent is not None and len(self._trial_run) >= self.max_concurrent:
            return None
        free = self._free_slots(0.0)
        if self.slots and not free and not self._trial_slot:
            free = self._free_slots(READY_WAIT_S)  # none ready yet, nothing in flight: wait here, not in Tune's poll
        if self.slots and not free:
            return None  # every evaluator busy (or none ready yet)
        while True:
            active = self.unfinished()
            if not active:
                if not self.advance():
                    return Searcher.FINISHED
                continue
            for i in range(len(active)):
                label = active[(self._turn + i) % len(active)]
                slot = self._slots[label]
                config = slot.searcher.suggest(trial_id)
                if isinstance(config, dict):
                    self._turn = (self._turn + i + 1) % len(active)
                    slot.in_flight.add(trial_id)
                    self._trial_run[trial_id] = label
                    if free:
                        self._trial_slot[trial_id] = free[0]
                        return {**config, "run": label, "evaluator": free[0]}
                    return {**config, "run": label}
                if config == Searcher.FINISHED:
                    self._finish_if_done(label)
            if self.unfinished():
                return None  # every unfinished run waits for its round's results

    def _free_slots(self, wait_s: float) -> list[str]:
        usable = self.slots if self.slots_ready is None or not self.slots else self.slots_ready(wait_s)
        return [name for name in self.slots if name in usable and name not in self._trial_slot.values()]

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if "setup_s" in result:
            self.worker_setups[trial_id] = float(result["setup_s"])

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        self._trial_slot.pop(trial_id, None)  # its evaluator is free
        label = self._trial_run.pop(trial_id, None)
        if label is None and result and isinstance(result.get("config"), dict):
            label = result["config"].get("run")
        slot = self._slots.get(label) if label is not None else None
        if slot is None:
            return  # not a trial of this driver's runs
        slot.in_flight.discard(trial_id)
        if result and "setup_s" in result:
            self.worker_setups[trial_id] = float(result["setup_s"])
        told = len(slot.searcher.eval_seconds)
        slot.searcher.on_trial_complete(trial_id, result, error)
        if len(slot.searcher.eval_seconds) > told:
            self.told_here.append(float((result or {}).get("eval_s", 0.0)))
        self._finish_if_done(label)

    def run_for(self, config: dict[str, Any]) -> AskTellSearcher | None:
        """The run deciding on the trial of ``config`` for the early-stop scheduler, or ``None`` (its method is not
        stopped early, or it is not this driver's run)."""
        slot = self._slots.get(config.get("run"))
        if slot is None or not slot.run.early_stop:
            return None
        return slot.searcher.run_for(config)

    # ------------------------------------------------------------------ Tune's experiment checkpoint
    def save(self, checkpoint_path: str) -> None:
        """Tune's periodic searcher checkpoint: the runs and where their state is (the state files are the record)."""
        atomic_write_text(checkpoint_path, json.dumps({
            "runs": {label: slot.searcher.state_path for label, slot in self._slots.items()}}))

    def restore(self, checkpoint_path: str) -> None:  # pragma: no cover - restore continues from the state files
        raise NotImplementedError("a search experiment continues from its runs' state files, not Tune's checkpoint")
