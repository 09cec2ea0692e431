"""A search method that slimnas does not ship, in one module: 'cheapest-first'.

It samples archs of the space, keeps those within the target and evaluates them by ascending predicted latency, up to
its budget; its answer is the best one evaluated (the base class's). It is known to slimnas through the entry point
``cheapest-first`` of this package's ``slimnas.methods`` group; no slimnas module names it. It works on any space
family (it only samples the space).
"""

from __future__ import annotations

from typing import Any

from slimnas.search import Candidate, MethodRequest, MethodSpec, SearchAlgorithm
from slimnas.search_spaces import Arch

#: Archs sampled to choose from.
POOL = 64


class CheapestFirst(SearchAlgorithm):
    """Sampled archs within ``target_ms``, cheapest first, one evaluation each, until ``budget``."""

    name = "cheapest-first"

    def __init__(self, space: Any, latency_fn: Any, target_ms: float, budget: int, seed: int = 0) -> None:
        super().__init__(latency_fn, budget, seed)
        self.target_ms = target_ms
        archs = list({a.to_json(): a for a in (space.sample(self.rng) for _ in range(POOL))}.values())
        pool = [(ms, a) for ms, a in zip(self.latencies(archs), archs) if ms <= target_ms]
        self.queue: list[tuple[float, Arch]] = sorted(pool, key=lambda p: (p[0], p[1].to_json()))

    def ask(self) -> list[Candidate]:
        if self.pending:
            return []
        if not self.queue or self.budget_left() <= 0:
            self._finish("budget spent" if self.queue else "no more archs within the target")
            return []
        latency_ms, arch = self.queue.pop(0)
        return [self._candidate(arch, latency_ms)]

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "queue": [[ms, a.to_dict()] for ms, a in self.queue]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.queue = [(float(ms), Arch.from_dict(a)) for ms, a in state["queue"]]


def _build(request: MethodRequest) -> CheapestFirst:
    return CheapestFirst(request.space, request.latency_fn, request.target_ms, request.needs_budget(), request.seed)


CHEAPEST_FIRST = MethodSpec("cheapest-first", _build, sweep=False, early_stop=False,
                            description="sampled archs within the target, cheapest first")
