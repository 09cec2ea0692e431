"""The closed loop that verifies winners on a (fake) device: slimming walks on and slims on, baselines take their
next arch, every arch is measured once, and the tolerance edge is exact."""

import json
import random

import pytest

from slimnas.search import ExhaustiveSearch, NSGA2Search, SlimmingSearch
from slimnas.search.verification import (
    BATCH,
    MeasurementCache,
    SlimmingRun,
    measure_in_rounds,
    next_measurements,
    tolerance_limit,
    unverified,
    verify_baseline,
    verify_slimming,
    within_tolerance,
)
from slimnas.search_spaces.efficientformer import Arch
from slimnas.testing import TOY_SPACE as TOY
from slimnas.testing import run_search, toy_accuracy, toy_latency

SCORES = [[5.0], [4.0], [1.0, 2.0], [3.0, 0.5]]
# the hand-computed trajectory of tests/search/test_slimming.py: 22, 21, 20, 19, 18, 15 ms (target 16)


def noisy_accuracy(arch):
    return toy_accuracy(arch) + random.Random(arch.to_json()).uniform(-1.5, 1.5)


class FakeDevice:
    """Measures ``factor`` x the table for archs the table puts at or over ``above_ms`` (or that ``slow`` names), the
    table itself for the others; records every arch it was asked to time."""

    def __init__(self, above_ms=float("inf"), factor=1.3, slow=()):
        self.above_ms, self.factor, self.slow = above_ms, factor, {a.to_json() for a in slow}
        self.timed: list[str] = []

    def __call__(self, archs):
        self.timed += [a.to_json() for a in archs]
        return [lat * self.factor if lat >= self.above_ms or a.to_json() in self.slow else lat
                for a, lat in zip(archs, toy_latency(archs))]


def slimming(targets):
    return run_search(SlimmingSearch(TOY, TOY.max_arch(), SCORES, toy_latency, targets))


def rerun(algorithm, index):  # one extra round "through Tune": here, the plain ask/tell driver
    return run_search(algorithm)


def test_slimming_takes_the_next_step_of_its_trajectory():
    search = slimming([20.5, 16.0])
    run = SlimmingRun(search, rerun)
    device = FakeDevice(above_ms=20.0)  # the 20 ms answer measures 26 ms; the 19 ms step measures 19 ms
    result = verify_slimming(run, 20.5, MeasurementCache(device), tolerance_pct=2.0)
    assert result.state == "met" and result.meets_target is True
    assert result.answer.latency_ms == 19.0 and result.measured_ms == 19.0 and result.verify_steps == 1
    assert result.evaluations == search.trajectory[3].evaluations == 10  # the step taken, not the first reach
    assert result.extra_evaluations == 0 and run.rounds == 0 and search.evaluations == 15  # nothing new evaluated


def test_slimming_asks_one_more_round_when_its_trajectory_has_ended():
    search = slimming(16.0)
    run = SlimmingRun(search, rerun)
    device = FakeDevice(above_ms=15.0)  # the 15 ms answer measures 19.5 ms > 16.32
    result = verify_slimming(run, 16.0, MeasurementCache(device), tolerance_pct=2.0)
    assert result.meets_target is True and result.verify_steps == 1 and run.rounds == 1 and run.extra_steps == 1
    # the extra round evaluated two candidates (MetaPath -> identity, MB3D -> MB4D: no width is left to cut)
    assert result.extra_evaluations == 2 and result.evaluations == 15 + 2 == run.algorithm.evaluations
    assert result.answer.latency_ms == 13.0 and len(run.algorithm.trajectory) == 7
    assert run.algorithm.stop_reason.startswith("continued below 15")
    assert result.answer.accuracy == run.algorithm.trajectory[-1].accuracy


def test_slimming_stops_at_the_cap_or_when_nothing_saves_latency():
    capped = SlimmingRun(slimming(16.0), rerun, max_extra_steps=1)
    result = verify_slimming(capped, 16.0, MeasurementCache(FakeDevice(above_ms=0.0)), tolerance_pct=2.0)
    assert result.state == "not met" and result.meets_target is False
    assert result.answer.latency_ms == 15.0 and result.measured_ms == pytest.approx(19.5)  # the original answer
    assert capped.extra_steps == 1 and result.verify_steps == 1 and result.extra_evaluations == 2
    assert result.evaluations == 17 and "max_extra_steps (1)" in result.note
    ended = SlimmingRun(slimming(16.0), rerun, max_extra_steps=10)
    result = verify_slimming(ended, 16.0, MeasurementCache(FakeDevice(above_ms=0.0, factor=10.0)), 2.0)
    assert result.meets_target is False and ended.exhausted == "no action saves latency"
    assert ended.extra_steps == 2 and result.verify_steps == 2  # 15 -> 13 -> 12 ms, then nothing saves latency
    walk_only = SlimmingRun(slimming(16.0))  # no continue_round: the trajectory is walked, never extended
    result = verify_slimming(walk_only, 16.0, MeasurementCache(FakeDevice(above_ms=0.0)), 2.0)
    assert result.meets_target is False and walk_only.algorithm.evaluations == 15 and result.extra_evaluations == 0


def test_a_sweep_shares_one_extended_trajectory_and_one_cache():
    run = SlimmingRun(slimming([20.5, 16.0]), rerun)
    device = FakeDevice(above_ms=15.0)  # every step of the original run measures 1.3 x: 26, 24.7, 23.4, 19.5 ms
    cache = MeasurementCache(device)
    loose = verify_slimming(run, 20.5, cache, 2.0, batch=2)
    tight = verify_slimming(run, 16.0, cache, 2.0, batch=2)
    assert loose.answer.latency_ms == 15.0 and loose.measured_ms == pytest.approx(19.5)  # <= 20.91: met
    assert loose.verify_steps == 3 and loose.extra_evaluations == 0 and loose.evaluations == 15
    assert tight.answer.latency_ms == 13.0 and tight.verify_steps == 1  # 19.5 > 16.32: one more round
    assert tight.extra_evaluations == 2 and tight.evaluations == 17 and run.rounds == 1
    assert len(device.timed) == len(set(device.timed)) == 5  # nothing measured twice
    assert cache.calls == 3  # steps 20-19 ms, 18-15 ms (two at a time), then the new 13 ms step


def test_a_baseline_takes_its_next_best_arch_that_measures_under_the_target():
    search = run_search(ExhaustiveSearch(TOY, toy_latency, 17.0, budget=40), noisy_accuracy)
    ranked = sorted((e for e in search.history if e.latency_ms <= 17.0),
                    key=lambda e: (-e.accuracy, e.latency_ms, e.candidate.id))
    winner = search.answer(17.0)
    assert winner.arch == ranked[0].arch
    device = FakeDevice(slow=[ranked[0].arch, ranked[1].arch])  # the best two measure 1.3 x the table
    cache = MeasurementCache(device)
    cache.measure([winner.arch])  # the job measures every winner first, in one call
    result = verify_baseline(search, 17.0, cache, tolerance_pct=2.0, batch=3)
    assert result.meets_target is True and result.answer.arch == ranked[2].arch and result.verify_steps == 2
    assert result.evaluations == search.evaluations and result.extra_evaluations == 0
    assert result.measured_ms == ranked[2].latency_ms
    assert device.timed == [ranked[i].arch.to_json() for i in range(4)]  # in order; then 3 at a time, each once
    again = verify_baseline(search, 17.0, cache, tolerance_pct=2.0)
    assert again.answer.arch == result.answer.arch and len(device.timed) == 4  # all from the cache


def test_a_candidate_stopped_early_is_never_taken_in_place_of_the_answer():
    search = run_search(ExhaustiveSearch(TOY, toy_latency, 17.0, budget=40), noisy_accuracy)
    ranked = sorted((e for e in search.history if e.latency_ms <= 17.0),
                    key=lambda e: (-e.accuracy, e.latency_ms, e.candidate.id))
    device = FakeDevice(slow=[ranked[0].arch])  # the answer measures over the target
    stopped = {ranked[1].candidate.id}  # the runner-up was stopped early: its accuracy is only a bound
    result = verify_baseline(search, 17.0, MeasurementCache(device), tolerance_pct=2.0, batch=1, stopped=stopped)
    assert result.meets_target is True and result.answer.arch == ranked[2].arch
    assert ranked[1].arch.to_json() not in device.timed


def test_nsga2_answers_each_target_from_its_front_and_nothing_meets_when_all_are_slow():
    search = run_search(NSGA2Search(TOY, toy_latency, budget=16, seed=0, population_size=4), noisy_accuracy)
    cache = MeasurementCache(FakeDevice(above_ms=0.0, factor=2.0))
    result = verify_baseline(search, 19.0, cache, tolerance_pct=2.0)
    feasible = {e.arch.to_json() for e in search.history if e.latency_ms <= 19.0}
    assert result.state == "not met" and result.meets_target is False and result.answer.arch == search.answer(19.0).arch
    assert result.verify_steps == len(feasible) - 1 and set(cache.measured) == feasible
    assert "none of the" in result.note
    assert verify_baseline(search, 1.0, cache, 2.0).state == "no answer"


def test_the_tolerance_edge_is_inclusive():
    assert tolerance_limit(1.2, 2.0) == pytest.approx(1.224)
    assert within_tolerance(1.2 * 1.02, 1.2, 2.0) and within_tolerance(tolerance_limit(0.7, 3.3), 0.7, 3.3)
    assert not within_tolerance(1.2 * 1.02 * (1 + 1e-6), 1.2, 2.0)
    assert within_tolerance(5.0, 5.0, 0.0) and not within_tolerance(5.0001, 5.0, 0.0)
    # exactly at the limit meets; a baseline whose answer measures just over it takes its next arch
    search = run_search(ExhaustiveSearch(TOY, toy_latency, 17.0, budget=40), noisy_accuracy)
    winner = search.answer(17.0)

    def at_limit(archs, over=0.0):
        return [tolerance_limit(17.0, 2.0) * (1 + over) if a == winner.arch else 1.0 for a in archs]

    assert verify_baseline(search, 17.0, MeasurementCache(at_limit), 2.0).verify_steps == 0
    over = verify_baseline(search, 17.0, MeasurementCache(lambda a: at_limit(a, 1e-6)), 2.0)
    assert over.verify_steps == 1 and over.answer.arch != winner.arch


def test_unverified_answers_keep_the_predicted_winner():
    search = slimming([20.5, 16.0])
    pending = unverified(search, 20.5, "pending")
    assert pending.state == "pending" and pending.meets_target is None and pending.measured_ms is None
    assert pending.answer.latency_ms == 20.0 and pending.evaluations == 7  # slimming's first reach of 20.5 ms
    assert unverified(search, 1.0, "off").state == "no answer"


def test_continue_below_survives_a_state_round_trip_mid_round():
    reference = slimming(16.0)
    assert reference.continue_below(reference.current_latency)
    run_search(reference)
    search = slimming(16.0)
    assert search.continue_below(search.current_latency) and not search.finished
    asked = search.ask()
    search.tell(asked[0].id, toy_accuracy(asked[0].arch))  # one of the extra round's two results in
    state = json.loads(json.dumps(search.state_dict()))
    assert state["stop_ms"] < 15.0
    resumed = SlimmingSearch(TOY, TOY.max_arch(), SCORES, toy_latency, 16.0)
    resumed.load_state_dict(state)
    assert resumed.stop_ms == search.stop_ms and [c.id for c in resumed.outstanding()] == [asked[1].id]
    for candidate in resumed.outstanding():
        resumed.tell(candidate.id, toy_accuracy(candidate.arch))
    run_search(resumed)
    assert resumed.trajectory == reference.trajectory and resumed.evaluations == reference.evaluations == 17
    assert resumed.stop_reason == reference.stop_reason == "continued below 15 ms"
    assert resumed.answer(16.0).latency_ms == 15.0  # answers of met targets do not move


def test_continue_below_refuses_when_there_is_nothing_to_do():
    search = slimming(16.0)
    assert not search.continue_below(20.0) and search.finished  # already below
    smallest = Arch(32, (16,) * 4, (("4d",), ("4d",), ("id", "4d"), ("4d", "id")))
    done = run_search(SlimmingSearch(TOY, smallest, SCORES, toy_latency, 100.0))
    assert not done.continue_below(done.current_latency) and done.stop_reason == "no action saves latency"
    fresh = SlimmingSearch(TOY, TOY.max_arch(), SCORES, toy_latency, 16.0)
    with pytest.raises(ValueError, match="starting arch"):
        fresh.continue_below(10.0)
    fresh.ask()
    with pytest.raises(ValueError, match="outstanding"):
        fresh.continue_below(10.0)


def test_replacements_of_every_answer_are_measured_together_round_by_round():
    first = run_search(ExhaustiveSearch(TOY, toy_latency, 17.0, budget=40), noisy_accuracy)
    second = run_search(ExhaustiveSearch(TOY, toy_latency, 18.0, budget=40, seed=1),
                        lambda a: noisy_accuracy(a) + 0.01)
    answers = [first.answer(17.0).arch, second.answer(18.0).arch]
    device = FakeDevice(slow=answers)  # both answers measure 1.3 x the table: each needs its next arch
    cache = MeasurementCache(device)
    cache.measure(answers)
    walks = [lambda c: verify_baseline(first, 17.0, c, 2.0, batch=2),
             lambda c: verify_baseline(second, 18.0, c, 2.0, batch=2)]
    wanted = [next_measurements(w, cache) for w in walks]
    assert [len(w) for w in wanted] == [2, 2] and device.timed == [a.to_json() for a in answers]  # asked, not timed
    assert measure_in_rounds(walks, cache) == 1 and cache.calls == 2  # both replacements in one call
    assert device.timed[2:] == [a.to_json() for a in wanted[0] + wanted[1] if a.to_json() not in device.timed[:2]]
    results = [w(cache) for w in walks]
    assert all(r.meets_target and r.verify_steps == 1 for r in results) and cache.calls == 2  # nothing timed again
    assert next_measurements(walks[0], cache) == [] and measure_in_rounds(walks, cache) == 0


def test_a_probed_slimming_walk_measures_its_steps_and_never_evaluates():
    search = slimming(16.0)
    cache = MeasurementCache(FakeDevice(above_ms=0.0))  # every step too slow: the walk would slim on
    cache.measure([search.answer(16.0).arch])

    def walk(c):
        return verify_slimming(SlimmingRun(search), 16.0, c, 2.0)

    assert next_measurements(walk, cache) == []  # the 15 ms answer is the trajectory's last step: nothing to measure
    assert search.evaluations == 15 and len(search.trajectory) == 6
    loose = slimming([20.5, 16.0])
    cache = MeasurementCache(FakeDevice(above_ms=20.0))
    cache.measure([loose.answer(20.5).arch])
    wanted = next_measurements(lambda c: verify_slimming(SlimmingRun(loose), 20.5, c, 2.0, batch=2), cache)
    assert [toy_latency([a])[0] for a in wanted] == [19.0, 18.0]  # the next two steps


def test_by_default_next_candidates_are_measured_two_at_a_time():
    search = run_search(ExhaustiveSearch(TOY, toy_latency, 17.0, budget=40), noisy_accuracy)
    ranked = sorted((e for e in search.history if e.latency_ms <= 17.0),
                    key=lambda e: (-e.accuracy, e.latency_ms, e.candidate.id))
    assert BATCH == 2
    device = FakeDevice(slow=[ranked[0].arch])  # the answer measures 1.3 x the table; the next one meets the target
    cache = MeasurementCache(device)
    cache.measure([ranked[0].arch])
    result = verify_baseline(search, 17.0, cache, tolerance_pct=2.0)
    assert result.answer.arch == ranked[1].arch and result.verify_steps == 1
    assert device.timed == [ranked[i].arch.to_json() for i in range(3)] and cache.calls == 2  # one in vain, not three
