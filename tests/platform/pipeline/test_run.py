"""The quickstart pipeline at reduced size: real training, a real table, real Ray Tune, a real MLflow SQLite store."""

import json
from pathlib import Path

import pytest
import ray
import torch
from mlflow.tracking import MlflowClient

from slimnas.errors import InputError
from slimnas.latency import LatencyTable
from slimnas.platform.cli import main
from slimnas.platform.commands.pipeline import apply_overrides, quickstart_source
from slimnas.platform.pipeline.config import load_pipeline
from slimnas.platform.pipeline.run import run_pipeline
from slimnas.platform.stages.search import load_supernet
from slimnas.search import start_arch
from slimnas.search_spaces.efficientformer import Arch
from slimnas.trainers import count_correct, evaluation_data
from slimnas.winners import load_winner

#: The quickstart, shrunk to well under a minute: 2 short epochs, a one-pass table, 2 methods at 2 targets.
REDUCED = [
    "train.run.epochs=2", "train.run.max_steps_per_epoch=3", "train.run.log_every=2", "train.data.batch_size=32",
    "train.data.calib_images=64", "latency.protocol.passes=1", "latency.protocol.samples=2",
    "latency.protocol.pass_ms=0", "latency.protocol.warmup_ms=5", "latency.max_networks=24",
    "latency.validate.num_archs=2", "search.methods=[slimming, random]", "search.targets_relative=[0.9, 0.75]",
    "search.eval_images=64", "search.max_extra_steps=1", "search.tolerance_pct=3",
]


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    """``slimnas quickstart`` (reduced) run from an empty working directory, as a newcomer would."""
    cwd = tmp_path_factory.mktemp("quickstart")
    mp = pytest.MonkeyPatch()
    mp.chdir(cwd)
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    argv = ["quickstart"] + [a for pair in REDUCED for a in ("--set", pair)]
    yield cwd, argv, mp
    mp.undo()


def test_quickstart_runs_every_stage_and_reports(quickstart, capsys):
    cwd, argv, _ = quickstart
    assert main(argv) == 0
    out, err = capsys.readouterr()
    print(err)
    root = cwd / "runs" / "quickstart"
    # progress: numbered stage lines and per-stage progress with an ETA
    for stage in ("1/4] train", "2/4] table", "3/4] search", "4/4] retrain"):
        assert f"[quickstart {stage}" in err
    assert "[train] epoch 1/2 done" in err and "ETA" in err
    # 24 covering networks, one pass; the parts they leave out are fitted, not timed alone
    assert "[table] 24/24 measurements" in err and "[validate]" in err and "144/144" not in err
    # the end: the comparison table, the Pareto plot, how to open MLflow
    assert "method" in out and "slimming" in out and "random" in out
    assert out.startswith("method ") and "Configuration for experiment" not in out  # Tune's tables: not on stdout
    assert "Pareto plot:   runs/quickstart/search/pareto.png" in out
    assert "slimnas ui --backend-store-uri sqlite:///" in out and "stage times:" in out
    assert (root / "search" / "pareto.png").read_bytes()[:4] == b"\x89PNG"

    state = json.loads((root / "pipeline.json").read_text())
    assert [state["stages"][s]["status"] for s in ("train", "table", "search")] == ["ran", "built", "ran"]
    table = LatencyTable.load(root / "latency" / "torch-cpu-b1.parquet")
    # relative targets: fractions of the predicted latency of the arch slimming starts from, recorded and printed
    supernet, _ = load_supernet(state["stages"]["train"]["checkpoint"])
    start = start_arch(supernet.space, supernet.importance())
    reference = table.predict(start)
    targets = state["stages"]["search"]["targets"]
    assert targets == [pytest.approx(0.9 * reference, abs=1e-4), pytest.approx(0.75 * reference, abs=1e-4)]
    recorded = state["stages"]["search"]["inputs"]["config"]["targets_reference"]
    assert recorded["arch"] == start.to_dict() and recorded["predicted_ms"] == pytest.approx(reference)
    assert f"= 0.9, 0.75 x {reference:.4g} ms, the table-predicted latency of slimming's start arch" in out
    assert "within noise" in out and "95% CI" in out.splitlines()[0]
    assert table.meta.num_classes == 10 and table.meta.protocol["samples"] == 2
    assert (root / "latency" / "torch-cpu-b1-validation" / "validation.json").is_file()
    saved = json.loads((root / "search" / "results.json").read_text())
    assert saved["config"]["latency"]["max_extra_steps"] == 1 and saved["config"]["latency"]["tolerance_pct"] == 3
    assert saved["config"]["targets_reference"] == recorded
    results = saved["results"]
    assert {(r["method"], r["target_ms"]) for r in results} == {(m, t) for m in ("slimming", "random")
                                                                for t in targets}
    for r in results:
        assert r["predicted_ms"] <= r["target_ms"] and r["images"] == 64  # top-1's interval: 64 images (eval_images)
        assert r["predicted_ms"] == pytest.approx(table.predict(Arch.from_dict(r["arch"])))
        assert r["meets_target"] in (True, False) and r["measured_ms"] > 0  # verified on this machine's CPU

    client = MlflowClient(f"sqlite:///{cwd / 'mlflow.db'}")  # the default store: the working directory
    experiment = client.get_experiment_by_name("slimnas-quickstart")
    runs = client.search_runs([experiment.experiment_id])
    kinds = sorted(r.data.tags.get("slimnas.kind", "child") for r in runs)
    assert kinds == ["child"] * 4 + ["pipeline", "search-job", "supernet"]
    pipeline = next(r for r in runs if r.data.tags.get("slimnas.kind") == "pipeline")
    assert pipeline.data.tags["slimnas.search_run"] == state["stages"]["search"]["mlflow_run_id"]
    assert {"train_wall_s", "table_wall_s", "search_wall_s", "lut_mape_pct"} <= set(pipeline.data.metrics)
    search = client.get_run(state["stages"]["search"]["mlflow_run_id"]).data.params
    assert search["targets_relative"] == "0.9,0.75" and float(search["targets_reference_ms"]) == \
        pytest.approx(reference, rel=1e-5) and search["targets_reference_arch"] == str(start)
    assert (cwd / "mlruns").is_dir()  # artifacts next to the store
    assert not ray.is_initialized()


def _readme_snippet(section: str) -> str:
    """The first Python block under the README's heading ``section``, as written."""
    text = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    return body.split("```python\n", 1)[1].split("```", 1)[0]


def test_a_winner_loaded_as_the_readme_says_scores_its_reported_top1(quickstart):
    """Delivered = evaluated: every winner's saved network (BN statistics recalibrated) scores exactly the top-1 the
    job reports, on the job's evaluation images; the README's snippet loads one as written."""
    cwd, _, _ = quickstart
    root = cwd / "runs" / "quickstart"
    saved = json.loads((root / "search" / "results.json").read_text())
    namespace: dict = {}
    exec(compile(_readme_snippet("Using a winner"), "README.md", "exec"), namespace)
    model, card = namespace["model"], namespace["card"]
    assert namespace["logits"].shape == (1, 10) and card.method == "slimming" and card.num_classes == 10

    data = evaluation_data(saved["config"]["data"], card.img_size, saved["config"]["eval_images"])
    supernet, _ = load_supernet(saved["supernet_checkpoint"])
    train = json.loads((root / "pipeline.json").read_text())["stages"]["train"]
    for result in saved["results"]:
        model, card = load_winner(root / "search" / "winners" / f"{result['method']}@{result['target_ms']:g}ms")
        correct, total = count_correct(model, data.val)
        assert correct / total == result["top1"] == card.top1 and total == card.eval_images == 64
        assert card.arch == Arch.from_dict(result["arch"]) and card.predicted_ms == result["predicted_ms"]
        assert card.measured_ms == result["measured_ms"] and card.meets_target == result["meets_target"]
        assert card.supernet_sha256 == train["sha256"] and card.latency_backend == "torch-cpu"
        # the saved statistics are the recalibrated ones, not the supernet's
        plain = supernet.extract(card.arch).state_dict()
        means = [k for k in plain if k.endswith("running_mean")]
        assert means and not all(torch.equal(plain[k], model.state_dict()[k]) for k in means)


def test_a_second_run_reuses_everything(quickstart, capsys):
    cwd, argv, _ = quickstart
    root = cwd / "runs" / "quickstart"
    before = {p: p.stat().st_mtime_ns for p in (root / "latency" / "torch-cpu-b1.parquet",
                                               root / "search" / "results.json", root / "pipeline.json")}
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert err.count(": reused (") == 4  # train, table, search, retrain
    state = json.loads((root / "pipeline.json").read_text())
    # the same config, every stage reused: nothing new to record (the history keeps the run that made the outputs)
    assert [state["stages"][s]["status"] for s in ("train", "table", "search")] == ["ran", "built", "ran"]
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())
    assert "slimming" in out and "Pareto plot:" in out


def test_changed_settings_are_refused_not_overwritten(quickstart, capsys):
    cwd, argv, _ = quickstart
    table = cwd / "runs" / "quickstart" / "latency" / "torch-cpu-b1.parquet"
    stamp = table.stat().st_mtime_ns
    assert main(argv + ["--set", "latency.protocol.samples=3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("slimnas quickstart: error: latency.table:")
    assert "protocol.samples 2, the config asks for 3" in err[-1]
    assert main(argv + ["--set", "train.optim.lr=0.5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "holds a supernet trained with other settings (optim.lr: 0.03 -> 0.5)" in err[-1]
    assert table.stat().st_mtime_ns == stamp


def test_an_interrupted_search_leaves_earlier_results_intact(quickstart):
    cwd, argv, _ = quickstart
    root = cwd / "runs" / "quickstart"
    results, state_file = root / "search" / "results.json", root / "pipeline.json"
    saved, record = results.read_bytes(), json.loads(state_file.read_text())["stages"]["search"]

    def interrupt(line: str) -> None:
        if line.startswith("[search] slimming: running"):
            raise KeyboardInterrupt

    pairs = [argv[i + 1] for i in range(1, len(argv), 2)]
    cfg = load_pipeline(apply_overrides(quickstart_source(), pairs))
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(cfg, force=["search"], echo=interrupt)
    assert results.read_bytes() == saved  # the earlier results and their record stay until a new job finishes
    assert json.loads(state_file.read_text())["stages"]["search"] == record
    assert not ray.is_initialized()
    with pytest.raises(InputError, match="--force: unknown stage"):
        run_pipeline(cfg, force=["everything"])


def test_the_validation_line_says_when_the_machine_was_disturbed_through_every_attempt():
    from slimnas.platform.pipeline.run import _validation_text

    plain = {"n": 50, "within_10pct": 0.62, "mape_pct": 9.2, "kendall_tau": 0.943}
    settled = _validation_text({"plain_all": plain, "measurement": {"attempts": 3, "unsettled": ""}}, "t.parquet")
    assert settled == ("50 networks measured end to end, 62% within +-10% of the table, mean absolute error 9.2%, "
                       "Kendall tau 0.943")
    assert _validation_text({"plain_all": plain}, "t.parquet") == settled  # a validation from before the field
    reason = "39 of 50 still had over a quarter of their passes disturbed after the extra passes"
    disturbed = _validation_text({"plain_all": plain, "measurement": {"attempts": 3, "unsettled": reason}},
                                 "t.parquet")
    assert disturbed.startswith(settled + ". The machine was disturbed through all 3 attempt(s) at this validation "
                                          "(39 of 50")
    assert disturbed.endswith("validate again when it is quieter: slimnas lut validate --lut t.parquet")
