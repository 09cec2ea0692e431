"""Exhaustive enumeration of a (coarsened) structure grid within a latency target. Plain Python.

The grid is every combination of per-stage width, depth and MB3D count (:mod:`.encoding`), keeping every ``k``-th
width and depth counted down from the maximum. Starting at ``k = 1`` (the full grid) the coarsening grows until the
archs *within the target* fit the evaluation budget; those are all evaluated, slowest (most capable) first. If even the
coarsest grid (each stage's maximum and minimum only) does not fit, the feasible archs are ranked by latency and an
evenly spaced subset of ``budget`` of them is evaluated, and the run says so (``truncated``).
"""

from __future__ import annotations

import itertools
from typing import Any

from slimnas.search_spaces import Arch, SearchSpace

from ._base import Candidate, LatencyFn, TargetSearch
from .encoding import StructureChoice, coarse, decode, depth_choices, mb3d_choices

__all__ = ["ExhaustiveSearch", "structure_grid"]


def structure_grid(space: SearchSpace, step: int) -> list[Arch]:
    """Every arch of the grid that keeps each ``step``-th width and depth (the maximum always kept)."""
    per_stage = []
    for s in range(len(space.slots)):
        widths = coarse(space.width_choices(s), step)
        depths = coarse(depth_choices(space, s), step)
        options = [(w, d, t) for w in widths for d in depths for t in mb3d_choices(space, s, d)]
        per_stage.append(options)
    archs = []
    for combo in itertools.product(*per_stage):
        choice = StructureChoice(tuple(c[0] for c in combo), tuple(c[1] for c in combo), tuple(c[2] for c in combo))
        archs.append(decode(space, choice))
    return archs


class ExhaustiveSearch(TargetSearch):
    """Evaluate every arch of the finest grid whose feasible part fits ``budget``."""

    name = "exhaustive"

    def __init__(self, space: SearchSpace, latency_fn: LatencyFn, target_ms: float, budget: int, seed: int | None = 0,
                 parallel: int = 1, max_grid: int = 2_000_000) -> None:
        super().__init__(latency_fn, budget, seed)
        self.space, self.target_ms, self.parallel = space, float(target_ms), max(1, int(parallel))
        self.max_grid = max_grid
        self.queue: list[dict[str, Any]] | None = None
        self.grid_step = 0
        self.grid_size = 0
        self.truncated = False

    def _plan(self) -> None:
        step = 1
        largest = max(max(len(space_w) for space_w in (self.space.width_choices(s) for s in range(4))),
                      max(self.space.slots))
        while True:
            size = _grid_size(self.space, step)
            if size <= self.max_grid:
                archs = structure_grid(self.space, step)
                lat = self.latencies(archs)
                feasible = sorted(((lt, a) for a, lt in zip(archs, lat) if lt <= self.target_ms),
                                  key=lambda p: (-p[0], p[1].to_json()))
                if len(feasible) <= self.budget or step >= largest:
                    break
            step += 1
        self.grid_step, self.grid_size = step, len(archs)
        if len(feasible) > self.budget:
            self.truncated = True
            idx = [round(i * (len(feasible) - 1) / max(self.budget - 1, 1)) for i in range(self.budget)]
            feasible = [feasible[i] for i in sorted(set(idx))]
        self.queue = [{"arch": a.to_dict(), "latency_ms": lt} for lt, a in feasible]

    def ask(self) -> list[Candidate]:
        if self.finished:
            return []
        if self.queue is None:
            self._plan()
        if not self.queue:
            if not self.pending:
                self._finish("grid done" + (" (truncated to the budget)" if self.truncated else ""))
            return []
        out = []
        while self.queue and len(out) < self.parallel:
            item = self.queue.pop(0)
            out.append(self._candidate(Arch.from_dict(item["arch"]), item["latency_ms"], grid_step=self.grid_step))
        return out

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "queue": self.queue, "grid_step": self.grid_step, "grid_size": self.grid_size,
                "truncated": self.truncated}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.queue = state["queue"]
        self.grid_step, self.grid_size, self.truncated = state["grid_step"], state["grid_size"], state["truncated"]


def _grid_size(space: SearchSpace, step: int) -> int:
    total = 1
    for s in range(len(space.slots)):
        widths = len(coarse(space.width_choices(s), step))
        total *= widths * sum(len(mb3d_choices(space, s, d)) for d in coarse(depth_choices(space, s), step))
    return total
