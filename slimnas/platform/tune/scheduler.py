"""A Tune scheduler that stops a candidate's evaluation once its partial result rules it out.

An evaluation trial reports after each validation batch its running ``correct`` and ``seen`` counts out of ``total``
images. From them the scheduler bounds the final top-1 and asks the search algorithm whether that bound can still
change its decision (:meth:`SearchAlgorithm.cannot_win`: for slimming, a worse accuracy drop per ms than a candidate
of the same round already has; for the best-of baselines, below the best accuracy found). If not, the trial stops and
the algorithm is told the bound, which loses by construction. Two rules:

- ``exact``: ``(correct + remaining) / total`` -- every remaining image right. Never changes a decision, but is so
  loose that it rarely rules anything out before the last batches.
- ``confident`` (default): the remaining images right at the observed rate plus ``z`` binomial standard deviations,
  ``(correct + r p + z sqrt(r p (1 - p))) / total`` with ``p = correct / seen``, ``r`` images remaining. With
  ``z = 3`` a stopped candidate would have won with probability well under 1% (under the binomial model).

``batches_saved`` counts the validation batches not evaluated, the figure ``docs/benchmarks.md`` reports. The counters
are kept by each run's searcher (:attr:`AskTellSearcher.counters`), which persists them with its state: the scheduler
itself holds nothing but its rule and the experiment's searcher, given when it is built (no registry of live
searchers). In a job's experiment, where several search runs share one Tune experiment
(:class:`~slimnas.platform.tune.multiplex.MultiplexSearcher`), the trial's ``config["run"]`` names the run whose
algorithm decides; a run whose method cannot be stopped early is never stopped.
"""

from __future__ import annotations

import math
from typing import Any

from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from slimnas.platform.tune.searcher import AskTellSearcher

__all__ = ["EarlyStopScheduler", "accuracy_bound", "RULES"]

RULES = ("exact", "confident")


def accuracy_bound(correct: int, seen: int, total: int, rule: str = "confident", z: float = 3.0) -> float:
    """An upper bound of the final top-1 after ``correct`` right out of ``seen`` of ``total`` images."""
    remaining = max(total - seen, 0)
    if rule == "exact" or seen == 0:
        return (correct + remaining) / total
    p = correct / seen
    return min(1.0, (correct + remaining * p + z * math.sqrt(remaining * p * (1 - p))) / total)


class EarlyStopScheduler(FIFOScheduler):
    """Stops the trials whose accuracy bound cannot win. ``searcher``: the experiment's searcher, an
    :class:`AskTellSearcher` or a :class:`~slimnas.platform.tune.multiplex.MultiplexSearcher`; its ``run_for(config)``
    names the run (the :class:`AskTellSearcher`) that decides on a trial, or ``None`` (not stoppable, or detached)."""

    def __init__(self, searcher: Any, rule: str = "confident", z: float = 3.0) -> None:
        super().__init__()
        if rule not in RULES:
            raise ValueError(f"rule: expected one of {RULES}, got {rule!r}")
        self.searcher, self.rule, self.z = searcher, rule, float(z)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        if result.get("accuracy") is not None or "correct" not in result:
            return TrialScheduler.CONTINUE
        searcher = getattr(self, "searcher", None)  # None: unpickled from an older slimnas
        run: AskTellSearcher | None = None if searcher is None else searcher.run_for(trial.config)
        if run is None:
            return TrialScheduler.CONTINUE
        run.note_report()
        candidate_id = trial.config.get("candidate_id")
        bound = accuracy_bound(int(result["correct"]), int(result["seen"]), int(result["total"]), self.rule, self.z)
        if run.rules_out(candidate_id, bound):
            saved = int(result.get("batches_total", 0)) - int(result.get("batches_done", 0))
            run.note_stop(candidate_id, bound, saved)
            return TrialScheduler.STOP
        return TrialScheduler.CONTINUE
