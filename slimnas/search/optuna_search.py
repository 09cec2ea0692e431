"""Optuna baselines: TPE with the latency target as a constraint, and NSGA-II on (accuracy, latency).

Both search the structure encoding of :mod:`.encoding` (per stage: width in steps of 16, depth, MB3D count; an MB3D
count above the depth is clipped to it). Budget accounting is the same as every method's: one subnet evaluation per
told candidate.

- :class:`TPESearch`: Optuna's TPE (multivariate) with a constraint (``trial.set_constraint``, Optuna 5): predicted
  latency minus the target. An
  arch over the target is told to the study as infeasible at once, with no evaluation spent (its value is a floor
  of 0); TPE learns to avoid that region.
- :class:`NSGA2Search`: Optuna's NSGA-II, maximising accuracy and minimising predicted latency, no target: one run
  gives a Pareto front that answers every target of a sweep.

When the target is tight, TPE can propose many infeasible archs in a row (each costs a model fit, not an
evaluation); after ``max_infeasible_streak`` of them within one ``ask`` the study is given a random *feasible*
structure (drawn with the algorithm's seeded generator, checked with the latency function) as its next trial, which
bounds the time spent and shows TPE the feasible region. An arch evaluated before is told its known result without a
new evaluation. State is JSON-ready: the study's trial
log is replayed on ``load_state_dict``, and the sampler is re-seeded from ``seed + number of trials`` before each ask,
so a resumed run proposes what an uninterrupted one would. One sampler serves every ask (re-seeding its generators):
a fresh sampler per ask would recompute its view of the search space from every trial each time, which made an ask
cost grow with the study and a tight-target TPE run quadratic in its (mostly infeasible) asks.
"""

from __future__ import annotations

import abc
import warnings
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from slimnas.search_spaces import IDENTITY, SearchSpace

from ._base import Candidate, LatencyFn, SearchAlgorithm
from .encoding import StructureChoice, decode

__all__ = ["TPESearch", "NSGA2Search"]

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _distributions(space: SearchSpace) -> dict[str, BaseDistribution]:
    dists: dict[str, BaseDistribution] = {}
    for s in range(len(space.slots)):
        dists[f"w{s}"] = IntDistribution(space.min_widths[s], space.max_widths[s], step=16)
        if IDENTITY in space.kinds[s] and space.slots[s] > 1:
            dists[f"d{s}"] = IntDistribution(1, space.slots[s])
        if {space.space_family.lead, space.space_family.tail} <= set(space.kinds[s]):
            dists[f"t{s}"] = IntDistribution(0, space.slots[s])
    return dists


def _choice(space: SearchSpace, params: dict[str, int]) -> StructureChoice:
    n = len(space.slots)
    depths = tuple(params.get(f"d{s}", space.slots[s]) for s in range(n))
    return StructureChoice(tuple(params[f"w{s}"] for s in range(n)), depths,
                           tuple(min(params.get(f"t{s}", 0), depths[s]) for s in range(n)))


class _OptunaSearch(SearchAlgorithm):
    directions: list[str] = ["maximize"]

    def __init__(self, space: SearchSpace, latency_fn: LatencyFn, budget: int, seed: int | None = 0,
                 target_ms: float | None = None, parallel: int = 1, max_asks: int = 20_000,
                 max_infeasible_streak: int = 32) -> None:
        super().__init__(latency_fn, budget, seed)
        self.space, self.target_ms, self.parallel, self.max_asks = space, target_ms, max(1, parallel), max_asks
        self.max_infeasible_streak = max_infeasible_streak
        self.dists = _distributions(space)
        self.study = optuna.create_study(directions=self.directions)
        self._trial_of: dict[int, int] = {}  # candidate id -> trial number
        self._cache: dict[str, float] = {}
        self.asks = 0
        self._shared_sampler: optuna.samplers.BaseSampler | None = None

    @abc.abstractmethod
    def _sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        """A fresh sampler for the next ask."""

    def _values(self, accuracy: float, latency_ms: float) -> list[float]:
        return [accuracy]

    def _reseed(self) -> None:
        seed = (self.seed or 0) + len(self.study.get_trials(deepcopy=False))
        if self._shared_sampler is not None and _seed_sampler(self._shared_sampler, seed):
            self.study.sampler = self._shared_sampler
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self._shared_sampler = self.study.sampler = self._sampler(seed)

    def ask(self) -> list[Candidate]:
        want = self._room(self.parallel)
        out: list[Candidate] = []
        streak = 0
        while len(out) < want:
            if streak >= self.max_infeasible_streak:
                params = self._random_feasible_params()
                if params is not None:
                    self.study.enqueue_trial(params)
                streak = 0
            if self.asks >= self.max_asks:
                if not out and not self.pending:
                    self._finish(f"no new feasible arch in {self.asks} asks")
                break
            self.asks += 1
            self._reseed()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                trial = self.study.ask(self.dists)
            arch = decode(self.space, _choice(self.space, trial.params))
            latency = self.latencies([arch])[0]
            over = 0.0 if self.target_ms is None else latency - self.target_ms
            if self.target_ms is not None:
                trial.set_constraint("latency", over)
            trial.set_user_attr("latency_ms", latency)
            if over > 0:
                self.study.tell(trial, self._values(0.0, latency))
                streak += 1
                continue
            known = self._cache.get(arch.to_json())
            if known is not None:
                if known != known:  # NaN: being evaluated right now; this duplicate teaches the study nothing
                    self.study.tell(trial, state=TrialState.FAIL)
                else:
                    self.study.tell(trial, self._values(known, latency))
                continue
            self._cache[arch.to_json()] = float("nan")  # asked: do not ask it twice while it is evaluated
            candidate = self._candidate(arch, latency, trial=trial.number)
            self._trial_of[candidate.id] = trial.number
            out.append(candidate)
        return out

    def _random_feasible_params(self, tries: int = 16, batch: int = 64) -> dict[str, int] | None:
        """Params of a random structure within the target (uniform over the encoding), or ``None``."""
        for _ in range(tries):
            drawn = []
            for _ in range(batch):
                params = {}
                for name, dist in self.dists.items():
                    params[name] = self.rng.randrange(dist.low, dist.high + 1, dist.step)
                drawn.append(params)
            archs = [decode(self.space, _choice(self.space, p)) for p in drawn]
            for params, latency in zip(drawn, self.latencies(archs)):
                if self.target_ms is None or latency <= self.target_ms:
                    return params
        return None

    def _on_tell(self, candidate: Candidate, accuracy: float) -> None:
        self._cache[candidate.arch.to_json()] = accuracy
        self.study.tell(self._trial_of.pop(candidate.id), self._values(accuracy, candidate.latency_ms))

    # ------------------------------------------------------------------ state: the trial log
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        trials = [{"state": t.state.name, "params": t.params, "values": t.values, "user_attrs": t.user_attrs,
                   "system_attrs": t.system_attrs}
                  for t in self.study.get_trials(deepcopy=False)
                  if t.state in (TrialState.COMPLETE, TrialState.RUNNING, TrialState.FAIL)]
        # NSGA-II caches its parent population in the study's system attributes: part of the state too.
        study_attrs = self.study._storage.get_study_system_attrs(self.study._study_id)
        state.update({"target_ms": self.target_ms, "asks": self.asks, "trials": trials, "study_attrs": study_attrs,
                      "trial_of": {str(k): v for k, v in self._trial_of.items()},
                      "cache": {k: v for k, v in self._cache.items() if v == v}})
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.target_ms, self.asks = state["target_ms"], state["asks"]
        self._cache = dict(state["cache"])
        self.study = optuna.create_study(directions=self.directions)
        self._shared_sampler = None
        for t in state["trials"]:  # replayed in order: trial numbers stay what they were
            trial_state = TrialState[t["state"]]
            self.study.add_trial(create_trial(
                state=trial_state, params=t["params"], distributions=self.dists,
                values=t["values"] if trial_state == TrialState.COMPLETE else None, user_attrs=t["user_attrs"],
                system_attrs=t["system_attrs"]))
        for key, value in state["study_attrs"].items():
            self.study._storage.set_study_system_attr(self.study._study_id, key, value)
        self._trial_of = {int(k): v for k, v in state["trial_of"].items()}
        for candidate in self.outstanding():
            self._cache[candidate.arch.to_json()] = float("nan")


def _seed_sampler(sampler: optuna.samplers.BaseSampler, seed: int) -> bool:
    """Re-seed a TPE/NSGA-II sampler's generators in place (as ``Sampler(seed=seed)`` would have them).

    Returns ``False`` when the sampler does not keep them where Optuna 4-5 does; the caller then builds a fresh one.
    """
    states = [getattr(sampler, "_rng", None), getattr(getattr(sampler, "_random_sampler", None), "_rng", None)]
    if not all(hasattr(state, "rng") for state in states):
        return False
    for state in states:
        state.rng.seed(seed)
    return True


class TPESearch(_OptunaSearch):
    """Optuna TPE within ``target_ms`` (a constraint), maximising accuracy."""

    name = "tpe"

    def __init__(self, space: SearchSpace, latency_fn: LatencyFn, target_ms: float, budget: int,
                 seed: int | None = 0, parallel: int = 1, n_startup_trials: int = 10, **kwargs: Any) -> None:
        self.n_startup_trials = n_startup_trials
        super().__init__(space, latency_fn, budget, seed, target_ms=float(target_ms), parallel=parallel, **kwargs)

    def _sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=self.n_startup_trials)


class NSGA2Search(_OptunaSearch):
    """Optuna NSGA-II on (accuracy up, predicted latency down): a Pareto front for a whole sweep."""

    name = "nsga2"
    directions = ["maximize", "minimize"]

    def __init__(self, space: SearchSpace, latency_fn: LatencyFn, budget: int, seed: int | None = 0,
                 parallel: int = 1, population_size: int = 16, target_ms: float | None = None,
                 **kwargs: Any) -> None:
        self.population_size = population_size
        super().__init__(space, latency_fn, budget, seed, target_ms=target_ms, parallel=parallel, **kwargs)

    def _values(self, accuracy: float, latency_ms: float) -> list[float]:
        return [accuracy, latency_ms]

    def _sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=self.population_size)
