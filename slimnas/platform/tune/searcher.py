"""Any slimnas search algorithm as a Ray Tune ``Searcher``: each candidate evaluation is a Tune trial.

``suggest`` hands out the candidates of the algorithm's ``ask()`` one trial at a time; while a round's results are
outstanding it returns ``None`` (Tune waits: the round barrier) and ``Searcher.FINISHED`` at the end.
``on_trial_complete`` tells the algorithm the trial's ``accuracy``. A trial stopped early by
:class:`~slimnas.platform.tune.scheduler.EarlyStopScheduler` reports only an upper bound of its accuracy
(``accuracy_bound``); the algorithm is told that bound, which by construction cannot win.

Tune checkpoints searcher state periodically, so after a driver crash it can be behind. This searcher therefore also
writes the algorithm's full state to ``state_path`` (JSON, atomically) after every ask and tell; ``restore`` takes
whichever of the two has seen more, and re-issues the candidates that were in flight.
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

__all__ = ["AskTellSearcher", "live_searcher"]

log = logging.getLogger(__name__)

#: Searchers of this driver by name, so the early-stop scheduler finds its searcher after a restore too.
_LIVE: dict[str, AskTellSearcher] = {}


def live_searcher(name: str) -> AskTellSearcher | None:
    return _LIVE.get(name)


class AskTellSearcher(Searcher):
    """Wraps ``algorithm`` (ask/tell) for Tune. ``name`` identifies it to its scheduler."""

    def __init__(self, algorithm: SearchAlgorithm, name: str, state_path: str | os.PathLike | None = None,
                 metric: str = "seen", mode: str = "max", max_concurrent: int | None = None) -> None:
        super().__init__(metric=metric, mode=mode)
        self.algorithm = algorithm
        self.name = name
        # Concurrency is limited here, not with Tune's ConcurrencyLimiter, whose restored set of live trials would
        # wait forever for trials that a restored experiment does not run again.
        self.max_concurrent = max_concurrent
        self.state_path = None if state_path is None else str(state_path)
        self._queue: list[Candidate] = []
        self._trial_candidate: dict[str, int] = {}
        self.early_stopped: list[int] = []
        self.errored: list[int] = []
        self.stop_bounds: dict[int, float] = {}
        _LIVE[name] = self

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Tuner.restore unpickles the searcher without __init__: register it, and catch up from our own state file
        # (newer than Tune's searcher checkpoint, which restore() may still apply if it is further along).
        self.__dict__.update(state)
        _LIVE[self.name] = self
        self.resume_from_state_file()

    # ------------------------------------------------------------------ Tune events
    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self.max_concurrent is not None and len(self._trial_candidate) >= self.max_concurrent:
            return None
        if not self._queue:
            if self.algorithm.finished:
                return Searcher.FINISHED
            self._queue = list(self.algorithm.ask())
            self._persist()
            if not self._queue:
                return Searcher.FINISHED if self.algorithm.finished else None
        candidate = self._queue.pop(0)
        self._trial_candidate[trial_id] = candidate.id
        return {"candidate_id": candidate.id, "arch": candidate.arch.to_dict(),
                "latency_ms": candidate.latency_ms, "method": self.algorithm.name}

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        candidate_id = self._trial_candidate.pop(trial_id, None)
        if candidate_id is None and result and isinstance(result.get("config"), dict):
            candidate_id = result["config"].get("candidate_id")
        if candidate_id is None or candidate_id not in self.algorithm.pending:
            return  # a duplicate after a restore: already told
        result = result or {}
        accuracy = result.get("accuracy")
        if accuracy is None and candidate_id in self.stop_bounds:
            accuracy = self.stop_bounds.pop(candidate_id)
            self.early_stopped.append(candidate_id)
        if accuracy is None or error:
            log.warning("%s: candidate %d failed (error=%s); told accuracy 0", self.name, candidate_id, error)
            accuracy = 0.0
            self.errored.append(candidate_id)
        self.algorithm.tell(candidate_id, float(accuracy))
        self._persist()

    # ------------------------------------------------------------------ state
    def _state(self) -> dict[str, Any]:
        return {"algorithm": self.algorithm.state_dict(), "early_stopped": self.early_stopped,
                "errored": self.errored}

    def _load(self, state: dict[str, Any]) -> None:
        self.algorithm.load_state_dict(state["algorithm"])
        self.early_stopped, self.errored = list(state["early_stopped"]), list(state["errored"])
        self._queue = self.algorithm.outstanding()  # in flight at the crash: evaluate them again
        self._trial_candidate = {}
        _LIVE[self.name] = self

    def _persist(self) -> None:
        if self.state_path:
            atomic_write_text(self.state_path, json.dumps(self._state()))

    def save(self, checkpoint_path: str) -> None:
        atomic_write_text(checkpoint_path, json.dumps({"name": self.name, "state_path": self.state_path,
                                                       **self._state()}))

    def restore(self, checkpoint_path: str) -> None:
        saved = json.loads(Path(checkpoint_path).read_text())
        best = saved
        if self.state_path and Path(self.state_path).is_file():
            ours = json.loads(Path(self.state_path).read_text())
            if _progress(ours) >= _progress(saved):
                best = ours
        self._load(best)
        log.info("%s: restored after %d evaluations (%d to evaluate again)", self.name,
                 self.algorithm.evaluations, len(self._queue))

    def resume_from_state_file(self) -> bool:
        """Load ``state_path`` if it exists (a restart without Tune's own checkpoint); ``True`` if loaded."""
        if self.state_path and Path(self.state_path).is_file():
            self._load(json.loads(Path(self.state_path).read_text()))
            return True
        return False


def _progress(state: dict[str, Any]) -> tuple[int, int]:
    algo = state["algorithm"]
    return len(algo["history"]), int(algo["next_id"])
