"""Any slimnas search algorithm as a Ray Tune ``Searcher``: each candidate evaluation is a Tune trial.

``suggest`` hands out the candidates of the algorithm's ``ask()`` one trial at a time; while a round's results are
outstanding it returns ``None`` (Tune waits: the round barrier) and ``Searcher.FINISHED`` at the end.
``on_trial_complete`` tells the algorithm the trial's ``accuracy`` and keeps the evaluation's own time (``eval_s``,
measured by the trainable inside the worker: :mod:`~slimnas.platform.tune.trainable`). A trial stopped early by
:class:`~slimnas.platform.tune.scheduler.EarlyStopScheduler` reports only an upper bound of its accuracy
(``accuracy_bound``); the algorithm is told that bound, which by construction cannot win.

State across processes. Tune checkpoints searcher state periodically, so after a driver crash it can be behind. This
searcher therefore writes the algorithm's full state (the early-stop counters, the evaluations' own times) to
``state_path`` (JSON, atomically) after every ask and tell: that file is the run's record, from which a restored job
continues (:mod:`~slimnas.platform.tune.runner`), re-issuing the candidates that were in flight. Tune also pickles the
searcher itself (``tuner.pkl``): that pickle holds no algorithm -- an algorithm holds its latency function, which may
be a live Ray actor handle (:class:`~slimnas.latency.actor.LatencyClient`), and a handle cannot be unpickled in
another Ray session. A searcher unpickled from it is detached until :meth:`AskTellSearcher.attach` gives it an
algorithm, which then loads ``state_path``.

A search job runs many of these in one Tune experiment, one per (method, target), through
:class:`~slimnas.platform.tune.multiplex.MultiplexSearcher`; the early-stop scheduler asks the experiment's searcher
:meth:`~AskTellSearcher.run_for` a trial's config which run decides on it (no registry of live searchers).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from ray.tune.search import Searcher

from slimnas.config import atomic_write_text
from slimnas.search import Candidate, SearchAlgorithm

__all__ = ["AskTellSearcher", "read_state", "EARLY_STOP_COUNTERS"]

log = logging.getLogger(__name__)

#: The early-stop counters a searcher keeps (persisted with its state, so they add up across a restore).
EARLY_STOP_COUNTERS = ("trials_stopped", "batches_saved", "batches_reported")


def read_state(path: str | os.PathLike) -> dict[str, Any] | None:
    """A searcher's state file (``None`` when there is none)."""
    file = Path(path)
    return json.loads(file.read_text()) if file.is_file() else None


class AskTellSearcher(Searcher):
    """Wraps ``algorithm`` (ask/tell) for Tune. ``name`` is the experiment's (for messages)."""

    def __init__(self, algorithm: SearchAlgorithm, name: str, state_path: str | os.PathLike | None = None,
                 metric: str = "seen", mode: str = "max", max_concurrent: int | None = None) -> None:
        super().__init__(metric=metric, mode=mode)
        self.algorithm: SearchAlgorithm | None = algorithm
        self.name = name
        # Concurrency is limited here, not with Tune's ConcurrencyLimiter, whose restored set of live trials would
        # wait forever for trials that a restored experiment does not run again.
        self.max_concurrent = max_concurrent
        self.state_path = None if state_path is None else str(state_path)
        self._queue: list[Candidate] = []
        self._trial_candidate: dict[str, int] = {}
        self.early_stopped: list[int] = []
        self.errored: list[int] = []
        self.stop_bounds: dict[int, tuple[float, int]] = {}  # candidate -> (accuracy bound, batches saved)
        self.counters: dict[str, int] = dict.fromkeys(EARLY_STOP_COUNTERS, 0)
        self.eval_seconds: dict[int, float] = {}  # candidate -> its evaluation's own time (``eval_s``, see below)

    # ------------------------------------------------------------------ pickling (Tune's tuner.pkl)
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["algorithm"] = None  # never pickle the latency function (a live actor handle); see the docstring
        state["_queue"], state["_trial_candidate"], state["stop_bounds"] = [], {}, {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def attach(self, algorithm: SearchAlgorithm, max_concurrent: int | None = None) -> None:
        """Give a searcher unpickled by ``Tuner.restore`` this driver's ``algorithm``, caught up from ``state_path``."""
        self.algorithm = algorithm
        self.max_concurrent = max_concurrent
        self._queue, self._trial_candidate, self.stop_bounds = [], {}, {}
        self.resume_from_state_file()

    @property
    def attached(self) -> bool:
        """Whether the searcher has its algorithm (one unpickled by ``Tuner.restore`` has none until attached)."""
        return self.algorithm is not None

    def _live(self) -> SearchAlgorithm:
        if self.algorithm is None:
            raise RuntimeError(f"{self.name}: a restored searcher runs only once attach() gave it its algorithm")
        return self.algorithm

    # ------------------------------------------------------------------ Tune events
    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        algorithm = self._live()
        if self.max_concurrent is not None and len(self._trial_candidate) >= self.max_concurrent:
            return None
        if not self._queue:
            if algorithm.finished:
                return Searcher.FINISHED
            self._queue = list(algorithm.ask())
            self._persist()
            if not self._queue:
                return Searcher.FINISHED if algorithm.finished else None
        candidate = self._queue.pop(0)
        self._trial_candidate[trial_id] = candidate.id
        return {"candidate_id": candidate.id, "arch": candidate.arch.to_dict(),
                "latency_ms": candidate.latency_ms, "method": algorithm.name}

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        algorithm = self._live()
        candidate_id = self._trial_candidate.pop(trial_id, None)
        if candidate_id is None and result and isinstance(result.get("config"), dict):
            candidate_id = result["config"].get("candidate_id")
        if candidate_id is None or candidate_id not in algorithm.pending:
            return  # a duplicate after a restore: already told
        result = result or {}
        accuracy = result.get("accuracy")
        if accuracy is None and candidate_id in self.stop_bounds:
            accuracy, saved = self.stop_bounds.pop(candidate_id)
            self.early_stopped.append(candidate_id)
            self.counters["trials_stopped"] += 1
            self.counters["batches_saved"] += saved
        if accuracy is None or error:
            log.warning("%s: candidate %d failed (error=%s); told accuracy 0", self.name, candidate_id, error)
            accuracy = 0.0
            self.errored.append(candidate_id)
        self.eval_seconds[candidate_id] = float(result.get("eval_s", 0.0))
        algorithm.tell(candidate_id, float(accuracy))
        self._persist()

    def run_for(self, config: dict[str, Any]) -> AskTellSearcher | None:
        """The searcher that decides on the trial of ``config`` (the early-stop scheduler's question): this one, once
        it has its algorithm (:class:`~slimnas.platform.tune.multiplex.MultiplexSearcher` routes by run)."""
        return self if self.attached else None

    def note_report(self) -> None:
        """The scheduler saw one more partial (per-batch) report."""
        self.counters["batches_reported"] += 1

    def rules_out(self, candidate_id: Any, accuracy_bound: float) -> bool:
        """Whether the evaluation of ``candidate_id`` may stop at ``accuracy_bound``: the candidate is still outstanding
        and its algorithm says that bound cannot change its decision (:meth:`SearchAlgorithm.cannot_win`)."""
        algorithm = self.algorithm
        if algorithm is None or candidate_id not in algorithm.pending:
            return False
        return algorithm.cannot_win(candidate_id, accuracy_bound)

    def note_stop(self, candidate_id: int, bound: float, batches_saved: int) -> None:
        """The scheduler stopped ``candidate_id``'s trial at accuracy ``bound``, ``batches_saved`` batches early."""
        self.stop_bounds[candidate_id] = (bound, batches_saved)

    # ------------------------------------------------------------------ state
    def _state(self) -> dict[str, Any]:
        return {"algorithm": self._live().state_dict(), "early_stopped": self.early_stopped,
                "errored": self.errored, "counters": self.counters,
                "eval_s": {str(k): v for k, v in self.eval_seconds.items()}}

    def _load(self, state: dict[str, Any]) -> None:
        algorithm = self._live()
        algorithm.load_state_dict(state["algorithm"])
        self.early_stopped, self.errored = list(state["early_stopped"]), list(state["errored"])
        self.counters = {**dict.fromkeys(EARLY_STOP_COUNTERS, 0), **state.get("counters", {})}
        self.eval_seconds = {int(k): float(v) for k, v in state.get("eval_s", {}).items()}
        self._queue = algorithm.outstanding()  # in flight at the crash: evaluate them again
        self._trial_candidate = {}

    def _persist(self) -> None:
        if self.state_path:
            atomic_write_text(self.state_path, json.dumps(self._state()))

    def save(self, checkpoint_path: str) -> None:
        atomic_write_text(checkpoint_path, json.dumps({"name": self.name, "state_path": self.state_path,
                                                       **self._state()}))

    def restore(self, checkpoint_path: str) -> None:
        saved = json.loads(Path(checkpoint_path).read_text())
        best = saved
        ours = read_state(self.state_path) if self.state_path else None
        if ours is not None and _progress(ours) >= _progress(saved):
            best = ours
        self._load(best)
        log.info("%s: restored after %d evaluations (%d to evaluate again)", self.name,
                 self._live().evaluations, len(self._queue))

    def resume_from_state_file(self) -> bool:
        """Load ``state_path`` if it exists (a restart without Tune's own checkpoint); ``True`` if loaded."""
        state = read_state(self.state_path) if self.state_path else None
        if state is None:
            return False
        self._load(state)
        return True


def _progress(state: dict[str, Any]) -> tuple[int, int]:
    algo = state["algorithm"]
    return len(algo["history"]), int(algo["next_id"])
