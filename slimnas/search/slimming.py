"""Latency-driven slimming (Li et al., NeurIPS 2022, Sec. 4.2), as a pure ask/tell algorithm.

Starting from the supernet's architecture, each round considers actions on the current arch, gets each action's
latency saving from the latency function (the lookup table) and its accuracy from an evaluation of the resulting
subnet (supernet weights, BN recalibrated), and applies the action with the smallest accuracy drop per millisecond
saved, ``(acc_now - acc_action) / (lat_now - lat_action)``. It repeats until the latency target is met or no action
saves latency. One run answers a whole sweep of targets: for each target, the first arch of the trajectory at or under
it.

Actions (MetaPath importance from the supernet's alpha, :mod:`slimnas.search_spaces._importance`); for another space
family, "MB3D" reads as its tail kind and "MB4D" as its lead kind (:class:`~slimnas.search_spaces.SpaceFamily`):

- ``mode="paper"``: exactly the paper's three -- (1) the least important active MetaPath becomes an identity; (2) the
  first MB3D (in network order) is removed; (3) the least important stage loses 16 channels. A stage's importance is
  the sum of its *active* MetaPaths' scores (a MetaPath already turned into an identity no longer counts). "Least
  important" is taken among the MetaPaths (stages) whose removal (width cut) saves latency.
- ``mode="extended"``: every active MetaPath to identity, every stage's width minus 16, and the first-MB3D removal:
  more evaluations per round (run in parallel), a broader look at each step.

Decisions where the paper is silent:

- "Remove the first MB3D" turns it into MB4D by default (``mb3d_removal="to_4d"``: the 3D partition shrinks by one
  block and the depth stays, the reading under which L1/L3/L7 differ in their MB3D counts); ``"to_identity"`` drops
  the block instead. Where a stage does not allow MB4D it becomes an identity.
- An action is proposed only if the result is a valid arch of the space (a stage keeps at least one active block,
  widths stay at or above the space's minimum) and it saves latency; actions that save nothing are not evaluated.
- Ties in the score go to the action listed first: identity, MB3D removal, width; then by stage and slot.
- The starting arch is evaluated once (round 0): its accuracy is the reference for the first round's drops. An arch
  evaluated before (same slots, same widths) is not evaluated again.
- Slimming past the smallest target (:meth:`SlimmingSearch.continue_below`): a finished run can be continued, one
  step at a time, when its answer turns out slower on the device than the table said
  (:mod:`slimnas.search.verification`). The trajectory, the evaluation count and the cache carry on; the answers for
  targets the trajectory had already met do not change (each is still the first step at or under its target).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from slimnas.search_spaces import IDENTITY, Arch, Importance, SearchSpace

from ._base import Candidate, Evaluation, LatencyFn, SearchAlgorithm

__all__ = ["Action", "RoundEntry", "RoundCandidate", "TrajectoryStep", "SlimmingSearch", "MODES", "MB3D_REMOVALS"]

MODES = ("paper", "extended")
MB3D_REMOVALS = ("to_4d", "to_identity")
_ACTION_ORDER = ("identity", "remove_mb3d", "width")


@dataclass(frozen=True)
class Action:
    """One slimming step: ``identity`` (stage, slot), ``remove_mb3d`` (stage, slot) or ``width`` (stage)."""

    kind: str
    stage: int
    slot: int | None = None

    def sort_key(self) -> tuple:
        return (_ACTION_ORDER.index(self.kind), self.stage, -1 if self.slot is None else self.slot)

    def __str__(self) -> str:
        if self.kind == "width":
            return f"stage {self.stage + 1} width -16"
        if self.kind == "identity":
            return f"MetaPath {self.stage + 1}.{self.slot} -> identity"
        return f"first MB3D ({self.stage + 1}.{self.slot}) removed"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "stage": self.stage, "slot": self.slot, "text": str(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Action:
        return cls(data["kind"], int(data["stage"]), data["slot"])


@dataclass(frozen=True)
class RoundEntry:
    """An action of the round being evaluated (``action`` ``None``: round 0's starting arch). ``candidate_id`` is
    ``None`` when the result was evaluated before (its cached accuracy is set at once); ``accuracy`` is ``None``
    until told."""

    action: Action | None
    arch: Arch | None
    latency_ms: float | None = None
    saved_ms: float | None = None
    candidate_id: int | None = None
    accuracy: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"action": None if self.action is None else self.action.to_dict(),
                "arch": None if self.arch is None else self.arch.to_dict(), "latency_ms": self.latency_ms,
                "saved_ms": self.saved_ms, "candidate_id": self.candidate_id, "accuracy": self.accuracy}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RoundEntry:
        return cls(None if data["action"] is None else Action.from_dict(data["action"]),
                   None if data["arch"] is None else Arch.from_dict(data["arch"]), data["latency_ms"],
                   data["saved_ms"], data["candidate_id"], data["accuracy"])


@dataclass(frozen=True)
class RoundCandidate:
    """One action weighed in a decided round: its result, the predicted latency saved, its accuracy and its score
    (accuracy drop per millisecond saved; the smallest wins). ``candidate_id`` ``None``: evaluated before."""

    action: Action
    arch: Arch
    latency_ms: float
    saved_ms: float
    accuracy: float
    score: float
    candidate_id: int | None

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action.to_dict(), "latency_ms": self.latency_ms, "saved_ms": self.saved_ms,
                "accuracy": self.accuracy, "score": self.score, "arch": self.arch.to_dict(),
                "candidate_id": self.candidate_id}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RoundCandidate:
        return cls(Action.from_dict(data["action"]), Arch.from_dict(data["arch"]), float(data["latency_ms"]),
                   float(data["saved_ms"]), float(data["accuracy"]), float(data["score"]), data["candidate_id"])


@dataclass(frozen=True)
class TrajectoryStep:
    """One step of the trajectory: the arch after round ``round``'s chosen ``action`` (round 0: the start, no
    action), its predicted latency and accuracy, the evaluations spent when it was reached, and the round's table."""

    round: int
    action: Action | None
    arch: Arch
    latency_ms: float
    accuracy: float
    candidate_id: int | None
    evaluations: int
    candidates: tuple[RoundCandidate, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"round": self.round, "action": None if self.action is None else self.action.to_dict(),
                "arch": self.arch.to_dict(), "latency_ms": self.latency_ms, "accuracy": self.accuracy,
                "candidate_id": self.candidate_id, "evaluations": self.evaluations,
                "candidates": [c.to_dict() for c in self.candidates]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrajectoryStep:
        return cls(int(data["round"]), None if data["action"] is None else Action.from_dict(data["action"]),
                   Arch.from_dict(data["arch"]), float(data["latency_ms"]), float(data["accuracy"]),
                   data["candidate_id"], int(data["evaluations"]),
                   tuple(RoundCandidate.from_dict(c) for c in data["candidates"]))


class SlimmingSearch(SearchAlgorithm):
    """The paper's slimming. See the module docstring.

    Args:
        space: the search space (validity of each step).
        start: the starting arch (usually ``space.max_arch()``).
        importance: the supernet's importance scores (``SuperNet.importance()``), or per-stage, per-slot scores.
        latency_fn: predicted latency (ms) of a list of archs.
        targets: one latency target or a sweep (ms); the run stops when the smallest is met (``stop_ms``, lowered by
            :meth:`continue_below`).
        mode: ``"paper"`` or ``"extended"``.
        mb3d_removal: ``"to_4d"`` or ``"to_identity"``.
        width_step: channels removed by a width action (16: the table's granularity).
        budget: optional cap on subnet evaluations (the run stops when the next round does not fit).
        seed: kept for the common interface (slimming itself is deterministic).
    """

    name = "slimming"

    def __init__(
        self,
        space: SearchSpace,
        start: Arch,
        importance: Importance | Sequence[Sequence[float]],
        latency_fn: LatencyFn,
        targets: float | Sequence[float],
        mode: str = "paper",
        mb3d_removal: str = "to_4d",
        width_step: int = 16,
        budget: int | None = None,
        seed: int | None = 0,
    ) -> None:
        super().__init__(latency_fn, budget, seed)
        if mode not in MODES:
            raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
        if mb3d_removal not in MB3D_REMOVALS:
            raise ValueError(f"mb3d_removal: expected one of {MB3D_REMOVALS}, got {mb3d_removal!r}")
        space.check(start)
        self.space, self.mode, self.mb3d_removal, self.width_step = space, mode, mb3d_removal, width_step
        scores = importance.metapaths if isinstance(importance, Importance) else importance
        self.scores = [[float(v) for v in stage] for stage in scores]
        if [len(s) for s in self.scores] != list(space.slots):
            raise ValueError(f"importance: expected {list(space.slots)} scores per stage, "
                             f"got {[len(s) for s in self.scores]}")
        targets = [float(targets)] if isinstance(targets, (int, float)) else [float(t) for t in targets]
        if not targets or min(targets) <= 0:
            raise ValueError("targets: need at least one positive latency target (ms)")
        self.targets = sorted(targets, reverse=True)
        self.stop_ms = self.targets[-1]  # the run stops at the first step at or under this latency
        self.current = start
        self.current_latency = self.latencies([start])[0]
        self.current_accuracy: float | None = None
        self.round = 0
        self.trajectory: list[TrajectoryStep] = []
        self._round: list[RoundEntry] = []  # the round being evaluated
        self._cache: dict[str, float] = {}

    # ------------------------------------------------------------------ actions
    def stage_importance(self, arch: Arch) -> list[float]:
        return [sum(self.scores[s][slot] for s, slot, kind in arch.iter_slots() if s == stage and kind != IDENTITY)
                for stage in range(arch.num_stages)]

    def _removable(self, arch: Arch) -> list[tuple[int, int]]:
        """Active MetaPaths whose stage keeps another active block, in network order."""
        return [(s, slot) for s, slot, kind in arch.iter_slots()
                if kind != IDENTITY and arch.depths[s] > 1 and IDENTITY in self.space.kinds[s]]

    def _first_mb3d(self, arch: Arch) -> tuple[int, int] | None:
        tail = self.space.space_family.tail
        return next(((s, slot) for s, slot, kind in arch.iter_slots() if kind == tail and tail is not None), None)

    def _reducible(self, arch: Arch) -> list[int]:
        return [s for s in range(arch.num_stages) if arch.widths[s] - self.width_step >= self.space.min_widths[s]]

    def actions(self, arch: Arch, arch_latency: float | None = None) -> list[Action]:
        """The actions this mode proposes on ``arch``.

        In paper mode, "the least important MetaPath" and "the least important stage" are taken among the
        candidates whose result saves latency (by the latency function) when ``arch_latency`` is given: a table can
        be non-monotonic by a measurement's noise at small widths, and a step that saves nothing must not end the
        search while another stage could still shrink.
        """
        removable, reducible, first3d = self._removable(arch), self._reducible(arch), self._first_mb3d(arch)
        actions: list[Action] = []
        if self.mode == "paper":
            imp = self.stage_importance(arch)
            ranked_mps = [Action("identity", s, slot) for s, slot in
                          sorted(removable, key=lambda p: (self.scores[p[0]][p[1]], p))]
            ranked_widths = [Action("width", s) for s in sorted(reducible, key=lambda s: (imp[s], s))]
            for ranked in (ranked_mps, [Action("remove_mb3d", *first3d)] if first3d else [], ranked_widths):
                choice = self._first_saving(arch, ranked, arch_latency)
                if choice is not None:
                    actions.append(choice)
            actions.sort(key=Action.sort_key)
        else:
            actions += [Action("identity", s, slot) for s, slot in removable]
            if first3d is not None:
                actions.append(Action("remove_mb3d", *first3d))
            actions += [Action("width", s) for s in reducible]
        return [a for a in actions if self.apply(arch, a) is not None]

    def _first_saving(self, arch: Arch, ranked: list[Action], arch_latency: float | None) -> Action | None:
        valid = [a for a in ranked if self.apply(arch, a) is not None]
        if arch_latency is None or not valid:
            return valid[0] if valid else None
        latencies = self.latencies([self.apply(arch, a) for a in valid])
        return next((a for a, lat in zip(valid, latencies) if arch_latency - lat > 0), None)

    def apply(self, arch: Arch, action: Action) -> Arch | None:
        """``arch`` after ``action``, or ``None`` if the result is not a valid arch of the space."""
        try:
            if action.kind == "width":
                result = arch.with_width(action.stage, arch.widths[action.stage] - self.width_step)
            elif action.kind == "identity":
                result = arch.with_kind(action.stage, action.slot, IDENTITY)
            else:
                lead = self.space.space_family.lead
                kind = lead if (self.mb3d_removal == "to_4d" and lead in self.space.kinds[action.stage]) \
                    else IDENTITY
                result = arch.with_kind(action.stage, action.slot, kind)
            self.space.check(result)
        except ValueError:
            return None
        return result

    # ------------------------------------------------------------------ ask / tell
    def ask(self) -> list[Candidate]:
        if self.finished or self.pending:
            return []  # the round barrier: results are outstanding
        if self.current_accuracy is None:  # round 0: the starting arch's accuracy is the first reference
            candidate = self._candidate(self.current, self.current_latency, action="start", round=0)
            self._round = [RoundEntry(None, None, candidate_id=candidate.id)]
            return [candidate]
        return self._start_round()

    def _start_round(self) -> list[Candidate]:
        actions = self.actions(self.current, self.current_latency)
        archs = [self.apply(self.current, a) for a in actions]
        latencies = self.latencies(archs)
        entries = [RoundEntry(a, arch, lat, self.current_latency - lat)
                   for a, arch, lat in zip(actions, archs, latencies) if self.current_latency - lat > 0]
        if not entries:
            self._finish("no action saves latency")
            return []
        fresh = [e for e in entries if e.arch.to_json() not in self._cache]
        left = self.budget_left()
        if left is not None and len(fresh) > left:
            self._finish(f"budget exhausted ({self.evaluations} evaluations)")
            return []
        self.round += 1
        self._round, asked = [], []
        for entry in entries:
            cached = self._cache.get(entry.arch.to_json())
            if cached is not None:
                self._round.append(replace(entry, accuracy=cached))
                continue
            candidate = self._candidate(entry.arch, entry.latency_ms, action=entry.action.to_dict(), round=self.round)
            self._round.append(replace(entry, candidate_id=candidate.id))
            asked.append(candidate)
        if not asked:
            self._decide()
            return self.ask()
        return asked

    def _on_tell(self, candidate: Candidate, accuracy: float) -> None:
        self._cache[candidate.arch.to_json()] = accuracy
        self._round = [replace(e, accuracy=accuracy) if e.candidate_id == candidate.id else e for e in self._round]
        if candidate.info.get("action") == "start":
            self.current_accuracy = accuracy
            self.trajectory.append(TrajectoryStep(0, None, self.current, self.current_latency, accuracy, candidate.id,
                                                  self.evaluations))
            self._round = []
            self._finish_if_stopped()
            return
        if not self.pending:
            self._decide()

    def _decide(self) -> None:
        table = tuple(RoundCandidate(e.action, e.arch, e.latency_ms, e.saved_ms, e.accuracy,
                                     (self.current_accuracy - e.accuracy) / e.saved_ms, e.candidate_id)
                      for e in self._round)
        best = min(table, key=lambda c: (c.score, c.action.sort_key()))
        self.current, self.current_latency, self.current_accuracy = best.arch, best.latency_ms, best.accuracy
        self.trajectory.append(TrajectoryStep(self.round, best.action, best.arch, best.latency_ms, best.accuracy,
                                              best.candidate_id, self.evaluations, table))
        self._round = []
        self._finish_if_stopped()

    def _finish_if_stopped(self) -> None:
        if self.current_latency <= self.stop_ms:
            continued = self.stop_ms < self.targets[-1]
            self._finish(f"continued below {self.stop_ms:.4g} ms" if continued else "target met")

    def continue_below(self, latency_ms: float) -> bool:
        """Un-finish the run so that it slims on until a step is predicted strictly below ``latency_ms``.

        Called with the current latency (``continue_below(search.current_latency)``) it asks exactly one more round:
        the chosen action saves latency by construction, so the next step ends the run again (``stop_reason``
        "continued below ... ms"). Returns ``False`` (and leaves the run as it is) when there is nothing to do: the
        current arch is already below ``latency_ms``, or no action saves latency (then the run is finished with
        that reason, and no round is asked in vain). Results must not be outstanding.
        """
        if self.pending or self._round:
            raise ValueError("continue_below: results of the current round are outstanding")
        if self.current_accuracy is None:
            raise ValueError("continue_below: the run has not evaluated its starting arch yet")
        if self.current_latency < latency_ms:
            return False
        actions = self.actions(self.current, self.current_latency)
        latencies = self.latencies([self.apply(self.current, a) for a in actions])
        if not any(self.current_latency - lat > 0 for lat in latencies):
            self._finish("no action saves latency")
            return False
        self.stop_ms = min(self.stop_ms, math.nextafter(float(latency_ms), -math.inf))
        self._finished, self.stop_reason = False, ""
        return True

    def cannot_win(self, candidate_id: int, accuracy_bound: float) -> bool:
        """True when even ``accuracy_bound`` gives a worse score than a candidate of this round already has.

        A candidate stopped on that ground is told its bound: it still loses, so the decision is unchanged.
        """
        entry = next((e for e in self._round if e.candidate_id == candidate_id), None)
        if entry is None or entry.action is None or self.current_accuracy is None:
            return False
        best = (self.current_accuracy - accuracy_bound) / entry.saved_ms
        done = [(self.current_accuracy - e.accuracy) / e.saved_ms for e in self._round if e.accuracy is not None]
        return bool(done) and best > min(done)

    # ------------------------------------------------------------------ results
    def answer(self, target_ms: float) -> Evaluation | None:
        """The first arch of the trajectory at or under ``target_ms`` (the paper's stopping rule)."""
        index = self.answer_index(target_ms)
        return None if index is None else self.evaluation_at(index)

    def answer_index(self, target_ms: float) -> int | None:
        """The index in ``trajectory`` of :meth:`answer`'s step, or ``None``."""
        return next((i for i, step in enumerate(self.trajectory) if step.latency_ms <= target_ms), None)

    def evaluation_at(self, index: int) -> Evaluation:
        """Step ``index`` of the trajectory as an evaluation (a step reached through a cached arch has id -1)."""
        step = self.trajectory[index]
        return Evaluation(Candidate(-1 if step.candidate_id is None else step.candidate_id, step.arch,
                                    step.latency_ms, {"round": step.round}), step.accuracy)

    def sweep(self, targets: Sequence[float] | None = None) -> dict[float, Evaluation | None]:
        """Answers for every target of a sweep, from this one trajectory."""
        return {float(t): self.answer(float(t)) for t in (targets or self.targets)}

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update({
            "mode": self.mode, "mb3d_removal": self.mb3d_removal, "width_step": self.width_step,
            "targets": self.targets, "stop_ms": self.stop_ms, "scores": self.scores, "space": self.space.to_dict(),
            "current": self.current.to_dict(), "current_latency": self.current_latency,
            "current_accuracy": self.current_accuracy, "round": self.round,
            "trajectory": [step.to_dict() for step in self.trajectory], "cache": self._cache,
            "round_entries": [entry.to_dict() for entry in self._round],
        })
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if state["space"] != self.space.to_dict():
            raise ValueError("state: saved for another search space")
        self.mode, self.mb3d_removal, self.width_step = state["mode"], state["mb3d_removal"], state["width_step"]
        self.targets, self.scores = list(state["targets"]), state["scores"]
        self.stop_ms = float(state.get("stop_ms", self.targets[-1]))  # states saved before continue_below existed
        self.current = Arch.from_dict(state["current"])
        self.current_latency, self.current_accuracy = state["current_latency"], state["current_accuracy"]
        self.round, self._cache = state["round"], dict(state["cache"])
        self.trajectory = [TrajectoryStep.from_dict(step) for step in state["trajectory"]]
        self._round = [RoundEntry.from_dict(entry) for entry in state["round_entries"]]
