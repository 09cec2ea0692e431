"""The Tune searcher and scheduler with a real Ray Tune and a toy trainable (the toy oracle, reported per batch)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import ray

from slimnas.platform.tune import run_tune
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


DRIVER = """
import json, sys, ray
from slimnas.platform.tune import run_tune
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
    again = subprocess.run([sys.executable, "-c", code, str(tmp_path), "1"], capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    line = next(x for x in again.stdout.splitlines() if x.startswith("RESULT "))
    trajectory = json.loads(line[len("RESULT "):])
    # the same steps (early-stopped losers record their stopping bound, so compare the chosen path)
    steps = [(s["arch"], s["latency_ms"], s["accuracy"], s["action"]) for s in trajectory]
    expected = json.loads(json.dumps([step.to_dict() for step in reference.trajectory]))
    assert steps == [(s["arch"], s["latency_ms"], s["accuracy"], s["action"]) for s in expected]
