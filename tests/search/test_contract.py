"""The contract every search method keeps (one test set, parametrized over the methods)."""

import json
import random

import pytest

from slimnas.search import ExhaustiveSearch, NSGA2Search, RandomSearch, SlimmingSearch, TPESearch
from slimnas.testing import TOY_SPACE, run_search, toy_accuracy, toy_latency

TARGET = 17.0
BUDGET = 12
SCORES = [[5.0], [4.0], [1.0, 2.0], [3.0, 0.5]]


def noisy_accuracy(arch):
    """The toy oracle plus a deterministic per-arch wobble, so that methods have something to find."""
    return toy_accuracy(arch) + random.Random(arch.to_json()).uniform(-1.5, 1.5)


FACTORIES = {
    "slimming": lambda seed: SlimmingSearch(TOY_SPACE, TOY_SPACE.max_arch(), SCORES, toy_latency, TARGET, seed=seed),
    "slimming-extended": lambda seed: SlimmingSearch(TOY_SPACE, TOY_SPACE.max_arch(), SCORES, toy_latency, TARGET,
                                                     mode="extended", seed=seed),
    "random": lambda seed: RandomSearch(TOY_SPACE, toy_latency, TARGET, BUDGET, seed=seed, parallel=3),
    "exhaustive": lambda seed: ExhaustiveSearch(TOY_SPACE, toy_latency, TARGET, BUDGET, seed=seed, parallel=2),
    "tpe": lambda seed: TPESearch(TOY_SPACE, toy_latency, TARGET, BUDGET, seed=seed, n_startup_trials=4),
    "nsga2": lambda seed: NSGA2Search(TOY_SPACE, toy_latency, BUDGET, seed=seed, population_size=4, parallel=2),
}


@pytest.mark.parametrize("name", FACTORIES)
def test_deterministic_under_a_seed(name):
    a = run_search(FACTORIES[name](3), noisy_accuracy)
    b = run_search(FACTORIES[name](3), noisy_accuracy)
    assert [e.arch for e in a.history] == [e.arch for e in b.history]
    assert a.evaluations == b.evaluations > 0


@pytest.mark.parametrize("name", FACTORIES)
def test_state_round_trip_mid_run_equals_an_uninterrupted_run(name):
    reference = run_search(FACTORIES[name](1), noisy_accuracy)
    search = FACTORIES[name](1)
    asked_total = 0
    while asked_total < 5 and not search.finished:
        asked = search.ask()
        asked_total += len(asked)
        for candidate in asked[:-1]:  # leave one result outstanding at the interruption
            search.tell(candidate.id, noisy_accuracy(candidate.arch))
        if asked_total >= 5:
            break
        for candidate in asked[-1:]:
            search.tell(candidate.id, noisy_accuracy(candidate.arch))
    state = json.loads(json.dumps(search.state_dict()))  # what a driver persists: JSON only
    resumed = FACTORIES[name](1)
    resumed.load_state_dict(state)
    for candidate in resumed.outstanding():
        resumed.tell(candidate.id, noisy_accuracy(candidate.arch))
    run_search(resumed, noisy_accuracy)
    assert [e.arch for e in resumed.history] == [e.arch for e in reference.history]
    best = resumed.answer(TARGET)
    assert best is not None and best.arch == reference.answer(TARGET).arch


@pytest.mark.parametrize("name", ["random", "exhaustive", "tpe", "nsga2"])
def test_baselines_respect_budget_and_target(name):
    search = run_search(FACTORIES[name](0), noisy_accuracy)
    assert search.evaluations <= BUDGET
    archs = [e.arch.to_json() for e in search.history]
    assert len(set(archs)) == len(archs)  # no arch evaluated twice
    if name != "nsga2":
        assert all(e.latency_ms <= TARGET for e in search.history)
    assert all(TOY_SPACE.contains(e.arch) for e in search.history)
    best = search.best(TARGET)
    assert best is not None and best.latency_ms <= TARGET
    assert best.accuracy == max(e.accuracy for e in search.history if e.latency_ms <= TARGET)


def test_exhaustive_coarsens_until_the_grid_fits():
    full = ExhaustiveSearch(TOY_SPACE, toy_latency, TARGET, budget=10_000)
    run_search(full, toy_accuracy)
    assert full.grid_step == 1 and not full.truncated
    small = ExhaustiveSearch(TOY_SPACE, toy_latency, TARGET, budget=BUDGET)
    run_search(small, toy_accuracy)
    assert small.grid_step > 1 and small.evaluations <= BUDGET
    # on the full grid, exhaustive finds the true best structure within the target
    assert full.best(TARGET).accuracy >= small.best(TARGET).accuracy


def test_nsga2_gives_a_pareto_front():
    search = run_search(NSGA2Search(TOY_SPACE, toy_latency, budget=24, seed=0, population_size=6), noisy_accuracy)
    front = search.pareto_front()
    assert front and all(a.latency_ms < b.latency_ms and a.accuracy < b.accuracy for a, b in zip(front, front[1:]))
    for ev in search.history:  # nothing dominates a front member
        assert not any(o.latency_ms <= ev.latency_ms and o.accuracy > ev.accuracy for o in front) or ev not in front


def test_optuna_duplicates_of_pending_archs_are_not_told_nan():
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        search = TPESearch(TOY_SPACE, toy_latency, 30.0, budget=12, seed=0, parallel=6, n_startup_trials=2)
        run_search(search, noisy_accuracy)
    assert not [w for w in caught if "nan" in str(w.message).lower()]
    assert all(v == v for t in search.study.trials for v in (t.values or []))


def test_tpe_at_a_tight_target_finishes_with_bounded_asks():
    search = run_search(TPESearch(TOY_SPACE, toy_latency, 13.0, budget=4, seed=0), noisy_accuracy)
    assert search.evaluations == 4 and all(e.latency_ms <= 13.0 for e in search.history)
    assert search.asks < 4 * (32 + 2) + 10  # a feasible structure is handed over after 32 infeasible asks in a row


@pytest.mark.parametrize("name", ["tpe", "nsga2"])
def test_one_reseeded_sampler_proposes_what_a_fresh_sampler_per_ask_would(name, monkeypatch):
    import slimnas.search.optuna_search as optuna_search

    reused = run_search(FACTORIES[name](5), noisy_accuracy)
    assert reused._shared_sampler is reused.study.sampler  # one sampler served every ask
    monkeypatch.setattr(optuna_search, "_seed_sampler", lambda sampler, seed: False)  # a fresh sampler per ask
    fresh = run_search(FACTORIES[name](5), noisy_accuracy)
    assert [e.arch for e in fresh.history] == [e.arch for e in reused.history]


def test_failed_trials_survive_a_state_round_trip():
    """Duplicates of pending archs are told FAIL; dropping them on resume would shift every later seed."""
    search = TPESearch(TOY_SPACE, toy_latency, 15.0, budget=40, seed=0, parallel=6, n_startup_trials=2)
    for _ in range(3):  # nothing told: later rounds of asks meet the pending archs of earlier ones
        search.ask()
    failed = [t.number for t in search.study.trials if t.state.name == "FAIL"]
    assert failed, "the scenario must produce a duplicate of a pending arch"
    resumed = TPESearch(TOY_SPACE, toy_latency, 15.0, budget=40, seed=0, parallel=6, n_startup_trials=2)
    resumed.load_state_dict(json.loads(json.dumps(search.state_dict())))
    assert [t.number for t in resumed.study.trials if t.state.name == "FAIL"] == failed
    assert len(resumed.study.trials) == len(search.study.trials)
