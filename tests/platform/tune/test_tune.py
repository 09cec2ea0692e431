"""The Tune searcher and scheduler with a real Ray Tune and a toy trainable (the toy oracle, reported per batch)."""

import json
import os
import pickle
import signal
import subprocess
import sys
import time

import pytest
import ray

from slimnas.platform.tune import TuneRun, run_phases, run_tune
from slimnas.search import RandomSearch, SlimmingSearch
from slimnas.testing import TOY_SPACE, run_search, toy_eval_trainable, toy_latency, wobbly_fraction

SCORES = [[5.0], [4.0], [1.0, 2.0], [3.0, 0.5]]
BATCHES = 10


def plain_batches(outcome):
    return BATCHES * outcome.algorithm.evaluations


def test_accuracy_bounds():
    from slimnas.platform.tune.scheduler import accuracy_bound

    assert accuracy_bound(80, 100, 1000, "exact") == pytest.approx((80 + 900) / 1000)
    assert accuracy_bound(80, 100, 1000, "confident", z=0.0) == pytest.approx(0.8)
    assert 0.8 < accuracy_bound(80, 100, 1000, "confident", z=3.0) < 0.86
    assert accuracy_bound(80, 1000, 1000, "confident") == pytest.approx(0.08)


def slimming():
    return SlimmingSearch(TOY_SPACE, TOY_SPACE.max_arch(), SCORES, toy_latency, 16.0)


def test_the_scheduler_is_handed_its_searcher_and_both_pickle_together(tmp_path):
    """Tune pickles searcher and scheduler in one tuner.pkl: the unpickled scheduler holds the unpickled searcher,
    which holds no algorithm until attached; then the scheduler asks it whether a partial result rules a trial out."""
    from slimnas.platform.tune import AskTellSearcher, EarlyStopScheduler

    searcher = AskTellSearcher(slimming(), "pickled", tmp_path / "pickled.searcher.json")
    config = searcher.suggest("t0")  # the start arch (round 0)
    searcher.on_trial_complete("t0", {"accuracy": 0.9, "config": config})
    first = [searcher.suggest(f"t{i}") for i in (1, 2)]  # two candidates of round 1
    searcher.on_trial_complete("t1", {"accuracy": 0.89, "config": first[0]})
    scheduler = EarlyStopScheduler(searcher, rule="exact")
    back_searcher, back_scheduler = pickle.loads(pickle.dumps((searcher, scheduler)))
    assert back_scheduler.searcher is back_searcher and not back_searcher.attached

    class Trial:
        config = first[1]

    partial = {"correct": 0, "seen": 1800, "total": 2000, "batches_done": 9, "batches_total": 10}
    assert back_scheduler.on_trial_result(None, Trial(), partial) == "CONTINUE"  # detached: it decides nothing
    assert back_searcher.counters["batches_reported"] == 0
    back_searcher.attach(slimming())  # a new driver's algorithm, caught up from the state file
    assert back_searcher.attached and back_searcher.algorithm.evaluations == 2
    assert back_searcher.rules_out(first[1]["candidate_id"], 0.1) and not back_searcher.rules_out(999, 0.1)
    assert back_scheduler.on_trial_result(None, Trial(), partial) == "STOP"
    assert back_searcher.counters["batches_reported"] == 1 and first[1]["candidate_id"] in back_searcher.stop_bounds
    assert scheduler.on_trial_result(None, Trial(), {**partial, "correct": 1800}) == "CONTINUE"  # can still win


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, object_store_memory=80 * 1024**2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_slimming_through_tune_equals_the_pure_run_and_early_stop_saves_batches(local_ray, tmp_path):
    reference = run_search(slimming(), wobbly_fraction)
    plain = run_tune(slimming(), toy_eval_trainable, "plain", tmp_path, early_stop=False)
    assert plain.algorithm.trajectory == reference.trajectory  # the round barrier held
    # one trial at a time: a round's later candidates see the earlier ones' results and can be ruled out
    stopped = run_tune(slimming(), toy_eval_trainable, "early", tmp_path, early_stop=True, max_concurrent_trials=1)
    got = [(s.arch, s.latency_ms) for s in stopped.algorithm.trajectory]
    assert got == [(s.arch, s.latency_ms) for s in reference.trajectory]  # same decisions
    assert stopped.early_stop["trials_stopped"] >= 1 and stopped.early_stop["batches_saved"] >= 1
    assert set(stopped.searcher.early_stopped) and not stopped.searcher.errored
    assert stopped.early_stop["batches_reported"] < plain_batches(plain)
    state = json.loads((tmp_path / "early.searcher.json").read_text())
    assert state["algorithm"]["finished"] is True


def test_random_search_through_tune_respects_the_budget(local_ray, tmp_path):
    search = RandomSearch(TOY_SPACE, toy_latency, 17.0, budget=6, seed=0, parallel=2)
    outcome = run_tune(search, toy_eval_trainable, "random", tmp_path)
    assert outcome.algorithm.evaluations == 6
    assert all(e.latency_ms <= 17.0 for e in outcome.algorithm.history)


def test_runs_in_phases_share_one_tune_experiment(local_ray, tmp_path):
    """Slimming, then two random runs (planned once it had finished), in one real Tune experiment: each run reaches what
    it reaches alone, and each has its own state file beside the one experiment."""
    def plan(done):
        if not done:
            return [TuneRun("slimming", slimming())]
        if len(done) == 1:
            budget = 4
            return [TuneRun(f"random@{t:g}ms", RandomSearch(TOY_SPACE, toy_latency, t, budget=budget, seed=0,
                                                           parallel=2)) for t in (17.0, 16.0)]
        return None

    outcome = run_phases(plan, toy_eval_trainable, "search", tmp_path, rule="exact")
    reference = run_search(slimming(), wobbly_fraction)
    assert list(outcome.runs) == ["slimming", "random@17ms", "random@16ms"]
    got = outcome.runs["slimming"].algorithm.trajectory
    assert [(s.arch, s.latency_ms) for s in got] == [(s.arch, s.latency_ms) for s in reference.trajectory]
    for t in (17.0, 16.0):
        alone = run_search(RandomSearch(TOY_SPACE, toy_latency, t, budget=4, seed=0, parallel=2), wobbly_fraction)
        run = outcome.runs[f"random@{t:g}ms"].algorithm
        assert [e.arch for e in run.history] == [e.arch for e in alone.history]
    assert outcome.evaluations == sum(r.algorithm.evaluations for r in outcome.runs.values())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["random@16ms.searcher.json", "random@17ms.searcher.json",
                                                           "search", "slimming.searcher.json"]


DRIVER = """
import json, sys, ray
from slimnas.platform.tune import TuneRun, run_phases, run_tune
from slimnas.search import SlimmingSearch
from slimnas.testing import TOY_SPACE, toy_eval_trainable, toy_latency
ray.init(num_cpus=2, object_store_memory=80 * 1024**2, include_dashboard=False, log_to_driver=False)
search = SlimmingSearch(TOY_SPACE, TOY_SPACE.max_arch(), {scores}, toy_latency, 16.0)
outcome = run_tune(search, toy_eval_trainable, "killed", sys.argv[1], restore=sys.argv[2] == "1",
                   max_concurrent_trials=1)
print("RESULT " + json.dumps([step.to_dict() for step in outcome.algorithm.trajectory]))
"""


def test_restore_after_a_killed_driver_reaches_the_same_arch(tmp_path):
    reference = run_search(slimming(), wobbly_fraction)
    code = DRIVER.format(scores=SCORES)
    state = tmp_path / "killed.searcher.json"
    driver = subprocess.Popen([sys.executable, "-c", code, str(tmp_path), "0"], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline:  # kill the driver (and its local Ray) once 7 evaluations are in
        if state.exists() and len(json.loads(state.read_text())["algorithm"]["history"]) >= 7:
            break
        time.sleep(0.2)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    done = len(json.loads(state.read_text())["algorithm"]["history"])
    assert 7 <= done < reference.evaluations
    tune_saved = any((tmp_path / "killed").glob("experiment_state-*.json"))
    again = subprocess.run([sys.executable, "-c", code, str(tmp_path), "1"], capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    if tune_saved:  # Tuner.restore went on with the searcher (and scheduler) it unpickled, given the new algorithm
        assert "holds no slimnas searcher" not in again.stderr and "cannot be restored" not in again.stderr
    line = next(x for x in again.stdout.splitlines() if x.startswith("RESULT "))
    trajectory = json.loads(line[len("RESULT "):])
    # the same steps (early-stopped losers record their stopping bound, so compare the chosen path)
    steps = [(s["arch"], s["latency_ms"], s["accuracy"], s["action"]) for s in trajectory]
    expected = json.loads(json.dumps([step.to_dict() for step in reference.trajectory]))
    assert steps == [(s["arch"], s["latency_ms"], s["accuracy"], s["action"]) for s in expected]


def test_the_search_monitor_is_told_the_running_algorithm():
    """The job tells the progress monitor each run's algorithm as it starts (no registry of live searchers)."""
    from slimnas.platform.stages.progress import SearchMonitor

    lines = []
    monitor = SearchMonitor(16.0, echo=lines.append)
    search = RandomSearch(TOY_SPACE, toy_latency, 17.0, budget=4, seed=0)
    monitor("[search] random@17ms: running")
    assert monitor.status() is None  # not told the algorithm
    monitor.watch("random@17ms", search)
    run_search(search, wobbly_fraction)
    assert monitor.status().startswith("[search] random@17ms: 4 evaluations, budget 4 (100%)")
    monitor("[search] random@17ms: 4 evaluations in 1.0 s (budget spent)")
    assert monitor.status() is None and lines[-1].endswith("(budget spent)")
