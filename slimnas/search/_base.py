"""The ask/tell interface shared by slimming and the enumeration baselines. Plain Python (no torch, no ray).

Calling contract:

1. ``ask()`` returns the candidates to evaluate next (a whole round for slimming, one or a few for the baselines). An
   empty list means "waiting": results of earlier candidates are still outstanding (slimming's round barrier).
2. The caller evaluates each candidate's arch (top-1 of the subnet, BN recalibrated) -- in any order, in parallel if
   it likes -- and calls ``tell(candidate.id, accuracy)`` once per candidate.
3. Repeat until ``finished``. ``best(target_ms)`` and ``answer(target_ms)`` read the result for a latency target.

Every algorithm owns its random generator (``seed``), counts its subnet evaluations (``evaluations``: the budget unit
every method is compared on) and serializes all of its state to JSON-ready dicts (``state_dict`` /
``load_state_dict``) so a killed driver resumes exactly where it stopped.
"""

from __future__ import annotations

import abc
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from slimnas.search_spaces import Arch

__all__ = ["Candidate", "Evaluation", "SearchAlgorithm", "TargetSearch", "LatencyFn", "pareto_front", "rng_state",
           "set_rng_state"]

#: Predicted latency (ms) of each arch, vectorized: ``LatencyTable.predict_many`` or ``LatencyClient.predict_many``.
LatencyFn = Callable[[Sequence[Arch]], Sequence[float]]


@dataclass
class Candidate:
    """One arch to evaluate; ``info`` says why it was proposed (e.g. the slimming action)."""

    id: int
    arch: Arch
    latency_ms: float
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "arch": self.arch.to_dict(), "latency_ms": self.latency_ms, "info": self.info}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Candidate:
        return cls(data["id"], Arch.from_dict(data["arch"]), float(data["latency_ms"]), dict(data["info"]))


@dataclass
class Evaluation:
    """An evaluated candidate."""

    candidate: Candidate
    accuracy: float

    @property
    def arch(self) -> Arch:
        return self.candidate.arch

    @property
    def latency_ms(self) -> float:
        return self.candidate.latency_ms

    def to_dict(self) -> dict[str, Any]:
        return {"candidate": self.candidate.to_dict(), "accuracy": self.accuracy}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Evaluation:
        return cls(Candidate.from_dict(data["candidate"]), float(data["accuracy"]))


def rng_state(rng: random.Random) -> list:
    version, state, gauss = rng.getstate()
    return [version, list(state), gauss]


def set_rng_state(rng: random.Random, state: list) -> None:
    rng.setstate((state[0], tuple(state[1]), state[2]))


def pareto_front(evaluations: Sequence[Evaluation]) -> list[Evaluation]:
    """Evaluations not dominated in (higher accuracy, lower latency), sorted by latency."""
    front: list[Evaluation] = []
    for ev in sorted(evaluations, key=lambda e: (e.latency_ms, -e.accuracy)):
        if not front or ev.accuracy > front[-1].accuracy:
            front.append(ev)
    return front


class SearchAlgorithm(abc.ABC):
    """Base of every search method (see the module docstring for the calling contract)."""

    name: str = ""

    def __init__(self, latency_fn: LatencyFn, budget: int | None = None, seed: int | None = 0) -> None:
        if budget is not None and budget < 1:
            raise ValueError(f"budget: must be at least 1 evaluation, got {budget}")
        self.latency_fn = latency_fn
        self.budget = budget
        self.seed = seed
        self.rng = random.Random(seed)
        self.history: list[Evaluation] = []
        self.pending: dict[int, Candidate] = {}
        self._next_id = 0
        self._finished = False
        self.stop_reason = ""

    # ------------------------------------------------------------------ the protocol
    @abc.abstractmethod
    def ask(self) -> list[Candidate]:
        """Candidates to evaluate next; ``[]`` while waiting for outstanding results."""

    def tell(self, candidate_id: int, accuracy: float) -> None:
        """Report the accuracy of an asked candidate."""
        if candidate_id not in self.pending:
            raise ValueError(f"candidate_id: {candidate_id} was not asked or was already told")
        candidate = self.pending.pop(candidate_id)
        self.history.append(Evaluation(candidate, float(accuracy)))
        self._on_tell(candidate, float(accuracy))

    def _on_tell(self, candidate: Candidate, accuracy: float) -> None:  # noqa: B027 - optional hook
        """Hook for subclasses, after ``history`` got the evaluation."""

    def cannot_win(self, candidate_id: int, accuracy_bound: float) -> bool:
        """Whether an outstanding candidate whose final accuracy is at most ``accuracy_bound`` can no longer change
        this method's decision (its evaluation may then stop early). Default: never (the method needs true values).
        """
        return False

    def outstanding(self) -> list[Candidate]:
        """Candidates asked but not told (after ``load_state_dict``: the ones to evaluate again)."""
        return sorted(self.pending.values(), key=lambda c: c.id)

    @property
    def finished(self) -> bool:
        return self._finished

    @property
    def evaluations(self) -> int:
        """Subnet evaluations reported so far (the budget unit)."""
        return len(self.history)

    def budget_left(self) -> int | None:
        if self.budget is None:
            return None
        return self.budget - self.evaluations - len(self.pending)

    def _room(self, parallel: int) -> int:
        """How many candidates an ask may propose: ``parallel``, fewer when the budget is nearly used; 0 once the run
        has finished or the budget is used (the run then finishes as soon as nothing is outstanding)."""
        if self.finished:
            return 0
        left = self.budget_left()
        if left is not None and left <= 0:
            if not self.pending:
                self._finish("budget used")
            return 0
        return parallel if left is None else min(parallel, left)

    def _finish(self, reason: str) -> None:
        self._finished = True
        self.stop_reason = reason

    def _candidate(self, arch: Arch, latency_ms: float, **info: Any) -> Candidate:
        candidate = Candidate(self._next_id, arch, float(latency_ms), info)
        self._next_id += 1
        self.pending[candidate.id] = candidate
        return candidate

    def latencies(self, archs: Sequence[Arch]) -> list[float]:
        return [float(v) for v in self.latency_fn(list(archs))] if archs else []

    # ------------------------------------------------------------------ results
    def best(self, target_ms: float) -> Evaluation | None:
        """The most accurate evaluated arch within ``target_ms`` (ties: the faster, then the earlier)."""
        feasible = [e for e in self.history if e.latency_ms <= target_ms]
        if not feasible:
            return None
        return max(feasible, key=lambda e: (e.accuracy, -e.latency_ms, -e.candidate.id))

    def answer(self, target_ms: float) -> Evaluation | None:
        """This method's answer for a latency target (the best feasible evaluation, unless a method says else)."""
        return self.best(target_ms)

    def pareto_front(self) -> list[Evaluation]:
        return pareto_front(self.history)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "budget": self.budget, "seed": self.seed, "rng": rng_state(self.rng),
            "history": [e.to_dict() for e in self.history],
            "pending": [c.to_dict() for c in self.pending.values()],
            "next_id": self._next_id, "finished": self._finished, "stop_reason": self.stop_reason,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("name") != self.name:
            raise ValueError(f"state: saved by {state.get('name')!r}, not {self.name!r}")
        self.budget, self.seed = state["budget"], state["seed"]
        set_rng_state(self.rng, state["rng"])
        self.history = [Evaluation.from_dict(e) for e in state["history"]]
        self.pending = {c["id"]: Candidate.from_dict(c) for c in state["pending"]}
        self._next_id = int(state["next_id"])
        self._finished, self.stop_reason = bool(state["finished"]), state["stop_reason"]


class TargetSearch(SearchAlgorithm):
    """A search for the best arch within one latency target ``target_ms`` (the enumeration baselines): its answer is
    the most accurate evaluation within the target, so a candidate that cannot beat the best so far cannot win."""

    target_ms: float

    def cannot_win(self, candidate_id: int, accuracy_bound: float) -> bool:
        best = self.best(self.target_ms)
        return best is not None and accuracy_bound < best.accuracy

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "target_ms": self.target_ms}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.target_ms = float(state["target_ms"])
