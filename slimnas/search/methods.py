"""Search methods as plug-ins: what a method is (:class:`MethodSpec`), what it is built from (:class:`MethodRequest`),
and slimnas's own methods. Plain Python (no torch, ray or mlflow).

A search job knows a method only through its spec, found by name in :data:`slimnas.registry.METHODS`: it builds the
method's :class:`~slimnas.search.SearchAlgorithm` with ``spec.build(request)`` and plans its runs from the declared
capabilities:

- ``sweep``: one run answers every target of a sweep (slimming walks down past each target; NSGA-II's Pareto front
  holds an answer for each). Otherwise the job runs the method once per target, the request holding that one target.
- ``uses_budget``: the run is given a budget of subnet evaluations (per target, or for a sweep the largest of the
  targets' budgets). A method that stops by its own rule (slimming) runs first, before the methods whose budget
  ``budget: auto`` may derive from it.
- ``auto_budget``: for a finished run of this method, the evaluations it had used when it first reached a target:
  what ``budget: auto`` gives the budgeted methods at that target ("equal budgets"). Slimming's.
- ``early_stop``: the algorithm's :meth:`~slimnas.search.SearchAlgorithm.cannot_win` can rule a candidate out from a
  partial evaluation, so the job's early-stop scheduler runs for it; otherwise every evaluation runs to the end.
- ``needs_importance``: the request carries the supernet's importance scores (slimming ranks its actions by them).
- ``settings``: the job config section (e.g. ``slimming``) whose fields reach the factory as ``request.options``.

Adding a method is one module and one entry point; slimnas's code does not change. For example::

    # my_pkg/greedy.py
    from slimnas.search import MethodRequest, MethodSpec, SearchAlgorithm

    class Greedy(SearchAlgorithm):
        name = "greedy"
        ...  # ask / tell, state_dict / load_state_dict (see slimnas.search._base)

    GREEDY = MethodSpec("greedy", lambda r: Greedy(r.space, r.latency_fn, r.target_ms, r.budget, r.seed),
                        sweep=False, early_stop=False)

    # my_pkg's pyproject.toml
    [project.entry-points."slimnas.methods"]
    greedy = "my_pkg.greedy:GREEDY"

(or, in one process, ``slimnas.registry.METHODS.register("greedy", GREEDY)``). A job config then names it under
``methods:``. The algorithm runs in the driver process (the Tune searcher); Ray workers only evaluate its candidates.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from slimnas.errors import InputError

from ._base import LatencyFn, SearchAlgorithm
from .exhaustive import ExhaustiveSearch
from .optuna_search import NSGA2Search, TPESearch
from .random_search import RandomSearch
from .slimming import SlimmingSearch
from .start import start_arch

if TYPE_CHECKING:
    from slimnas.search_spaces.efficientformer import Importance, SearchSpace

__all__ = ["MethodRequest", "MethodSpec", "MethodFactory", "check_method", "method_spec",
           "auto_budget_problem", "SLIMMING", "SLIMMING_EXTENDED",
           "RANDOM", "EXHAUSTIVE", "TPE", "NSGA2"]


@dataclass(frozen=True)
class MethodRequest:
    """What a method's algorithm is built from: one signature for every factory.

    Attributes:
        space: the search space.
        latency_fn: predicted latency (ms) of a list of archs.
        targets: the latency targets (ms) this run answers, loosest first: the whole sweep for a ``sweep`` method,
            one target otherwise.
        budget: subnet evaluations for this run; ``None`` for a method that does not use one.
        seed: the job's seed.
        importance: the supernet's importance scores (given when the spec ``needs_importance``).
        options: the fields of the job config's section named by the spec's ``settings`` (else empty).
    """

    space: SearchSpace
    latency_fn: LatencyFn
    targets: tuple[float, ...]
    budget: int | None = None
    seed: int = 0
    importance: Importance | None = None
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        if not self.targets:
            raise ValueError("targets: a request needs at least one latency target")
        object.__setattr__(self, "targets", tuple(sorted((float(t) for t in self.targets), reverse=True)))

    @property
    def target_ms(self) -> float:
        """The one target of a per-target run."""
        if len(self.targets) != 1:
            raise ValueError(f"target_ms: this request holds {len(self.targets)} targets (a sweep)")
        return self.targets[0]

    def needs_budget(self) -> int:
        """``budget``, which a budgeted method cannot do without."""
        if self.budget is None:
            raise ValueError("budget: this method needs a budget of evaluations")
        return self.budget


#: Builds a method's search algorithm from a request.
MethodFactory = Callable[[MethodRequest], SearchAlgorithm]


@dataclass(frozen=True)
class MethodSpec:
    """A search method: its name, how its algorithm is built, and what it can do (see the module docstring)."""

    name: str
    build: MethodFactory
    sweep: bool
    early_stop: bool
    uses_budget: bool = True
    needs_importance: bool = False
    #: (finished run, target ms) -> evaluations it used to first reach the target; defines ``budget: auto``
    auto_budget: Callable[[SearchAlgorithm, float], int] | None = None
    settings: str | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("name: a method needs a name")
        if not callable(self.build):
            raise TypeError(f"method {self.name!r}: build must be callable")
        if self.auto_budget is not None and self.uses_budget:
            raise ValueError(f"method {self.name!r}: a method that defines budget 'auto' cannot itself take a budget")


def check_method(name: str, obj: Any) -> None:
    """The :data:`~slimnas.registry.METHODS` check: a name must resolve to a :class:`MethodSpec` of that name."""
    if not isinstance(obj, MethodSpec):
        raise TypeError(f"search method {name!r}: expected a MethodSpec, got {type(obj).__name__}")
    if obj.name != name:
        raise ValueError(f"search method {name!r}: its spec is named {obj.name!r}")


def method_spec(name: str) -> MethodSpec:
    """The spec ``name`` resolves to in :data:`~slimnas.registry.METHODS`; :class:`InputError` naming the known
    names, or saying what the name resolved to, when it is not a method."""
    from slimnas.registry import METHODS

    spec = METHODS.get(name)
    try:
        check_method(name, spec)
    except (TypeError, ValueError) as exc:
        raise InputError(str(exc)) from None
    return spec


def auto_budget_problem(methods: Sequence[str]) -> str | None:
    """Why ``budget: auto`` cannot work for a job comparing ``methods`` (the words after ``budget``), or ``None``:
    some method takes a budget and none of them defines ``auto``."""
    from slimnas.registry import METHODS

    specs = [method_spec(m) for m in methods]
    if any(s.auto_budget is not None for s in specs) or not any(s.uses_budget for s in specs):
        return None
    definers = []
    for name in METHODS.names():
        try:
            if method_spec(name).auto_budget is not None:
                definers.append(name)
        except InputError:
            continue  # a broken plug-in is reported when a job names it
    return (f"'auto' matches the evaluations of {' or '.join(definers) or 'a method that defines it'}; "
            f"add it to methods or give a number")


# ---------------------------------------------------------------------------------------------- slimnas's methods
def _slimming(mode: str) -> MethodFactory:
    def build(request: MethodRequest) -> SearchAlgorithm:
        if request.importance is None:
            raise ValueError("importance: slimming ranks its actions by the supernet's importance scores")
        start = start_arch(request.space, request.importance)
        return SlimmingSearch(request.space, start, request.importance, request.latency_fn, request.targets,
                              mode=mode, mb3d_removal=request.options.get("mb3d_removal", "to_4d"),
                              seed=request.seed)
    return build


def _slimming_budget(algorithm: SearchAlgorithm, target_ms: float) -> int:
    """The evaluations a slimming run had used at its first step at or under ``target_ms`` (all of them if none)."""
    steps = getattr(algorithm, "trajectory", [])
    step = next((s for s in steps if s.latency_ms <= target_ms), None)
    return max(1, step.evaluations if step else algorithm.evaluations)


SLIMMING = MethodSpec(
    "slimming", _slimming("paper"), sweep=True, early_stop=True, uses_budget=False, needs_importance=True,
    auto_budget=_slimming_budget, settings="slimming",
    description="the paper's latency-driven slimming: one run walks down through every target")
SLIMMING_EXTENDED = MethodSpec(
    "slimming-extended", _slimming("extended"), sweep=True, early_stop=True, uses_budget=False,
    needs_importance=True, settings="slimming",
    description="slimming with the extended action set")
RANDOM = MethodSpec(
    "random", lambda r: RandomSearch(r.space, r.latency_fn, r.target_ms, r.needs_budget(), seed=r.seed),
    sweep=False, early_stop=True, description="random archs within the target, the best wins")
EXHAUSTIVE = MethodSpec(
    "exhaustive", lambda r: ExhaustiveSearch(r.space, r.latency_fn, r.target_ms, r.needs_budget(), seed=r.seed),
    sweep=False, early_stop=True, description="a structure grid within the target, the best wins")
TPE = MethodSpec(
    "tpe", lambda r: TPESearch(r.space, r.latency_fn, r.target_ms, r.needs_budget(), seed=r.seed),
    sweep=False, early_stop=False, description="Optuna TPE, the target a constraint")
# one front for every target; archs slower than the loosest target serve none and cost no evaluation
NSGA2 = MethodSpec(
    "nsga2", lambda r: NSGA2Search(r.space, r.latency_fn, r.needs_budget(), seed=r.seed, target_ms=r.targets[0]),
    sweep=True, early_stop=False, description="Optuna NSGA-II on (accuracy, latency): one Pareto front")
