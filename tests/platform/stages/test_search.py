"""A whole search job on the digits: a briefly trained tiny supernet, a tiny table, real Ray Tune, real MLflow."""

import csv
import io
import json
import time

import pytest
import ray
from mlflow.tracking import MlflowClient

from slimnas.config import load_config
from slimnas.errors import ConfigError, InputError
from slimnas.latency import LatencyTable, build_table
from slimnas.latency.backends import TorchCPUBackend
from slimnas.latency.protocol import Protocol
from slimnas.platform.cli import main
from slimnas.platform.stages.search import (
    MethodResult,
    SearchJobResult,
    _measure_on_device,
    _pending_line,
    _Run,
    _verify_winners,
    load_supernet,
    run_search_job,
)
from slimnas.platform.stages.search_config import SearchJobConfig
from slimnas.platform.tracking.search import pareto_figure
from slimnas.search import RandomSearch, SlimmingSearch, start_arch
from slimnas.search.slimming import Action, TrajectoryStep
from slimnas.search_spaces.efficientformer import Arch, SearchSpace
from slimnas.testing import TOY_SPACE, run_search, tiny_train_config, toy_latency
from slimnas.trainers import train_supernet
from slimnas.winners import load_winner


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("search-job")
    result = train_supernet(tiny_train_config(root, name="sup", run={"max_steps_per_epoch": 4}))
    fast = Protocol(passes=2, samples=3, pass_ms=0.0, warmup_ms=2.0, extra_passes=1)
    table = build_table(SearchSpace.preset("tiny"), TorchCPUBackend(threads=1), root / "tiny.parquet", protocol=fast,
                        harness="isolated", calibrate_networks=0)
    full = table.predict(SearchSpace.preset("tiny").max_arch())
    return root, result.checkpoint, table, full


def _config(root, checkpoint, table_path, targets, **extra):
    data = {
        "name": "job", "supernet": str(checkpoint), "output": str(root / "out"),
        "data": {"kind": "digits", "batch_size": 32, "calib_images": 64},
        "eval_images": 96,
        "latency": {"table": str(table_path)},
        "methods": ["slimming", "random", "tpe", "nsga2"],
        "targets": targets,
        "ray": {"num_cpus": 2, "object_store_mb": 128},
        "tracking": {"tracking_uri": f"sqlite:///{root / 'mlflow.db'}", "experiment": "test-search",
                     "models": "none"},  # MLflow models: tests/platform/tracking/test_model.py (~3 s each)
    }
    data.update(extra)
    return load_config(SearchJobConfig, data)


def _no_evaluator_left(timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not [a for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith("slimnas-eval-")]:
            return True
        time.sleep(0.1)
    return False


@pytest.fixture
def cheapest_first(toy_plugin):
    """The method 'cheapest-first' installed as an outside package would be: an entry point in the
    ``slimnas.methods`` group of the toy plug-in (``tests/plugins/site``). Nothing in slimnas names it."""
    return "cheapest-first"


def test_the_cli_knows_a_method_once_its_package_declares_it(tmp_path, capsys, monkeypatch, request):
    """Before: an unknown name, one line naming the field and the known names. After: the config passes (the job then
    stops at the missing supernet, the next check)."""
    config = tmp_path / "search.yaml"
    config.write_text(f"supernet: {tmp_path / 'none.pt'}\nlatency: {{table: {tmp_path / 't.parquet'}}}\n"
                      "targets: [1.0]\nmethods: [slimming, cheapest-first]\ntracking: {enabled: false}\n")
    for fixture, needle in ((None, "methods.1: Value error, unknown search method 'cheapest-first' (known: exhaustive"),
                            ("cheapest_first", "supernet: no such file or folder")):
        if fixture:
            request.getfixturevalue(fixture)
        capsys.readouterr()
        assert main(["search", "--config", str(config)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], err


def test_a_job_compares_methods_at_each_target_and_logs_mlflow(inputs, cheapest_first):
    """The built-in methods and one from another package (an entry point), side by side with equal budgets."""
    root, checkpoint, table, full = inputs
    targets = [round(0.9 * full, 3), round(0.8 * full, 3)]
    cfg = _config(root, checkpoint, root / "tiny.parquet", targets,
                  latency={"table": str(root / "tiny.parquet"), "max_extra_steps": 1},
                  methods=["slimming", "random", "tpe", "nsga2", cheapest_first])
    try:
        job = run_search_job(cfg)
        assert _no_evaluator_left()  # the job's evaluator actors end with it
    finally:
        ray.shutdown()
    methods = {(r.method, r.target_ms) for r in job.results}
    assert methods == {(m, t) for m in cfg.methods for t in cfg.targets}
    slim = {r.target_ms: r for r in job.results if r.method == "slimming"}
    assert job.histories["nsga2"] and all(e["latency_ms"] <= max(cfg.targets) for e in job.histories["nsga2"])
    for r in job.results:
        if r.method == "nsga2" and r.arch is None:
            continue  # one front for both targets; a budget of a few evaluations may hold nothing under the tighter
        assert r.arch is not None and r.predicted_ms <= r.target_ms and 0 <= r.top1 <= 1
        assert r.predicted_ms == pytest.approx(table.predict(Arch.from_dict(r.arch)))
        assert r.measured_ms is not None and r.measured_ms > 0 and r.meets_target is not None
        if r.method in ("random", "tpe", cheapest_first):  # equal budgets: what slimming had used at that target
            assert r.evaluations <= slim[r.target_ms].evaluations
    for target in cfg.targets:  # the plug-in ran as it says: one run per target, cheapest archs first
        latencies = [e["latency_ms"] for e in job.histories[f"{cheapest_first}@{target:g}ms"]]
        assert latencies and latencies == sorted(latencies) and latencies[-1] <= target
    first = job.trajectories["slimming"][0].arch  # the start: every slot active, max widths
    space = SearchSpace.preset("tiny")
    assert first.widths == space.max_widths and first.depths == space.slots
    assert job.trajectories["slimming"][0].latency_ms == pytest.approx(table.predict(first))
    saved = json.loads((root / "out" / "job" / "results.json").read_text())
    assert len(saved["results"]) == 10 and (root / "out" / "job" / "pareto.png").is_file()
    # one Tune experiment ran every run: its two workers set up once each, every evaluation's own time recorded
    evaluated = [e for h in job.histories.values() for e in h]
    assert 1 <= job.timing.worker_setups <= 2 and job.timing.evaluations == len(evaluated)
    assert all(e["eval_s"] > 0 for e in evaluated) and job.timing.eval_s == pytest.approx(sum(e["eval_s"] for e in
                                                                                              evaluated))
    assert sorted(p.name for p in (root / "out" / "job" / "tune").iterdir() if p.is_dir())[0] == "search"

    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("test-search")
    parent = client.get_run(job.mlflow_run_id)
    assert parent.data.params["methods"] == "slimming,random,tpe,nsga2,cheapest-first"
    children = client.search_runs([experiment.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{job.mlflow_run_id}'")
    assert len(children) == 10
    child = next(c for c in children if c.data.tags["slimnas.method"] == "slimming")
    assert {"top1", "predicted_ms", "measured_ms", "evaluations", "wall_s"} <= set(child.data.metrics)
    assert {"widths", "depths", "mb3d", "method", "target_ms"} <= set(child.data.params)
    assert {a.path for a in client.list_artifacts(child.info.run_id)} == {"arch.json", "weights.pt", "model.json"}
    for r in job.results:  # every answer saved as evaluated, with its card
        if r.arch is not None:
            _, card = load_winner(root / "out" / "job" / "winners" / f"{r.method}@{r.target_ms:g}ms")
            assert (card.method, card.target_ms, card.top1) == (r.method, r.target_ms, r.top1)
    parent_files = {a.path for a in client.list_artifacts(job.mlflow_run_id)}
    assert {"results.csv", "pareto.png", "slimming_trajectory.json"} <= parent_files
    fast = client.search_runs([experiment.experiment_id], filter_string=(
        f"tags.mlflow.parentRunId = '{job.mlflow_run_id}' and metrics.predicted_ms < {cfg.targets[-1]}"))
    assert fast and all(r.data.metrics["predicted_ms"] < cfg.targets[-1] for r in fast)


def test_bad_configs_and_inputs_are_named(inputs, tmp_path):
    root, checkpoint, table, full = inputs
    with pytest.raises(ConfigError, match="^targets"):
        _config(root, checkpoint, root / "tiny.parquet", [-1.0])
    with pytest.raises(ConfigError, match="^methods"):
        _config(root, checkpoint, root / "tiny.parquet", [1.0], methods=["greedy"])
    with pytest.raises(ConfigError, match="^latency: Field required"):
        load_config(SearchJobConfig, {"supernet": "x", "targets": [1.0]})
    with pytest.raises(InputError, match="no such file"):
        run_search_job(_config(root, checkpoint, tmp_path / "none.parquet", [1.0]))
    with pytest.raises(InputError, match="supernet: no such file or folder"):
        run_search_job(_config(root, tmp_path / "none.pt", root / "tiny.parquet", [1.0]))
    other = LatencyTable(table.entries, table.meta).with_meta(space={**table.meta.space, "slots": [2, 2, 4, 2]})
    other.save(tmp_path / "other.parquet")
    with pytest.raises(InputError, match="latency.table: measured for space"):
        run_search_job(_config(root, checkpoint, tmp_path / "other.parquet", [1.0]))
    with pytest.raises(InputError, match="budget: 'auto'"):
        try:
            run_search_job(_config(root, checkpoint, root / "tiny.parquet", [0.9 * full], methods=["random"]))
        finally:
            ray.shutdown()


def test_relative_targets_are_fractions_of_slimmings_start_arch(inputs, tmp_path):
    """The pipeline's ``search.targets_relative`` against the trained supernet and a real table: the reference is the
    arch slimming starts from (the supernet's alpha), not the space's largest network; every target below it; the
    reference travels in the job's config (recorded in results.json) and is printed with the comparison."""
    from slimnas.platform.commands.pipeline import apply_overrides, quickstart_source
    from slimnas.platform.pipeline.config import load_pipeline
    from slimnas.platform.pipeline.run import _targets

    root, checkpoint, table, full = inputs
    supernet, _ = load_supernet(str(checkpoint))
    start = start_arch(supernet.space, supernet.importance())
    predicted = table.predict(start)
    pipeline = load_pipeline(apply_overrides(quickstart_source(), [f"output={tmp_path}"]))
    fractions = pipeline.search.targets_relative
    targets, ref = _targets(pipeline, table, None, str(checkpoint))
    assert ref.arch == start.to_dict() and ref.predicted_ms == pytest.approx(predicted) and ref.start == "alpha"
    assert targets == [round(f * predicted, 4) for f in sorted(fractions, reverse=True)] == ref.targets_ms()
    assert all(t < predicted for t in targets)  # the quickstart's targets all need slimming steps
    if start != supernet.space.max_arch():  # (the max arch is the old reference: not what the targets follow)
        assert targets != [round(f * full, 4) for f in sorted(fractions, reverse=True)]
    # a job that does not run slimming gets the same reference: the start arch is the supernet's, not the method's
    baselines = load_pipeline(apply_overrides(quickstart_source(), ["search.methods=[random]", "search.budget=3",
                                                                     "retrain.enabled=false"]))
    assert _targets(baselines, table, None, str(checkpoint)) == (targets, ref)

    job_cfg = pipeline.search_job(str(checkpoint), str(root / "tiny.parquet"), targets, None, ref)
    assert job_cfg.targets_reference == ref and job_cfg.targets == targets
    with pytest.raises(ConfigError, match="^targets: not the fractions"):
        _config(root, checkpoint, root / "tiny.parquet", [t * 1.1 for t in targets],
                targets_reference=ref.model_dump())
    job = SearchJobResult(job_cfg.model_dump(), [], {}, {}, str(tmp_path))
    again = SearchJobResult.from_dict(json.loads(json.dumps(job.to_dict())))  # results.json's round trip
    assert again.targets_reference == ref
    note = again.table_text().splitlines()[-2]
    assert note.startswith(f"targets {targets[0]:g}, ") and f"x {predicted:.4g} ms" in note and str(start) in note


class FakeDevice:
    """A device on which the predicted winners (the archs of the job's first call) are too slow: 1.25 x the table, or
    1.25 x the target where that would still meet it; every later arch measures what the table predicts."""

    def __init__(self, table, target):
        self.table, self.target, self.calls = table, target, []

    def __call__(self, archs):
        self.calls.append([a.to_json() for a in archs])
        predicted = [self.table.predict(a) for a in archs]
        if len(self.calls) > 1:
            return predicted
        return [1.25 * p if 1.25 * p > 1.02 * self.target else 1.25 * self.target for p in predicted]


def test_winners_slower_on_the_device_are_replaced_and_the_extra_evaluations_counted(inputs):
    root, checkpoint, table, full = inputs
    supernet, _ = load_supernet(str(checkpoint))
    target = round(0.9 * table.predict(start_arch(supernet.space, supernet.importance())), 3)  # a round or two
    cfg = _config(root, checkpoint, root / "tiny.parquet", [target], name="verify", methods=["slimming", "random"],
                  budget=4, eval_images=64)
    device = FakeDevice(table, target)
    lines = []
    try:
        job = run_search_job(cfg, echo=lines.append, measure=device)
    finally:
        ray.shutdown()
    slim, rand = (next(r for r in job.results if r.method == m) for m in ("slimming", "random"))
    first_winners = {Arch.from_json(a) for a in device.calls[0]}
    trajectory = job.trajectories["slimming"]
    original = trajectory[-2].arch  # the step the search stopped at: measured too slow
    assert original in first_winners
    # slimming took one more step, evaluated through Tune, and counts its evaluations
    assert slim.meets_target is True and slim.verification == "met" and slim.verify_steps == 1
    assert Arch.from_dict(slim.arch) == trajectory[-1].arch != original
    assert slim.extra_evaluations > 0 and slim.evaluations == len(job.histories["slimming"])
    assert slim.evaluations == trajectory[-1].evaluations == trajectory[-2].evaluations + slim.extra_evaluations
    assert slim.measured_ms == pytest.approx(table.predict(Arch.from_dict(slim.arch)))
    assert slim.stop_reason.startswith("continued below")
    tune = root / "out" / "verify" / "tune"  # the extra round ran in the job's one experiment, with its state file
    assert (tune / "slimming-verify-1.searcher.json").is_file() and not (tune / "slimming-verify-1").exists()
    # the baseline took its next arch: no evaluation spent, its budget unchanged
    assert rand.evaluations == 4
    assert rand.meets_target is True and rand.verify_steps >= 1 and rand.extra_evaluations == 0
    assert Arch.from_dict(rand.arch) not in first_winners
    assert rand.evaluations == len(job.histories[f"random@{target:g}ms"])
    timed = [a for call in device.calls for a in call]
    assert len(timed) == len(set(timed))  # nothing measured twice
    assert any(line.startswith("[search] slimming @") and "1 step(s) on" in line for line in lines)

    rows = {r["method"]: r for r in csv.DictReader(io.StringIO((root / "out" / "verify" / "results.csv").read_text()))}
    assert rows["slimming"]["meets_target"] == "True" and rows["slimming"]["verify_steps"] == "1"
    assert int(rows["slimming"]["extra_evaluations"]) == slim.extra_evaluations
    assert int(rows["slimming"]["evaluations"]) == slim.evaluations and rows["random"]["verification"] == "met"
    assert "  yes " in job.table_text().splitlines()[1]
    saved = json.loads((root / "out" / "verify" / "results.json").read_text())
    assert saved["results"][0]["extra_evaluations"] == slim.extra_evaluations

    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    children = client.search_runs([client.get_experiment_by_name("test-search").experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{job.mlflow_run_id}'")
    child = next(c for c in children if c.data.tags["slimnas.method"] == "slimming")
    assert child.data.tags["slimnas.meets_target"] == "true" and child.data.metrics["meets_target"] == 1
    assert child.data.metrics["extra_evaluations"] == slim.extra_evaluations
    assert child.data.metrics["evaluations"] == slim.evaluations
    assert child.data.metrics["measured_ms"] == pytest.approx(slim.measured_ms)


SCORES = [[5.0], [4.0], [1.0, 2.0], [3.0, 0.5]]


def _toy_runs():
    slimming = run_search(SlimmingSearch(TOY_SPACE, TOY_SPACE.max_arch(), SCORES, toy_latency, [20.5, 16.0]))
    random = run_search(RandomSearch(TOY_SPACE, toy_latency, 16.0, budget=6, seed=0))
    return [_Run("slimming", "slimming", slimming, [20.5, 16.0], 1.0, {}),
            _Run("random", "random@16ms", random, [16.0], 1.0, {})]


def test_verification_pending_or_off_leaves_meets_target_empty(inputs):
    root, checkpoint, table, full = inputs
    no_rounds = lambda run: None  # noqa: E731 - never called: nothing is measured
    lines = []
    cfg = _config(root, checkpoint, root / "tiny.parquet", [20.5, 16.0])
    out = _verify_winners(_toy_runs(), cfg, lambda archs: None, no_rounds, lines.append, lambda: "PENDING LINE")
    assert lines == ["PENDING LINE"] and {v.state for v in out.values()} == {"pending"}
    assert all(v.meets_target is None and v.measured_ms is None for v in out.values())
    assert out[("slimming", 20.5)].evaluations == 7 and out[("slimming", 16.0)].evaluations == 15
    off = _config(root, checkpoint, root / "tiny.parquet", [20.5, 16.0],
                  latency={"table": str(root / "tiny.parquet"), "measure_final": False})
    never = lambda archs: pytest.fail("measure_final: false measures nothing")  # noqa: E731
    out = _verify_winners(_toy_runs(), off, never, no_rounds, lines.append, lambda: "")
    assert {v.state for v in out.values()} == {"off"} and "measure_final: false" in lines[-1]
    coreml = table.with_meta(backend="coreml", threads=None, options={"compute_units": "all"})
    line = _pending_line(coreml, root / "job")
    assert line.startswith("[search] verification pending") and "arch.json" in line
    assert "slimnas lut build --backend coreml --bundle DIR" in line and "slimnas lut import-measurements" in line
    result = SearchJobResult({}, [MethodResult("slimming", 1.0, TOY_SPACE.max_arch().to_dict(), 0.9, 0.5, 3, 1.0,
                                               verification="pending")], {}, {}, str(root))
    assert "pending" in result.table_text().splitlines()[1]


def test_the_pareto_plot_shows_measured_answers_and_labels_the_targets(tmp_path):
    arch = TOY_SPACE.max_arch().to_dict()
    results = [MethodResult("slimming", 1.2, arch, 1.1, 0.8, 10, 1.0, measured_ms=1.15, meets_target=True,
                            verification="met"),
               MethodResult("random", 1.2, arch, 1.0, 0.7, 10, 1.0, measured_ms=1.5, meets_target=False,
                            verification="not met"),
               MethodResult("random", 0.9, arch, 0.85, 0.6, 10, 1.0, verification="pending")]
    histories = {"random@1.2ms": [{"latency_ms": 1.0, "accuracy": 0.7}]}
    steps = [TrajectoryStep(0, None, TOY_SPACE.max_arch(), 1.3, 0.9, 0, 1),
             TrajectoryStep(1, Action("width", 0), TOY_SPACE.max_arch().with_width(0, 16), 1.1, 0.8, 2, 3)]
    job = SearchJobResult({}, results, histories, {"slimming": steps}, str(tmp_path))
    fig = pareto_figure(job)
    ax = fig.axes[0]
    texts = {t.get_text() for t in ax.texts}
    assert {"1.2 ms", "0.9 ms", "@1.2", "@0.9"} <= texts
    xs = {tuple(c.get_offsets()[0]) for c in ax.collections if len(c.get_offsets()) == 1}
    assert (1.15, 0.8) in xs and (1.5, 0.7) in xs and (1.1, 0.8) in xs  # measured, measured (missed), predicted
    assert (0.85, 0.6) in xs  # not measured: at its predicted latency
    assert "measured" in ax.get_xlabel() and "predicted" in ax.get_xlabel()


def test_a_winner_check_disturbed_through_every_attempt_says_so(inputs, monkeypatch):
    import random

    import slimnas.latency.validate as validate

    _, _, table, _ = inputs

    class Disturbed(TorchCPUBackend):
        """Real networks, made-up timings: each call takes 1 or 1.5 ms at random, so about half of every network's
        passes are off its median by 20%, in every attempt."""

        rng = random.Random(0)

        def sample(self, module, example, protocol):
            return [self.rng.choice([1.0, 1.5])] * protocol.samples

    monkeypatch.setattr(validate, "backend_for", lambda t: Disturbed(threads=1))
    monkeypatch.setattr(validate, "SETTLE_PAUSE_S", 0.0)
    archs = [a for _, a in validate.validation_archs(table.space, 4, seed=0)]
    lines = []
    assert len(_measure_on_device(table, archs, lines.append)) == len(archs)
    assert any("measured 3 times" in line for line in lines)
    assert any(line.startswith("[search] every attempt was disturbed (") and "say more about the machine" in line
               for line in lines), lines
