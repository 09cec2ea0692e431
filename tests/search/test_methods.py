"""Search methods as plug-ins: the registry's built-ins, their specs and declared capabilities (pure, no Ray)."""

from pathlib import Path

import pytest
import tomllib

from slimnas.errors import InputError
from slimnas.registry import METHODS
from slimnas.search import MethodRequest, MethodSpec, SearchAlgorithm, method_spec
from slimnas.search.methods import auto_budget_problem
from slimnas.search_spaces.efficientformer import importance_from_alphas
from slimnas.testing import TOY_SPACE, run_search, toy_accuracy, toy_latency

BUILTINS = {"slimming", "slimming-extended", "random", "exhaustive", "tpe", "nsga2"}
TARGETS = (18.0, 16.0)
#: name -> (sweep, early_stop, uses_budget, needs_importance, defines budget 'auto')
CAPABILITIES = {
    "slimming": (True, True, False, True, True),
    "slimming-extended": (True, True, False, True, False),
    "random": (False, True, True, False, False),
    "exhaustive": (False, True, True, False, False),
    "tpe": (False, False, True, False, False),
    "nsga2": (True, False, True, False, False),
}


def _importance():
    alphas = [[[0.0] * len(k)] * n for k, n in zip(TOY_SPACE.kinds, TOY_SPACE.slots)]
    return importance_from_alphas(TOY_SPACE.kinds, alphas)


def _request(spec: MethodSpec, **extra) -> MethodRequest:
    return MethodRequest(TOY_SPACE, toy_latency, TARGETS if spec.sweep else TARGETS[:1],
                         budget=6 if spec.uses_budget else None, seed=1,
                         importance=_importance() if spec.needs_importance else None, **extra)


def test_the_registry_lists_the_builtins_and_pyproject_declares_exactly_them():
    assert set(METHODS.builtins) == BUILTINS and BUILTINS <= set(METHODS.names())
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    declared = pyproject["project"]["entry-points"]["slimnas.methods"]
    assert declared == METHODS.builtins  # same names, same import paths


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_each_spec_builds_its_algorithm_which_answers_its_targets(name):
    spec = method_spec(name)
    assert spec.name == name and METHODS.get(name) is spec
    algorithm = spec.build(_request(spec))
    assert isinstance(algorithm, SearchAlgorithm)
    run_search(algorithm, toy_accuracy)
    assert algorithm.finished and algorithm.evaluations > 0
    if spec.uses_budget:
        assert algorithm.evaluations <= 6
    for target in (TARGETS if spec.sweep else TARGETS[:1]):
        answer = algorithm.answer(target)
        assert answer is not None and answer.latency_ms <= target


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_capabilities_are_as_declared_and_true_of_the_algorithm(name):
    spec = method_spec(name)
    declared = (spec.sweep, spec.early_stop, spec.uses_budget, spec.needs_importance, spec.auto_budget is not None)
    assert declared == CAPABILITIES[name]
    # early_stop means the algorithm's cannot_win can rule a candidate out (the base class's never does)
    algorithm = spec.build(_request(spec))
    assert (type(algorithm).cannot_win is not SearchAlgorithm.cannot_win) == spec.early_stop


def test_slimming_reads_its_settings_and_defines_the_auto_budget():
    spec = method_spec("slimming")
    assert spec.settings == "slimming" and method_spec("slimming-extended").settings == "slimming"
    algorithm = spec.build(_request(spec, options={"mb3d_removal": "to_identity"}))
    assert algorithm.mb3d_removal == "to_identity" and algorithm.mode == "paper"
    assert method_spec("slimming-extended").build(_request(spec)).mode == "extended"
    run_search(algorithm, toy_accuracy)
    budgets = [spec.auto_budget(algorithm, t) for t in TARGETS]
    assert 1 <= budgets[0] <= budgets[1] <= algorithm.evaluations  # a tighter target took more evaluations
    with pytest.raises(ValueError, match="importance"):
        spec.build(MethodRequest(TOY_SPACE, toy_latency, TARGETS))


def test_budget_auto_needs_a_method_that_defines_it():
    assert auto_budget_problem(["slimming", "random", "nsga2"]) is None
    assert auto_budget_problem(["slimming-extended"]) is None  # nothing takes a budget
    assert auto_budget_problem(["slimming-extended", "tpe"]) == \
        "'auto' matches the evaluations of slimming; add it to methods or give a number"


def test_bad_specs_and_names_are_refused():
    with pytest.raises(ValueError, match="cannot itself take a budget"):
        MethodSpec("m", lambda r: None, sweep=False, early_stop=False, auto_budget=lambda a, t: 1)
    with pytest.raises(InputError, match=r"unknown name 'greedy' \(known: .*nsga2.*\)"):
        method_spec("greedy")
    METHODS.register("not-a-spec", object())
    METHODS.register("misnamed", method_spec("random"))
    try:
        with pytest.raises(InputError, match="'not-a-spec': expected a MethodSpec, got object"):
            method_spec("not-a-spec")
        with pytest.raises(InputError, match="'misnamed': its spec is named 'random'"):
            method_spec("misnamed")
    finally:
        METHODS.unregister("not-a-spec")
        METHODS.unregister("misnamed")
    with pytest.raises(ValueError, match="holds 2 targets"):
        _ = MethodRequest(TOY_SPACE, toy_latency, TARGETS).target_ms
    with pytest.raises(ValueError, match="needs a budget"):
        method_spec("random").build(MethodRequest(TOY_SPACE, toy_latency, (17.0,)))
