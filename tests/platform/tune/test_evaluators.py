"""Evaluator actors with real Ray Tune: the trial slots of a job, each a long-lived actor with its evaluation built
once; Tune trials are thin calls to them (toy evaluations, :class:`slimnas.testing.ToyEvaluation`)."""

import itertools
import json
import time

import pytest
import ray

from slimnas.errors import SlimnasError
from slimnas.platform.tune import TuneRun, run_phases
from slimnas.platform.tune.evaluators import EVALUATOR_NAMESPACE, EvaluatorPool
from slimnas.platform.tune.trainable import THIN_TRIAL_RESOURCES, evaluate_on_evaluator
from slimnas.search import RandomSearch, SlimmingSearch
from slimnas.testing import TOY_BATCHES, TOY_SPACE, run_search, toy_evaluation, toy_latency, wobbly_fraction

SCORES = [[5.0], [4.0], [1.0, 2.0], [3.0, 0.5]]


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, object_store_memory=80 * 1024**2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _last_results(experiment):
    """Each trial's last report (Tune's JSON logger: one ``result.json`` per trial folder)."""
    out = []
    for path in experiment.glob("*/result.json"):
        lines = path.read_text().strip().splitlines()
        if lines:
            out.append(json.loads(lines[-1]))
    return out


def _evaluators_alive(pool_names):
    alive = {a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
             if a.get("namespace") == EVALUATOR_NAMESPACE}
    return alive & set(pool_names)


def _gone(names, timeout=10.0):
    deadline = time.monotonic() + timeout
    while _evaluators_alive(names) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not _evaluators_alive(names)


def test_two_evaluators_evaluate_at_once_and_are_gone_after_the_job(local_ray, tmp_path):
    """Random search, two candidates in flight, three 1-CPU evaluators on two CPUs: the one Ray cannot place gets no
    trial; the two others work at the same time, each set up once; Tune's two thin trial actors are kept (no third one
    started); the pool leaves no actor behind."""
    search = RandomSearch(TOY_SPACE, toy_latency, 17.0, budget=8, seed=0, parallel=2)
    pool = EvaluatorPool(toy_evaluation, {"sleep_s": 0.03}, 3, {"cpu": 1})
    with pool:
        outcome = run_phases(lambda done: None if done else [TuneRun("random", search, early_stop=False)],
                             evaluate_on_evaluator, "search", tmp_path, resources=THIN_TRIAL_RESOURCES,
                             slots=pool.names, slots_ready=pool.ready)
        histories = pool.histories()
        assert _evaluators_alive(pool.names) == set(pool.names)
    assert _gone(pool.names)
    assert outcome.evaluations == 8 and search.evaluations == 8 and len(histories) == 2
    assert len(outcome.worker_setups) == 2  # one set-up per evaluator, reported with its first evaluation
    results = _last_results(tmp_path / "search")
    pids = {h[0]["pid"] for h in histories.values()}
    assert len(results) == 8 and len(pids) == 2 and {r["config"]["evaluator"] for r in results} == set(histories)
    assert {r["evaluator_pid"] for r in results} == pids and sum(map(len, histories.values())) == 8
    intervals = [(r["eval_started"], r["eval_now"], r["evaluator_pid"]) for r in results]
    assert any(a[2] != b[2] and a[0] < b[1] and b[0] < a[1] for a, b in itertools.combinations(intervals, 2))
    assert len({r["pid"] for r in results}) <= 2  # Tune's trial actors were kept across the round barriers
    alone = run_search(RandomSearch(TOY_SPACE, toy_latency, 17.0, budget=8, seed=0, parallel=2), wobbly_fraction)
    # the same candidates (told in the order their concurrent evaluations ended)
    assert sorted(e.arch.to_json() for e in search.history) == sorted(e.arch.to_json() for e in alone.history)


def test_a_trial_stopped_early_frees_its_evaluator_at_once(local_ray, tmp_path):
    """One evaluator, slimming stopped early: the evaluator computed exactly the batches each stopped trial reported
    (none after the stop) and went on with the next candidate; slimming reached what it reaches alone."""
    slimming = SlimmingSearch(TOY_SPACE, TOY_SPACE.max_arch(), SCORES, toy_latency, 16.0)
    pool = EvaluatorPool(toy_evaluation, {"sleep_s": 0.01}, 1, {"cpu": 1})
    with pool:
        outcome = run_phases(lambda done: None if done else [TuneRun("slimming", slimming)], evaluate_on_evaluator,
                             "search", tmp_path, resources=THIN_TRIAL_RESOURCES, slots=pool.names,
                             slots_ready=pool.ready)
        (history,) = pool.histories().values()
    run = outcome.runs["slimming"]
    assert run.early_stop["trials_stopped"] >= 1
    reference = run_search(SlimmingSearch(TOY_SPACE, TOY_SPACE.max_arch(), SCORES, toy_latency, 16.0),
                           wobbly_fraction)
    assert [(s.arch, s.latency_ms) for s in slimming.trajectory] == [(s.arch, s.latency_ms)
                                                                     for s in reference.trajectory]
    computed = {h["token"]: h["batches"] for h in history}
    reported = {f"slimming#{r['config']['candidate_id']}#{r['trial_id']}": r["batches_done"]
                for r in _last_results(tmp_path / "search")}
    assert computed == reported and len(history) == slimming.evaluations
    stopped = [token for token, batches in computed.items() if batches < TOY_BATCHES]
    assert len(stopped) == run.early_stop["trials_stopped"]
    assert history[-1]["batches"] == TOY_BATCHES  # evaluations went on after the stops


def test_a_failed_set_up_is_an_error_and_the_pool_leaves_no_evaluator(local_ray):
    """An evaluator whose set-up fails stops the job with its error (the searcher asks ``ready()`` before each trial),
    rather than every trial failing; the pool is closed on the way out."""
    pool = EvaluatorPool(toy_evaluation, {"sleep_s": "not a number"}, 2, {"cpu": 0.5})
    with pytest.raises(SlimnasError, match="evaluator slimnas-eval-.*: its set-up failed"), pool:
        assert _evaluators_alive(pool.names) == set(pool.names)
        deadline = time.monotonic() + 30
        while not pool.ready() and time.monotonic() < deadline:
            time.sleep(0.05)
    assert _gone(pool.names)


def test_ready_waits_for_a_first_evaluator_when_asked(local_ray):
    pool = EvaluatorPool(toy_evaluation, {"sleep_s": 0.0}, 2, {"cpu": 1})
    with pool:
        placed = pool.ready(30.0)  # just started: Ray is still starting their processes
        assert placed and placed <= set(pool.names)  # returned once one was placed, not empty-handed
    assert _gone(pool.names)
