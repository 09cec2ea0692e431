"""The search algorithms, pure: latency-driven slimming and the enumeration baselines (ask/tell, seedable, with
JSON-ready state). They see archs, a latency function and accuracy results; they import neither torch nor ray.

Each method is a plug-in: a :class:`MethodSpec` (its factory and capabilities, :mod:`slimnas.search.methods`) found
by name in :data:`slimnas.registry.METHODS`."""

from ._base import Candidate, Evaluation, SearchAlgorithm, pareto_front
from .exhaustive import ExhaustiveSearch
from .methods import MethodRequest, MethodSpec, method_spec
from .optuna_search import NSGA2Search, TPESearch
from .random_search import RandomSearch
from .slimming import Action, SlimmingSearch
from .start import STARTS, start_arch

__all__ = ["Candidate", "Evaluation", "SearchAlgorithm", "pareto_front", "Action", "SlimmingSearch",
           "RandomSearch", "ExhaustiveSearch", "TPESearch", "NSGA2Search", "start_arch", "STARTS",
           "MethodSpec", "MethodRequest", "method_spec"]
