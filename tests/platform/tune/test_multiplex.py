"""The multiplexing searcher driven as Tune drives it (suggest / on_trial_complete), in this process: several search
runs in one experiment, phase by phase, each as the run would go alone; continued from the runs' state files."""

import json
import pickle

from ray.tune.search import Searcher

from slimnas.platform.tune import EarlyStopScheduler, MultiplexSearcher, TuneRun
from slimnas.platform.tune.multiplex import READY_WAIT_S
from slimnas.search import RandomSearch, SlimmingSearch
from slimnas.search_spaces import Arch
from slimnas.testing import TOY_SPACE, run_search, toy_latency, wobbly_fraction

SCORES = [[5.0], [4.0], [1.0, 2.0], [3.0, 0.5]]


def slimming():
    return SlimmingSearch(TOY_SPACE, TOY_SPACE.max_arch(), SCORES, toy_latency, 16.0)


def random_search(target, budget, seed=0):
    return RandomSearch(TOY_SPACE, toy_latency, target, budget=budget, seed=seed, parallel=2)


class Job:
    """Slimming, then two random runs whose budgets are slimming's evaluations (as a search job plans them)."""

    def __init__(self):
        self.algorithms = {}
        self.calls = []

    def plan(self, done):
        self.calls.append(sorted(done))
        if not done:
            return [self._run("slimming", slimming())]
        if len(done) == 1:
            budget = done["slimming"].algorithm.evaluations
            return [self._run("random@17ms", random_search(17.0, budget)),
                    self._run("random@16ms", random_search(16.0, budget, seed=1))]
        return None

    def _run(self, label, algorithm):
        self.algorithms[label] = algorithm
        return TuneRun(label, algorithm)


def drive(searcher, trials=2, stop_after=None, start=0):
    """Tune's loop: keep up to ``trials`` trials running, complete the oldest with its wobbly accuracy; returns the
    configs handed out in order, and the trials in flight when ``stop_after`` completions were reached."""
    handed, running, completed, n = [], {}, 0, start
    while True:
        while len(running) < trials:
            config = searcher.suggest(f"t{n}")
            if config == Searcher.FINISHED or config is None:
                break
            running[f"t{n}"] = config
            handed.append(config)
            n += 1
        if not running:
            assert config == Searcher.FINISHED
            return handed, running
        trial, config = next(iter(running.items()))
        del running[trial]
        accuracy = wobbly_fraction(Arch.from_dict(config["arch"]))
        searcher.on_trial_complete(trial, {"accuracy": accuracy, "eval_s": 0.25, "config": config})
        completed += 1
        if stop_after is not None and completed == stop_after:
            return handed, running


def test_runs_share_one_experiment_phase_by_phase_each_as_it_would_go_alone(tmp_path):
    job, events = Job(), []
    searcher = MultiplexSearcher(job.plan, tmp_path, str(tmp_path / "search"),
                                 on_start=lambda label, algorithm: events.append(("start", label)),
                                 on_finish=lambda outcome: events.append(("finish", outcome.label)))
    handed, _ = drive(searcher)
    assert searcher.finished and job.calls == [[], ["slimming"], ["random@16ms", "random@17ms", "slimming"]]
    # phase two started only once slimming had finished; both random runs then shared the trials, in turn
    labels = [c["run"] for c in handed]
    first_random = labels.index("random@17ms")
    assert set(labels[:first_random]) == {"slimming"} and "slimming" not in labels[first_random:]
    assert labels[first_random:first_random + 4] == ["random@17ms", "random@16ms"] * 2
    assert events[:3] == [("start", "slimming"), ("finish", "slimming"), ("start", "random@17ms")]
    assert sorted(events[3:]) == [("finish", "random@16ms"), ("finish", "random@17ms"), ("start", "random@16ms")]
    # each run went as it goes alone
    reference = run_search(slimming(), wobbly_fraction)
    assert job.algorithms["slimming"].trajectory == reference.trajectory
    budget = reference.evaluations
    for label, seed, target in (("random@17ms", 0, 17.0), ("random@16ms", 1, 16.0)):
        alone = run_search(random_search(target, budget, seed), wobbly_fraction)
        assert [e.arch for e in job.algorithms[label].history] == [e.arch for e in alone.history]
    outcomes = searcher.outcomes()
    assert list(outcomes) == ["slimming", "random@17ms", "random@16ms"]
    assert outcomes["random@16ms"].eval_s == 0.25 * budget and len(searcher.told_here) == len(handed)
    for label in outcomes:  # each run's own state file
        state = json.loads((tmp_path / f"{label}.searcher.json").read_text())
        assert state["algorithm"]["finished"] and len(state["eval_s"]) == job.algorithms[label].evaluations


def test_a_restored_experiment_continues_each_run_from_its_state_file(tmp_path):
    reference = Job()
    drive(MultiplexSearcher(reference.plan, tmp_path / "ref", "ref"))
    first = Job()
    killed = MultiplexSearcher(first.plan, tmp_path, "search")
    handed, in_flight = drive(killed, stop_after=reference.algorithms["slimming"].evaluations + 3)
    assert in_flight and first.algorithms["slimming"].finished and not killed.finished  # killed in phase two
    # a new driver, new algorithms: slimming is loaded finished (not run again), phase two goes on from its files
    again, events = Job(), []
    restored = MultiplexSearcher(again.plan, tmp_path, "search", restore=True,
                                 on_start=lambda label, algorithm: events.append(label))
    more, _ = drive(restored, start=len(handed))
    assert restored.finished and "slimming" not in {c["run"] for c in more}
    assert {(c["run"], c["candidate_id"]) for c in in_flight.values()} <= {(c["run"], c["candidate_id"]) for c in more}
    assert again.algorithms["slimming"].trajectory == reference.algorithms["slimming"].trajectory
    for label in ("random@17ms", "random@16ms"):
        got, want = again.algorithms[label].history, reference.algorithms[label].history
        assert [e.arch for e in got] == [e.arch for e in want]
    assert events == ["slimming", "random@17ms", "random@16ms"]


def test_every_run_restored_finished_needs_no_trial(tmp_path):
    drive(MultiplexSearcher(Job().plan, tmp_path, "search"))
    job, finished = Job(), []
    searcher = MultiplexSearcher(job.plan, tmp_path, "search", restore=True, on_finish=finished.append)
    assert not searcher.advance() and searcher.finished  # the runner starts no Tune experiment then
    assert [o.label for o in finished] == ["slimming", "random@17ms", "random@16ms"]
    assert searcher.suggest("t0") == Searcher.FINISHED


def test_the_scheduler_asks_the_run_of_the_trial_and_never_stops_a_run_that_may_not_stop(tmp_path):
    def plan(done):
        return None if done else [TuneRun("slimming", slimming()), TuneRun("fixed", slimming(), early_stop=False)]

    searcher = MultiplexSearcher(plan, tmp_path, "search", max_concurrent=4)
    scheduler = EarlyStopScheduler(searcher, rule="exact")
    configs = [searcher.suggest(f"t{i}") for i in range(3)]
    assert [c["run"] for c in configs[:2]] == ["slimming", "fixed"] and configs[2] is None  # round barriers
    for trial, config in zip(("t0", "t1"), configs):
        searcher.on_trial_complete(trial, {"accuracy": 0.9, "config": config})
    by_run = {}
    for i in range(2, 6):
        config = searcher.suggest(f"t{i}")
        by_run.setdefault(config["run"], []).append((f"t{i}", config))
    _, first = by_run["slimming"][0]
    searcher.on_trial_complete(by_run["slimming"][0][0], {"accuracy": 0.89, "config": first})

    class Trial:
        def __init__(self, config):
            self.config = config

    partial = {"correct": 0, "seen": 1800, "total": 2000, "batches_done": 9, "batches_total": 10}
    assert scheduler.on_trial_result(None, Trial(by_run["slimming"][1][1]), partial) == "STOP"
    assert scheduler.on_trial_result(None, Trial(by_run["fixed"][1][1]), partial) == "CONTINUE"
    assert searcher.run_for({"run": "unknown"}) is None
    # Tune pickles searcher and scheduler together (tuner.pkl): no plan, no callbacks, no algorithm travels
    back_searcher, back_scheduler = pickle.loads(pickle.dumps((searcher, scheduler)))
    assert back_scheduler.searcher is back_searcher and back_searcher.plan is None
    assert back_scheduler.on_trial_result(None, Trial(by_run["slimming"][1][1]), partial) == "CONTINUE"


def test_suggest_waits_for_a_first_evaluator_only_while_no_trial_is_in_flight(tmp_path):
    """At the job's start (no evaluator placed, nothing in flight) ``suggest`` waits for one itself: answering ``None``
    there, Tune would poll again only a second later. With a trial in flight it answers ``None`` at once."""
    asked, ready = [], set()

    def slots_ready(wait_s):
        asked.append(wait_s)
        if wait_s > 0:
            ready.add("e0")  # placed while the searcher waited
        return set(ready)

    job = Job()
    searcher = MultiplexSearcher(job.plan, tmp_path, str(tmp_path / "search"), slots=["e0", "e1"],
                                 slots_ready=slots_ready)
    first = searcher.suggest("t0")
    assert first["evaluator"] == "e0" and asked == [0.0, READY_WAIT_S]
    asked.clear()
    assert searcher.suggest("t1") is None and asked == [0.0]  # e1 not ready, t0 in flight: no waiting
    searcher.on_trial_complete("t0", {"accuracy": 0.5, "eval_s": 0.1, "config": first})
    asked.clear()
    assert searcher.suggest("t2")["evaluator"] == "e0" and asked == [0.0]  # e0 free again: no waiting
