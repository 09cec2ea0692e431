"""Pipeline configs: the shipped ones load, bad ones fail in one line naming the field (exit 2), nothing written."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from slimnas.config import load_yaml
from slimnas.errors import ConfigError, InputError
from slimnas.platform.cli import main
from slimnas.platform.commands.pipeline import apply_overrides, quickstart_source
from slimnas.platform.pipeline.config import load_pipeline

ROOT = Path(__file__).resolve().parents[3]


def test_the_embedded_quickstart_is_the_file_the_readme_names():
    assert "slimnas/platform/configs/quickstart.yaml" in (ROOT / "README.md").read_text()
    assert quickstart_source() == load_yaml(ROOT / "slimnas" / "platform" / "configs" / "quickstart.yaml")
    assert not (ROOT / "configs" / "quickstart.yaml").exists()  # one quickstart config, the packaged one
    cfg = load_pipeline(quickstart_source())
    assert cfg.output_dir == Path("runs/quickstart") and cfg.train.run.out_dir == "runs/quickstart"
    assert cfg.train.run.name == "supernet" and cfg.train.space == "tiny" and cfg.train.data.kind == "digits"
    assert cfg.latency.backend == "torch-cpu" and cfg.latency.validate_.num_archs >= 10
    assert len(cfg.search.targets_relative) >= 3 and {"slimming", "random", "tpe", "nsga2"} <= set(cfg.search.methods)
    assert all(f < 1 for f in cfg.search.targets_relative)  # of slimming's start latency: each needs slimming steps
    assert cfg.table_path == Path("runs/quickstart/latency/torch-cpu-b1.parquet")


def test_the_stage_configs_are_filled_from_the_pipeline(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    cfg = load_pipeline(apply_overrides(quickstart_source(), ["output=/data/out", "search.eval_images=50"]))
    train = cfg.train_config()
    assert train.run.run_dir == Path("/data/out/supernet") and train.tracking.enabled
    assert train.tracking.tracking_uri == "http://mlflow.example:5000"
    assert train.tracking.experiment == "slimnas-quickstart"
    job = cfg.search_job("/ckpt.pt", "/t.parquet", [2.0, 1.0, 1.5])
    assert job.job_dir() == Path("/data/out/search") and job.targets == [2.0, 1.5, 1.0]
    assert job.supernet == "/ckpt.pt" and job.latency.table == "/t.parquet" and job.eval_images == 50
    assert job.data == cfg.train.data and job.ray.num_cpus == 2
    assert job.tracking.tracking_uri == "http://mlflow.example:5000"


def test_the_retrain_stage_config_is_filled_from_the_pipeline():
    from slimnas.search_spaces import SearchSpace

    arch = SearchSpace.preset("tiny").max_arch().to_dict()
    run_dir = Path("/out/search/retrained/x.staging/x")
    cfg = load_pipeline(quickstart_source())  # the quickstart: one epoch fine-tuning slimming's winners
    assert cfg.retrain.enabled and cfg.retrain.methods() == ["slimming"] and cfg.retrain_epochs == 1
    tune = cfg.retrain_config(arch, "/w.pt", run_dir)
    assert (tune.init, tune.weights, tune.run.run_dir, tune.run.epochs) == ("weights", "/w.pt", run_dir, 1)
    assert tune.optim.lr == pytest.approx(cfg.train.optim.lr / 10) and tune.optim.warmup_epochs == 0
    assert tune.optim.min_lr == cfg.train.optim.min_lr and tune.data == cfg.train.data
    assert tune.augment == cfg.train.augment and not tune.distributed.enabled and not tune.tracking.enabled
    assert cfg.search_dir == Path("runs/quickstart/search")
    # the defaults: off, the best per target, fine-tuning for a tenth of the supernet's epochs
    default = load_pipeline(apply_overrides(quickstart_source(), ["retrain={}", "train.run.epochs=30"]))
    assert not default.retrain.enabled and default.retrain.methods() is None and default.retrain_epochs == 3
    # from scratch: every epoch, the train section's optim with the keys given here
    scratch = load_pipeline(apply_overrides(quickstart_source(), ["retrain={init: scratch, optim: {lr: 0.05}}",
                                                                  "retrain.ray=true"]))
    new = scratch.retrain_config(arch, "/w.pt", run_dir)
    assert (new.init, new.weights, new.run.epochs) == ("scratch", None, scratch.train.run.epochs)
    assert new.optim.lr == 0.05 and new.optim.warmup_epochs == scratch.train.optim.warmup_epochs
    assert new.distributed.enabled and new.distributed.num_workers == scratch.train.distributed.num_workers
    assert new.distributed.storage_path == str(run_dir.parent)


def test_the_imagenet_example_loads():
    cfg = load_pipeline(ROOT / "configs" / "imagenet-l7.yaml")
    assert cfg.train.space == "l7" and cfg.train.data.kind == "parquet" and cfg.train.distributed.enabled
    assert cfg.train.distributed.accelerator_type == "A100" and cfg.train.distributed.address == "auto"
    assert cfg.latency.backend == "torch-cuda" and cfg.latency.batch == 64
    assert cfg.latency.resources["accelerator_type:V100"] > 0 and cfg.ray.gpus_per_trial == 1
    assert cfg.ray.latency_resources == {"accelerator_type:V100": 0.01}
    assert cfg.tracking.tracking_uri.startswith("http")


BASE = {"train": {"space": "tiny"}, "search": {"targets": [1.0]}}


@pytest.mark.parametrize("change, message", [
    ({"bogus": 1}, "bogus: unknown field"),
    ({"train": {"space": "tiny", "optim": {"lr": "fast"}}}, "train.optim.lr: Input should be a valid number"),
    ({"train": {"space": "huge"}}, "train.space"),
    ({"train": {"space": "tiny", "tracking": {"enabled": True}}}, "train.tracking.enabled: set by the pipeline"),
    ({"search": {}}, "search: Value error, give targets (ms) or targets_relative"),
    ({"search": {"targets_relative": [1.5]}}, "search.targets_relative: Value error, fractions"),
    ({"search": {"targets": [1.0], "methods": ["random"]}}, "search: Value error, budget 'auto' matches"),
    ({"search": {"targets": [1.0], "methods": ["greedy"]}}, "search.methods.0"),
    ({"latency": {"backend": "tpu"}}, "latency.backend"),
    ({"latency": {"validate": {"num_archs": -1}}}, "latency.validate.num_archs"),
    ({"latency": {"protocol": {"passes": 0}}}, "latency.protocol.passes: Input should be greater than or equal to 1"),
    ({"latency": {"protocol": {"statistic": "mode"}}}, "latency.protocol.statistic"),
    ({"latency": {"protocol": {"repeats": 3}}}, "latency.protocol.repeats: unknown field"),
    ({"latency": {"rotation_mb": -2}}, "latency.rotation_mb"),
    ({"latency": {"harness": "inside"}}, "latency.harness"),
    ({"ray": {"num_cpus": "two"}}, "ray.num_cpus"),
    ({"name": "a/b"}, "name: Value error, must be a plain directory name"),
    ({"threads": 0}, "threads: Input should be greater than or equal to 1"),
    ({"retrain": {"winners": "greedy"}}, "retrain.winners: Value error, 'greedy' is neither best nor a search method"),
    ({"retrain": {"enabled": True, "winners": "exhaustive"}},
     "retrain.winners: 'exhaustive' is not among search.methods"),
    ({"retrain": {"optim": {"lr": 0}}}, "retrain.optim.lr: Input should be greater than 0"),
])
def test_bad_configs_name_the_field(change, message):
    with pytest.raises(ConfigError) as info:
        load_pipeline({**BASE, **change})
    assert str(info.value).startswith(message.split(":")[0]) and message in str(info.value)


def test_overrides():
    data = apply_overrides({"a": {"b": 1}}, ["a.b=2", "a.c=[x, y]", "d.e=true"])
    assert data == {"a": {"b": 2, "c": ["x", "y"]}, "d": {"e": True}}
    with pytest.raises(InputError, match="expected KEY=VALUE"):
        apply_overrides({}, ["a.b"])
    with pytest.raises(InputError, match="a is not a section"):
        apply_overrides({"a": 1}, ["a.b=2"])


def test_bad_inputs_end_in_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    good = apply_overrides(quickstart_source(), [f"output={tmp_path / 'out'}"])
    cases = {
        "unknown.yaml": ({**good, "tarin": {}}, "tarin: unknown field"),
        "types.yaml": (apply_overrides(good, ["train.run.epochs=many"]), "train.run.epochs: Input should be"),
        "data.yaml": (apply_overrides(good, ["train.data.kind=imagefolder", f"train.data.path={tmp_path}/none"]),
                      "data.path: no such"),
        "search-data.yaml": (apply_overrides(good, ["search.data.kind=parquet", f"search.data.path={tmp_path}/no"]),
                             "search.data.path: no such"),
        "ray.yaml": (apply_overrides(good, ["ray.address=127.0.0.1:1"]), "ray.address: cannot reach 127.0.0.1:1"),
        "mlflow.yaml": (apply_overrides(good, ["tracking.tracking_uri=http://127.0.0.1:1"]),
                        "tracking.tracking_uri: cannot reach the MLflow server at http://127.0.0.1:1"),
    }
    for name, (data, needle) in cases.items():
        (tmp_path / name).write_text(yaml.safe_dump(data))
        assert main(["run", "--config", str(tmp_path / name), "--check"]) == 2, name
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0] and lines[0].startswith("slimnas run: error: "), (name, lines)
    assert main(["run", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "config: no such file" in capsys.readouterr().err
    assert main(["quickstart", "--set", "train.run.epochs=2", "--check"]) == 0
    assert "config OK" in capsys.readouterr().out
    assert not (tmp_path / "runs" / "quickstart" / "pipeline.json").exists() and not (tmp_path / "mlflow.db").exists()


def test_the_command_line_has_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "slimnas.platform.cli", "quickstart", "--set", "train.run.epochs=0"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "slimnas quickstart: error: train.run.epochs: Input should be greater than or equal to 1 (got 0)"]
    assert not (tmp_path / "runs").exists()
