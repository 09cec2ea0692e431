"""Random search within a latency target: the simplest enumeration baseline. Plain Python.

Each ``ask`` draws archs uniformly from the space (``space.sample``: uniform over valid archs, with slot placement)
until one is within the target by the latency function and not evaluated before; rejected draws cost no evaluation.
``parallel`` candidates are proposed per ``ask`` (evaluated in parallel by the caller).
"""

from __future__ import annotations

from typing import Any

from slimnas.search_spaces import SearchSpace

from ._base import Candidate, LatencyFn, TargetSearch

__all__ = ["RandomSearch"]


class RandomSearch(TargetSearch):
    """Uniform random archs within ``target_ms`` until ``budget`` evaluations are used."""

    name = "random"

    def __init__(self, space: SearchSpace, latency_fn: LatencyFn, target_ms: float, budget: int, seed: int | None = 0,
                 parallel: int = 1, max_draws: int = 100_000, draw_batch: int = 256) -> None:
        super().__init__(latency_fn, budget, seed)
        if target_ms <= 0:
            raise ValueError(f"target_ms: must be positive, got {target_ms}")
        self.space, self.target_ms, self.parallel = space, float(target_ms), max(1, int(parallel))
        self.max_draws, self.draw_batch, self.draws = max_draws, draw_batch, 0
        self._seen: set[str] = set()

    def ask(self) -> list[Candidate]:
        out: list[Candidate] = []
        want = self._room(self.parallel)
        while len(out) < want:
            if self.draws >= self.max_draws:
                if not out and not self.pending:
                    self._finish(f"no new arch within {self.target_ms} ms in {self.draws} draws")
                break
            archs = [self.space.sample(self.rng) for _ in range(self.draw_batch)]
            self.draws += len(archs)
            for arch, latency in zip(archs, self.latencies(archs)):
                key = arch.to_json()
                if latency <= self.target_ms and key not in self._seen and len(out) < want:
                    self._seen.add(key)
                    out.append(self._candidate(arch, latency))
        return out

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "draws": self.draws, "seen": sorted(self._seen)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.draws, self._seen = state["draws"], set(state["seen"])
