"""Bad input, per command and per config field: one line on stderr naming the field or the file, exit status 2, no
traceback, and nothing created or changed on disk (neither in the working directory nor in the output folder).

Every case runs the real command in-process (``slimnas.platform.cli.main``), the path users take. The checks come
before any work, so each case takes milliseconds (the first one pays for imports). ``CASE_COUNTS`` at the bottom
sums the cases per group (docs/reliability.md lists them).
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from slimnas.latency.table import FORMAT, LatencyTable, TableMeta
from slimnas.platform.cli import main
from slimnas.platform.commands.pipeline import apply_overrides, quickstart_source
from slimnas.search_spaces.efficientformer import Arch, SearchSpace

from .conftest import free_port

LONG = "n" * 300  # a path component longer than any file system allows (255 bytes)
MAX_LINE = 700  # an error line echoes at most this much (the CLI caps it at 600 characters plus its prefix)


# ---------------------------------------------------------------------------------------------------- inputs
def _table(path: Path, **meta) -> Path:
    space = meta.pop("space", SearchSpace.preset("tiny"))
    fields = dict(backend="torch-cpu", device="cpu", batch=1, dtype="float32", img_size=space.img_size, threads=1,
                  space=space.to_dict())
    fields.update(meta)
    LatencyTable({}, TableMeta(**fields)).save(path)
    return path


def _bomb(levels: int = 9) -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def inp(tmp_path_factory) -> Path:
    """Read-only inputs shared by the cases (their tree is compared before and after each case too)."""
    root = tmp_path_factory.mktemp("inputs")
    (root / "binary.bin").write_bytes(bytes(range(256)) * 16)
    (root / "latin1.yaml").write_bytes("name: caf\xe9\n".encode("latin-1"))
    (root / "bomb.yaml").write_text(_bomb())
    (root / "recursive.yaml").write_text("a: &a [1, *a]\n")
    (root / "deep.yaml").write_text("a: " + "[" * 5000 + "]" * 5000 + "\n")
    (root / "list.yaml").write_text("- a\n- b\n")
    (root / "invalid.yaml").write_text("a: [1,\nb: }\n")
    (root / "empty.yaml").write_text("")
    (root / "tabs.yaml").write_text("name:\tx\n\tbad: 1\n")
    with open(root / "huge.yaml", "w") as handle:
        handle.write(("#" * 1023 + "\n") * (17 * 1024))
    (root / "folder").mkdir()
    (root / "afile").write_text("just a file\n")
    _table(root / "tiny.parquet")
    _table(root / "onnx.parquet", backend="onnxruntime")
    _table(root / "otherspace.parquet",
           space=dataclasses.replace(SearchSpace.preset("tiny"), max_widths=(32, 64, 96, 112), name="other"))
    _table(root / "batch8.parquet", batch=8)
    pq.write_table(pa.table({"a": [1, 2, 3]}), root / "foreign.parquet")
    data = (root / "tiny.parquet").read_bytes()
    (root / "truncated.parquet").write_bytes(data[: len(data) // 2])
    future = pa.table({"kind": ["stem"]}).replace_schema_metadata(
        {b"slimnas.latency": json.dumps({"format": FORMAT, "format_version": 99}).encode()})
    pq.write_table(future, root / "future.parquet")
    (root / "calibration-bad.json").write_text('{"format": "something else"}')
    tiny_max = SearchSpace.preset("tiny").max_arch().to_dict()
    (root / "arch-bad.json").write_text("{bad")
    (root / "arch-list.json").write_text("[1, 2]")
    (root / "arch-widths.json").write_text(json.dumps({**tiny_max, "widths": [24, 64, 96, 128]}))
    (root / "arch-img.json").write_text(json.dumps({**tiny_max, "img_size": 33}))
    (root / "arch-extra.json").write_text(json.dumps({**tiny_max, "depth": 3}))
    (root / "arch-wide.json").write_text(json.dumps({**tiny_max, "widths": [32, 64, 96, 256]}))
    (root / "arch-huge.json").write_text(json.dumps({**Arch.preset("l7").to_dict(), "img_size": 65536}))
    (root / "measurements.json").write_text("{}")
    with zipfile.ZipFile(root / "fake.pt", "w") as archive:  # a zip, as torch.save writes, but no checkpoint
        archive.writestr("fake/data.pkl", b"not a pickle")
    return root


def _tree(*roots: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``roots`` with its size and modification time."""
    found = {}
    for root in roots:
        for path in [root, *root.rglob("*")]:
            info = path.lstat()
            found[str(path)] = (info.st_size if path.is_file() else -1, info.st_mtime_ns)
    return found


@pytest.fixture
def work(tmp_path, monkeypatch) -> Path:
    """A fresh working directory (where default outputs and the default MLflow store would go)."""
    monkeypatch.chdir(tmp_path)
    for name in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_TOKEN",
                 "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def refused(argv: list[str], needle: str, capsys, *roots: Path) -> str:
    """Run ``slimnas <argv>``: exit 2, one line on stderr holding ``needle``, no traceback, nothing written under
    ``roots``. Returns the line."""
    before = _tree(*roots)
    capsys.readouterr()
    try:
        status = main(argv)
    except SystemExit as exc:  # argparse's usage errors exit through the parser (one line, status 2)
        status = exc.code
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    assert status == 2, (status, out.err[-2000:])
    assert len(lines) == 1, out.err[-2000:]
    assert needle in lines[0], lines[0]
    assert "Traceback" not in out.err and len(lines[0]) <= MAX_LINE, lines[0][:200]
    assert _tree(*roots) == before, "a refused command changed files"
    return lines[0]


def _expand(text: str, inp: Path, work: Path) -> str:
    return text.replace("{inp}", str(inp)).replace("{work}", str(work))


# ---------------------------------------------------------------------------------------------------- slimnas run
def _pipeline(work: Path, sets: list[str]) -> dict:
    base = apply_overrides(quickstart_source(), [f"output={work / 'out'}", "latency.validate.num_archs=6"])
    return apply_overrides(base, sets)


RUN_FIELDS = [
    # search.*
    ("targets-huge", ["search.targets=[1e9]", "search.targets_relative=null"], "search.targets.0: Input should be "
                                                                               "less than or equal to 100000"),
    ("targets-zero", ["search.targets=[0]", "search.targets_relative=null"], "search.targets.0: Input should be "
                                                                             "greater than 0"),
    ("targets-negative", ["search.targets=[-1.5]", "search.targets_relative=null"], "search.targets.0"),
    ("targets-nan", ["search.targets=[.nan]", "search.targets_relative=null"], "search.targets.0: Input should be "
                                                                               "a finite number"),
    ("targets-inf", ["search.targets=[.inf]", "search.targets_relative=null"], "search.targets.0"),
    ("targets-empty", ["search.targets=[]", "search.targets_relative=null"], "search.targets: List should have at "
                                                                             "least 1 item"),
    ("targets-text", ["search.targets=[fast]", "search.targets_relative=null"], "search.targets.0"),
    ("targets-and-relative", ["search.targets=[1.0]"], "search: Value error, give targets (ms) or targets_relative"),
    ("relative-zero", ["search.targets_relative=[0]"], "search.targets_relative: Value error, fractions"),
    ("relative-above-1", ["search.targets_relative=[1.5]"], "search.targets_relative: Value error, fractions"),
    ("relative-nan", ["search.targets_relative=[.nan]"], "search.targets_relative.0"),
    ("budget-zero", ["search.budget=0"], "search.budget"),
    ("budget-huge", ["search.budget=1000000000000"], "search.budget"),
    ("budget-text", ["search.budget=lots"], "search.budget"),
    ("eval-images-zero", ["search.eval_images=0"], "search.eval_images"),
    ("eval-images-huge", ["search.eval_images=100000000000"], "search.eval_images"),
    ("search-seed-negative", ["search.seed=-1"], "search.seed"),
    ("tolerance-negative", ["search.tolerance_pct=-1"], "search.tolerance_pct"),
    ("extra-steps-huge", ["search.max_extra_steps=100000"], "search.max_extra_steps"),
    ("early-stop-z-zero", ["search.early_stop.z=0"], "search.early_stop.z"),
    ("early-stop-rule", ["search.early_stop.rule=sometimes"], "search.early_stop.rule"),
    ("methods-empty", ["search.methods=[]"], "search.methods"),
    ("methods-unknown", ["search.methods=[greedy]"], "search.methods.0"),
    ("predictor-unknown", ["search.predictor=magic"], "search.predictor"),
    ("predictor-calibrated-no-validation", ["search.predictor=calibrated", "latency.validate.num_archs=0"],
     "search.predictor: 'calibrated' needs the validation's fitted predictor"),
    ("slimming-removal", ["search.slimming.mb3d_removal=drop"], "search.slimming.mb3d_removal"),
    ("search-unknown-key", ["search.targetz=[1]"], "search.targetz: unknown field"),
    # latency.*
    ("latency-batch-huge", ["latency.batch=1000000000000"], "latency.batch: Input should be less than or equal to "
                                                            "65536"),
    ("latency-batch-1e12", ["latency.batch=1e12"], "latency.batch"),
    ("latency-batch-zero", ["latency.batch=0"], "latency.batch"),
    ("latency-threads-zero", ["latency.threads=0"], "latency.threads: Input should be greater than or equal to 1"),
    ("latency-threads-huge", ["latency.threads=100000"], "latency.threads"),
    ("warmup-negative", ["latency.protocol.warmup_ms=-5"], "latency.protocol.warmup_ms"),
    ("passes-zero", ["latency.protocol.passes=0"], "latency.protocol.passes"),
    ("samples-huge", ["latency.protocol.samples=10000000000"], "latency.protocol.samples"),
    ("pass-ms-nan", ["latency.protocol.pass_ms=.nan"], "latency.protocol.pass_ms"),
    ("tolerance-zero", ["latency.protocol.tolerance=0"], "latency.protocol.tolerance"),
    ("statistic-unknown", ["latency.protocol.statistic=mode"], "latency.protocol.statistic"),
    ("reference-networks-huge", ["latency.protocol.reference_networks=99"], "latency.protocol.reference_networks"),
    ("quiet-passes-negative", ["latency.protocol.quiet_passes=-1"], "latency.protocol.quiet_passes"),
    ("settle-retries-huge", ["latency.protocol.settle_retries=11"], "latency.protocol.settle_retries"),
    ("rotation-negative", ["latency.rotation_mb=-1"], "latency.rotation_mb"),
    ("rotation-huge", ["latency.rotation_mb=1000000000"], "latency.rotation_mb"),
    ("cover-zero", ["latency.cover=0"], "latency.cover"),
    ("max-networks-zero", ["latency.max_networks=0"], "latency.max_networks"),
    ("fill-unknown", ["latency.fill=guess"], "latency.fill"),
    ("calibrate-networks-negative", ["latency.calibrate_networks=-1"], "latency.calibrate_networks"),
    ("validate-num-archs-negative", ["latency.validate.num_archs=-1"], "latency.validate.num_archs"),
    ("validate-fraction-one", ["latency.validate.calibrate_fraction=1"], "latency.validate.calibrate_fraction"),
    ("validate-seed-negative", ["latency.validate.seed=-1"], "latency.validate.seed"),
    ("backend-unknown", ["latency.backend=tpu"], "latency.backend"),
    ("resources-negative", ["latency.resources={GPU: -1}"], "latency.resources.GPU"),
    ("resources-nan", ["latency.resources={GPU: .nan}"], "latency.resources.GPU"),
    ("harness-unknown", ["latency.harness=inside"], "latency.harness"),
    ("form-unknown", ["latency.form=folded"], "latency.form"),
    ("latency-unknown-key", ["latency.repeats=3"], "latency.repeats: unknown field"),
    # train.*
    ("epochs-zero", ["train.run.epochs=0"], "train.run.epochs: Input should be greater than or equal to 1"),
    ("epochs-text", ["train.run.epochs=many"], "train.run.epochs: Input should be a valid integer"),
    ("epochs-huge", ["train.run.epochs=10000000000"], "train.run.epochs"),
    ("train-batch-huge", ["train.data.batch_size=1000000000000"], "train.data.batch_size"),
    ("train-batch-zero", ["train.data.batch_size=0"], "train.data.batch_size"),
    ("train-workers-negative", ["train.data.workers=-1"], "train.data.workers"),
    ("train-classes-zero", ["train.data.num_classes=0"], "train.data.num_classes"),
    ("train-lr-negative", ["train.optim.lr=-1"], "train.optim.lr"),
    ("train-lr-nan", ["train.optim.lr=.nan"], "train.optim.lr: Input should be a finite number"),
    ("train-lr-inf", ["train.optim.lr=.inf"], "train.optim.lr"),
    ("train-seed-negative", ["train.run.seed=-1"], "train.run.seed"),
    ("train-space-unknown", ["train.space=huge"], "train.space"),
    ("train-run-name-slash", ["train.run.name=a/b"], "train.run.name: Value error, must be a plain directory name"),
    ("train-tracking-owned", ["train.tracking.enabled=true"], "train.tracking.enabled: set by the pipeline"),
    ("train-data-kind", ["train.data.kind=mnist"], "train.data.kind"),
    ("train-data-missing", ["train.data.kind=imagefolder", "train.data.path={work}/none"], "data.path: no such"),
    ("search-data-missing", ["search.data.kind=parquet", "search.data.path={work}/none"], "search.data.path: no such"),
    ("timm-weights-missing", ["train.model.timm_weights={work}/none.pth"], "model.timm_weights: no such file"),
    ("train-out-dir-under-file", ["train.run.out_dir={inp}/afile/runs"], "train.run.out_dir: "),
    # the job
    ("name-slash", ["name=a/b"], "name: Value error, must be a plain directory name"),
    ("name-dotdot", ["name=.."], "name: Value error, must be a plain directory name"),
    ("name-too-long", [f"name={LONG}"], "name: Value error, must be a plain directory name of at most 255 bytes"),
    ("threads-zero", ["threads=0"], "threads: Input should be greater than or equal to 1"),
    ("threads-huge", ["threads=100000"], "threads: Input should be less than or equal to 4096"),
    ("unknown-top-key", ["tarin={}"], "tarin: unknown field"),
    ("output-is-file", ["output={inp}/afile"], "output: {inp}/afile: it is a file, not a folder"),
    ("output-under-file", ["output={inp}/afile/out"], "is a file, not a folder"),
    ("output-name-too-long", [f"output={{work}}/{LONG}/out"], "output: "),
    # ray.*
    ("ray-num-cpus-zero", ["ray.num_cpus=0"], "ray.num_cpus"),
    ("ray-num-cpus-text", ["ray.num_cpus=two"], "ray.num_cpus"),
    ("ray-object-store-small", ["ray.object_store_mb=10"], "ray.object_store_mb"),
    ("ray-object-store-huge", ["ray.object_store_mb=1000000000000"], "ray.object_store_mb"),
    ("ray-object-store-over-memory", ["ray.object_store_mb=60000000"],
     "ray.object_store_mb: 60000000 MiB is more than this machine's memory"),
    ("ray-cpus-per-trial-zero", ["ray.cpus_per_trial=0"], "ray.cpus_per_trial"),
    ("ray-gpus-per-trial-negative", ["ray.gpus_per_trial=-1"], "ray.gpus_per_trial"),
    ("ray-max-concurrent-zero", ["ray.max_concurrent=0"], "ray.max_concurrent"),
    ("ray-latency-resources-nan", ["ray.latency_resources={GPU: .nan}"], "ray.latency_resources.GPU"),
    ("ray-address-unreachable", ["ray.address=127.0.0.1:1"], "ray.address: cannot reach 127.0.0.1:1"),
    ("ray-address-ipv6-malformed", ["ray.address='http://[::1'"], "ray.address: malformed address"),
    ("ray-address-port-range", ["ray.address=127.0.0.1:99999"], "ray.address: malformed address"),
    ("ray-address-port-zero", ["ray.address=127.0.0.1:0"], "ray.address: port 0"),
    ("ray-address-no-host", ["ray.address='ray://'"], "ray.address: expected host:port"),
    ("ray-address-control-char", ['ray.address="127.0.0\\x07.1:1"'], "ray.address: expected an address like "
                                                                       "host:port"),
    ("distributed-address-unreachable", ["train.distributed.enabled=true", "train.distributed.address=127.0.0.1:1"],
     "train.distributed.address: cannot reach 127.0.0.1:1"),
    # retrain.*
    ("retrain-winners-unknown", ["retrain.winners=fastest"], "retrain.winners: Value error, 'fastest' is neither best "
                                                              "nor a search method"),
    ("retrain-winners-not-searched", ["search.methods=[slimming, random]", "retrain.winners=[slimming, tpe]"],
     "retrain.winners: 'tpe' is not among search.methods (slimming, random)"),
    ("retrain-winners-best-in-list", ["retrain.winners=[best, slimming]"], "retrain.winners: Value error, best stands "
                                                                            "alone"),
    ("retrain-winners-empty", ["retrain.winners=[]"], "retrain.winners: Value error, an empty list"),
    ("retrain-init-unknown", ["retrain.init=imagenet"], "retrain.init: Input should be 'supernet' or 'scratch'"),
    ("retrain-epochs-zero", ["retrain.epochs=0"], "retrain.epochs: Input should be greater than or equal to 1"),
    ("retrain-lr-negative", ["retrain.optim.lr=-0.1"], "retrain.optim.lr: Input should be greater than 0"),
    ("retrain-optim-unknown-key", ["retrain.optim.learning_rate=0.1"], "retrain.optim.learning_rate: unknown field"),
    ("retrain-unknown-key", ["retrain.epoch=3"], "retrain.epoch: unknown field"),
    ("retrain-ray-text", ["retrain.ray=cluster"], "retrain.ray: Input should be a valid boolean"),
    # tracking.*
    ("mlflow-unreachable", ["tracking.tracking_uri=http://127.0.0.1:1"],
     "tracking.tracking_uri: cannot reach the MLflow server at http://127.0.0.1:1"),
    ("mlflow-ipv6-malformed", ["tracking.tracking_uri='http://[::1'"], "tracking.tracking_uri: malformed address"),
    ("mlflow-no-host", ["tracking.tracking_uri='http://'"], "tracking.tracking_uri: expected http(s)://HOST"),
    ("mlflow-file-store", ["tracking.tracking_uri=./mlruns"], "tracking.tracking_uri: './mlruns' is a plain file"),
    ("mlflow-store-under-file", ["tracking.tracking_uri=sqlite:///{inp}/afile/mlflow.db"],
     "tracking.tracking_uri: {inp}/afile/mlflow.db: {inp}/afile is a file, not a folder"),
    ("mlflow-store-name-too-long", [f"tracking.tracking_uri=sqlite:///{{work}}/{LONG}/mlflow.db"],
     "tracking.tracking_uri: "),
    ("mlflow-experiment-empty", ["tracking.experiment=''"], "tracking.experiment"),
    ("tracking-enabled-text", ["tracking.enabled=perhaps"], "tracking.enabled"),
    ("tracking-onnx-models-text", ["tracking.onnx_models=perhaps"], "tracking.onnx_models: Input should be a valid "
                                                                    "boolean"),
    # latency.table: checked before training, not when the table stage starts
    ("table-binary", ["latency.table={inp}/binary.bin"], "latency.table: {inp}/binary.bin is not a readable Parquet"),
    ("table-truncated", ["latency.table={inp}/truncated.parquet"], "latency.table: {inp}/truncated.parquet is not a "
                                                                   "readable Parquet file"),
    ("table-foreign-schema", ["latency.table={inp}/foreign.parquet"], "is not a slimnas latency table"),
    ("table-future-format", ["latency.table={inp}/future.parquet"], "has format version 99"),
    ("table-other-space", ["latency.table={inp}/otherspace.parquet"], "was measured with another space"),
    ("table-other-backend", ["latency.table={inp}/onnx.parquet"],
     "latency.table: {inp}/onnx.parquet was measured with backend 'onnxruntime', the config asks for 'torch-cpu'"),
    ("table-other-batch", ["latency.table={inp}/batch8.parquet"], "was measured with batch 8"),
    ("table-is-folder", ["latency.table={inp}/folder"], "latency.table: {inp}/folder is a folder, not a file"),
    ("table-under-file", ["latency.table={inp}/afile/t.parquet"], "latency.table: {inp}/afile/t.parquet: "),
    ("table-name-too-long", [f"latency.table={{work}}/{LONG}.parquet"], "latency.table: "),
]


@pytest.mark.parametrize("sets, needle", [c[1:] for c in RUN_FIELDS], ids=[c[0] for c in RUN_FIELDS])
def test_run_refuses_a_bad_field_before_any_work(sets, needle, inp, work, capsys):
    data = _pipeline(work, [_expand(s, inp, work) for s in sets])
    config = work / "pipeline.yaml"
    config.write_text(yaml.safe_dump(data))
    line = refused(["run", "--config", str(config)], _expand(needle, inp, work), capsys, work, inp)
    assert line.startswith("slimnas run: error: ")
    assert not (work / "out").exists()


RUN_FILES = [
    ("missing", "{work}/none.yaml", "config: no such file {work}/none.yaml"),
    ("binary", "{inp}/binary.bin", "config: {inp}/binary.bin is a binary file, not text"),
    ("latin1", "{inp}/latin1.yaml", "config: {inp}/latin1.yaml is not UTF-8 text"),
    ("alias-bomb", "{inp}/bomb.yaml", "through YAML aliases (an alias bomb?)"),
    ("recursive-alias", "{inp}/recursive.yaml", "has a YAML alias that contains itself"),
    ("nested-too-deep", "{inp}/deep.yaml", "config: {inp}/deep.yaml is nested too deeply"),
    ("a-list", "{inp}/list.yaml", "config: expected a mapping"),
    ("invalid-yaml", "{inp}/invalid.yaml", "config: {inp}/invalid.yaml is not valid YAML at line"),
    ("tabs", "{inp}/tabs.yaml", "is not valid YAML at line"),
    ("empty", "{inp}/empty.yaml", "config: expected a mapping"),
    ("too-large", "{inp}/huge.yaml", "config: {inp}/huge.yaml is 17.0 MiB"),
    ("a-folder", "{inp}/folder", "config: {inp}/folder is a folder, not a file"),
    ("under-a-file", "{inp}/afile/x.yaml", "config: {inp}/afile/x.yaml: a part of the path is a file, not a folder"),
    ("name-too-long", f"{{work}}/{LONG}.yaml", "a name in the path is longer than the file system allows"),
    ("a-device", "/dev/zero", "config: /dev/zero is not a regular file"),
]


@pytest.mark.parametrize("path, needle", [c[1:] for c in RUN_FILES], ids=[c[0] for c in RUN_FILES])
def test_run_refuses_a_bad_config_file(path, needle, inp, work, capsys):
    refused(["run", "--config", _expand(path, inp, work)], _expand(needle, inp, work), capsys, work, inp)


RUN_ARGS = [
    ("set-no-equals", ["quickstart", "--set", "train.run.epochs"], "--set: expected KEY=VALUE"),
    ("set-empty-key-part", ["quickstart", "--set", "train..epochs=2"], "--set: expected KEY=VALUE"),
    ("set-bad-yaml", ["quickstart", "--set", "train.run.epochs=[1,"], "--set train.run.epochs: "),
    ("set-alias-bomb", ["quickstart", "--set", "train.run.epochs=[&a [1,1,1,1,1,1,1,1,1,1], &b [*a,*a,*a,*a,*a,*a,*a,"
                        "*a,*a,*a], &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b], &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c], &e [*d,*d,"
                        "*d,*d,*d,*d,*d,*d,*d,*d], [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]]"], "an alias bomb"),
    ("set-not-a-section", ["quickstart", "--set", "name.x=1"], "--set name.x: name is not a section"),
    ("set-epochs-zero", ["quickstart", "--set", "train.run.epochs=0"], "train.run.epochs: Input should be greater"),
    ("set-huge-value-echo-capped", ["quickstart", "--set", "train.run.epochs=" + "9" * 100_000], "train.run.epochs"),
    ("force-unknown-stage", ["quickstart", "--force", "everything", "--check"], "--force: unknown stage(s)"),
    ("force-retrain-disabled", ["quickstart", "--set", "retrain.enabled=false", "--force", "retrain"],
     "--force retrain: retrain.enabled is false"),
    ("output-empty", ["quickstart", "--output", "", "--check"], "--output: empty"),
    ("output-is-file", ["quickstart", "--output", "{inp}/afile", "--check"], "output: {inp}/afile: it is a file"),
    ("output-too-long", ["quickstart", "--output", f"{{work}}/{LONG}"], "output: "),
    ("run-without-config", ["run"], "the following arguments are required: --config"),
]


@pytest.mark.parametrize("argv, needle", [c[1:] for c in RUN_ARGS], ids=[c[0] for c in RUN_ARGS])
def test_run_and_quickstart_refuse_bad_arguments(argv, needle, inp, work, capsys):
    refused([_expand(a, inp, work) for a in argv], _expand(needle, inp, work), capsys, work, inp)
    assert not (work / "runs").exists()


def test_a_good_config_passes_the_same_checks(inp, work, capsys):
    """The control: the base config of the cases above passes, so each case fails for its own field."""
    config = work / "pipeline.yaml"
    config.write_text(yaml.safe_dump(_pipeline(work, [])))
    assert main(["run", "--config", str(config), "--check"]) == 0
    assert "config OK" in capsys.readouterr().out
    config.write_text(yaml.safe_dump(_pipeline(work, [f"latency.table={inp}/tiny.parquet", "search.targets=[5]",
                                                      "search.targets_relative=null"])))
    assert main(["run", "--config", str(config), "--check", "--force", "table"]) == 0  # rebuilt: not read


# ---------------------------------------------------------------------------------------------------- search, sweep
def _search_config(work: Path, inp: Path, sets: list[str]) -> Path:
    base = {"supernet": str(inp / "fake.pt"), "latency": {"table": str(inp / "tiny.parquet")}, "targets": [1.0],
            "output": str(work / "out"), "tracking": {"enabled": False}, "data": {"kind": "digits"}}
    path = work / "search.yaml"
    path.write_text(yaml.safe_dump(apply_overrides(base, [_expand(s, inp, work) for s in sets])))
    return path


SEARCH_FIELDS = [
    ("targets-huge", ["targets=[1e9]"], "targets.0: Input should be less than or equal to 100000"),
    ("targets-zero", ["targets=[0]"], "targets.0: Input should be greater than 0"),
    ("targets-nan", ["targets=[.nan]"], "targets.0: Input should be a finite number"),
    ("targets-empty", ["targets=[]"], "targets: List should have at least 1 item"),
    ("budget-zero", ["budget=0"], "budget: Value error, budget must be from 1"),
    ("budget-huge", ["budget=10000000000"], "budget: Value error"),
    ("seed-negative", ["seed=-1"], "seed: Input should be greater than or equal to 0"),
    ("eval-images-zero", ["eval_images=0"], "eval_images"),
    ("methods-empty", ["methods=[]"], "methods: Value error, name at least one method"),
    ("methods-unknown", ["methods=[greedy]"], "methods.0"),
    ("name-slash", ["name=a/b"], "name: Value error, must be a plain directory name"),
    ("unknown-key", ["bogus=1"], "bogus: unknown field"),
    ("tolerance-huge", ["latency.tolerance_pct=1e6"], "latency.tolerance_pct"),
    ("ray-cpus-per-trial-zero", ["ray.cpus_per_trial=0"], "ray.cpus_per_trial"),
    ("ray-object-store-over-memory", ["ray.object_store_mb=60000000"], "ray.object_store_mb: 60000000 MiB is more"),
    ("ray-address-unreachable", ["ray.address=127.0.0.1:1"], "ray.address: cannot reach 127.0.0.1:1"),
    ("ray-address-malformed", ["ray.address='[::1'"], "ray.address: malformed address"),
    ("ray-address-port-range", ["ray.address=localhost:70000"], "ray.address: malformed address"),
    ("mlflow-unreachable", ["tracking.enabled=true", "tracking.tracking_uri=http://127.0.0.1:1"],
     "tracking.tracking_uri: cannot reach the MLflow server at http://127.0.0.1:1"),
    ("mlflow-malformed", ["tracking.enabled=true", "tracking.tracking_uri='https://[::1'"],
     "tracking.tracking_uri: malformed address"),
    ("mlflow-store-under-file", ["tracking.enabled=true", "tracking.tracking_uri=sqlite:///{inp}/afile/m.db"],
     "tracking.tracking_uri: "),
    ("output-under-file", ["output={inp}/afile"], "output: {inp}/afile/search: {inp}/afile is a file, not a folder"),
    ("supernet-missing", ["supernet={work}/none.pt"], "supernet: no such file or folder {work}/none.pt"),
    ("supernet-name-too-long", [f"supernet={{work}}/{LONG}.pt"], "supernet: "),
    ("table-missing", ["latency.table={work}/none.parquet"], "latency.table: no such file {work}/none.parquet"),
    ("table-binary", ["latency.table={inp}/binary.bin"], "latency.table: {inp}/binary.bin is not a readable Parquet"),
    ("table-foreign", ["latency.table={inp}/foreign.parquet"], "latency.table: {inp}/foreign.parquet is not a "
                                                               "slimnas latency table"),
    ("table-truncated", ["latency.table={inp}/truncated.parquet"], "latency.table: "),
    ("table-future", ["latency.table={inp}/future.parquet"], "latency.table: "),
    ("calibration-binary", ["latency.calibration={inp}/binary.bin"],
     "latency.calibration: {inp}/binary.bin is a binary file, not text"),
    ("calibration-missing", ["latency.calibration={work}/none.json"], "latency.calibration: no such file"),
    ("calibration-foreign", ["latency.calibration={inp}/calibration-bad.json"],
     "latency.calibration: {inp}/calibration-bad.json is not a slimnas calibration file"),
    ("supernet-binary", ["supernet={inp}/binary.bin"], "supernet: {inp}/binary.bin is not a slimnas checkpoint"),
    ("supernet-zip-not-torch", [], "cannot read {inp}/fake.pt as a slimnas checkpoint"),
    ("supernet-empty-folder", ["supernet={inp}/folder"], "supernet: no checkpoint in {inp}/folder"),
]


@pytest.mark.parametrize("sets, needle", [c[1:] for c in SEARCH_FIELDS], ids=[c[0] for c in SEARCH_FIELDS])
def test_search_refuses_a_bad_field_before_ray_starts(sets, needle, inp, work, capsys):
    config = _search_config(work, inp, sets)
    refused(["search", "--config", str(config)], _expand(needle, inp, work), capsys, work, inp)
    assert not (work / "out").exists()


SEARCH_ARGS = [
    ("config-binary", ["search", "--config", "{inp}/binary.bin"], "config: {inp}/binary.bin is a binary file"),
    ("config-bomb", ["search", "--config", "{inp}/bomb.yaml"], "an alias bomb"),
    ("config-list", ["search", "--config", "{inp}/list.yaml"], "config: expected a mapping"),
    ("config-missing", ["search", "--config", "{work}/none.yaml"], "config: no such file"),
    ("sweep-targets-text", ["sweep", "--config", "{config}", "--targets", "1,x"], "--targets: expected "
                                                                                   "comma-separated milliseconds"),
    ("sweep-targets-empty", ["sweep", "--config", "{config}", "--targets", ","], "--targets: give at least one"),
    ("sweep-targets-nan", ["sweep", "--config", "{config}", "--targets", "nan"], "targets.0: Input should be a "
                                                                                 "finite number"),
    ("sweep-targets-huge", ["sweep", "--config", "{config}", "--targets", "1e9"], "targets.0"),
    ("sweep-targets-negative", ["sweep", "--config", "{config}", "--targets=-1"], "targets.0"),
    ("sweep-targets-echo-capped", ["sweep", "--config", "{config}", "--targets", "x" * 100_000], "--targets"),
    ("sweep-methods-unknown", ["sweep", "--config", "{config}", "--targets", "1", "--methods", "greedy"],
     "methods.0"),
]


@pytest.mark.parametrize("argv, needle", [c[1:] for c in SEARCH_ARGS], ids=[c[0] for c in SEARCH_ARGS])
def test_search_and_sweep_refuse_bad_arguments(argv, needle, inp, work, capsys):
    config = _search_config(work, inp, [])
    argv = [_expand(a, inp, work).replace("{config}", str(config)) for a in argv]
    line = refused(argv, _expand(needle, inp, work), capsys, work, inp)
    assert len(line) < 400  # a huge bad value is echoed in part only


def test_an_unreachable_ray_address_in_the_environment_is_named(inp, work, capsys, monkeypatch):
    """``init_ray`` honours ``$RAY_ADDRESS`` when the config gives none: the preflight checks it the same way."""
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    config = _search_config(work, inp, [])
    line = refused(["search", "--config", str(config)], "RAY_ADDRESS: cannot reach 127.0.0.1:1", capsys, work, inp)
    assert "ray.address" not in line


# ---------------------------------------------------------------------------------------------------- lut
LUT = [
    # build
    ("build-out-under-file", ["build", "--out", "{inp}/afile/t.parquet"], "--out: {inp}/afile/t.parquet: "
                                                                           "{inp}/afile is a file, not a folder"),
    ("build-out-name-too-long", ["build", "--out", f"{{work}}/{LONG}.parquet"], "--out: "),
    ("build-out-folder", ["build", "--out", "{inp}/folder"], "--out: {inp}/folder is a folder, not a file"),
    ("build-out-exists", ["build", "--out", "{inp}/tiny.parquet"], "exists; choose another --out"),
    ("build-batch-1e12", ["build", "--out", "{work}/t.parquet", "--batch-size", "1e12"], "--batch-size"),
    ("build-batch-huge", ["build", "--out", "{work}/t.parquet", "--batch-size", "1000000000000"],
     "--batch-size: must be from 1 to 65536"),
    ("build-batch-zero", ["build", "--out", "{work}/t.parquet", "--batch-size", "0"], "--batch-size"),
    ("build-batch-cannot-fit", ["build", "--space", "l7", "--img-size", "4096", "--batch-size", "65536", "--out",
                                "{work}/t.parquet"], "--batch-size: a batch of 65536 images of 4096x4096 needs"),
    ("build-img-size-odd", ["build", "--out", "{work}/t.parquet", "--img-size", "50"], "img_size"),
    ("build-img-size-huge", ["build", "--out", "{work}/t.parquet", "--img-size", "100000"], "--img-size"),
    ("build-warmup-negative", ["build", "--out", "{work}/t.parquet", "--warmup-ms", "-5"],
     "protocol.warmup_ms: must be between 0 and 600000, got -5.0"),
    ("build-threads-zero", ["build", "--out", "{work}/t.parquet", "--threads", "0"],
     "argument --threads: Input should be greater than or equal to 1 (got '0')"),
    ("build-threads-huge", ["build", "--out", "{work}/t.parquet", "--threads", "5000"],
     "argument --threads: Input should be less than or equal to 4096"),
    ("build-setting-of-another-backend", ["build", "--out", "{work}/t.parquet", "--provider", "cuda"],
     "argument --provider: not a setting of backend torch-cpu (its settings: --dtype, --threads, --allocator)"),
    ("build-layout-unknown", ["build", "--backend", "onnxruntime", "--out", "{work}/t.parquet", "--layout", "nhwc"],
     "argument --layout: invalid choice: 'nhwc' (choose from 'plain', 'blocked')"),
    ("build-passes-zero", ["build", "--out", "{work}/t.parquet", "--passes", "0"], "protocol.passes"),
    ("build-samples-zero", ["build", "--out", "{work}/t.parquet", "--samples", "0"], "protocol.samples"),
    ("build-pass-ms-nan", ["build", "--out", "{work}/t.parquet", "--pass-ms", "nan"], "protocol.pass_ms"),
    ("build-tolerance-zero", ["build", "--out", "{work}/t.parquet", "--tolerance", "0"], "protocol.tolerance"),
    ("build-extra-passes-negative", ["build", "--out", "{work}/t.parquet", "--extra-passes", "-1"],
     "protocol.extra_passes"),
    ("build-quiet-passes-negative", ["build", "--out", "{work}/t.parquet", "--quiet-passes", "-1"],
     "protocol.quiet_passes"),
    ("build-settle-retries-huge", ["build", "--out", "{work}/t.parquet", "--settle-retries", "11"],
     "protocol.settle_retries"),
    ("build-reference-networks-huge", ["build", "--out", "{work}/t.parquet", "--reference-networks", "99"],
     "protocol.reference_networks"),
    ("build-stat-unknown", ["build", "--out", "{work}/t.parquet", "--stat", "mode"], "invalid choice: 'mode'"),
    ("build-harness-unknown", ["build", "--out", "{work}/t.parquet", "--harness", "inside"], "invalid choice"),
    ("build-fill-unknown", ["build", "--out", "{work}/t.parquet", "--fill", "guess"], "invalid choice: 'guess'"),
    ("build-rotation-negative", ["build", "--out", "{work}/t.parquet", "--rotation-mb", "-1"], "rotation_mb"),
    ("build-cover-zero", ["build", "--out", "{work}/t.parquet", "--cover", "0"], "--cover: must be from 1"),
    ("build-max-networks-zero", ["build", "--out", "{work}/t.parquet", "--max-networks", "0"], "--max-networks"),
    ("build-calibrate-networks-negative", ["build", "--out", "{work}/t.parquet", "--calibrate-networks", "-1"],
     "--calibrate-networks"),
    ("build-num-classes-zero", ["build", "--out", "{work}/t.parquet", "--num-classes", "0"],
     "argument --num-classes: must be from 1"),
    ("build-seed-negative", ["build", "--out", "{work}/t.parquet", "--seed", "-1"], "argument --seed"),
    ("build-num-networks-negative", ["build", "--out", "{work}/t.parquet", "--num-networks", "-1"],
     "argument --num-networks"),
    ("build-space-unknown", ["build", "--out", "{work}/t.parquet", "--space", "huge"], "unknown preset 'huge'"),
    ("build-backend-unknown", ["build", "--out", "{work}/t.parquet", "--backend", "gpu9"], "unknown backend 'gpu9'"),
    ("build-form-unknown", ["build", "--out", "{work}/t.parquet", "--form", "folded"], "invalid choice"),
    # validate
    ("validate-num-archs-negative", ["validate", "--lut", "{inp}/tiny.parquet", "--num-archs", "-1"],
     "--num-archs: must be from 0 to 100000"),
    ("validate-fraction-two", ["validate", "--lut", "{inp}/tiny.parquet", "--calibrate-fraction", "2"],
     "argument --calibrate-fraction"),
    ("validate-fraction-nan", ["validate", "--lut", "{inp}/tiny.parquet", "--calibrate-fraction", "nan"],
     "argument --calibrate-fraction"),
    ("validate-seed-negative", ["validate", "--lut", "{inp}/tiny.parquet", "--seed", "-1"], "argument --seed"),
    ("validate-passes-zero", ["validate", "--lut", "{inp}/tiny.parquet", "--passes", "0"], "protocol.passes"),
    ("validate-lut-binary", ["validate", "--lut", "{inp}/binary.bin"], "lut: {inp}/binary.bin is not a readable"),
    ("validate-lut-missing", ["validate", "--lut", "{work}/none.parquet"], "lut: no such file"),
    ("validate-lut-truncated", ["validate", "--lut", "{inp}/truncated.parquet"], "is not a readable Parquet file"),
    ("validate-lut-foreign", ["validate", "--lut", "{inp}/foreign.parquet"], "is not a slimnas latency table"),
    ("validate-lut-future", ["validate", "--lut", "{inp}/future.parquet"], "has format version 99"),
    ("validate-lut-folder", ["validate", "--lut", "{inp}/folder"], "lut: no such file"),
    ("validate-against-missing", ["validate", "--lut", "{inp}/tiny.parquet", "--against", "{work}/none.parquet"],
     "no such file"),
    ("validate-out-dir-under-file", ["validate", "--lut", "{inp}/tiny.parquet", "--out-dir", "{inp}/afile/v"],
     "--out-dir: {inp}/afile/v: {inp}/afile is a file, not a folder"),
    ("validate-measurements-binary", ["validate", "--lut", "{inp}/tiny.parquet", "--bundle", "{inp}/folder",
                                      "--measurements", "{inp}/binary.bin", "--out-dir", "{work}/v"],
     "--measurements: {inp}/binary.bin is a binary file, not text"),
    ("validate-measurements-without-bundle", ["validate", "--lut", "{inp}/tiny.parquet", "--measurements",
                                              "{inp}/measurements.json", "--out-dir", "{work}/v"],
     "--bundle: needed with --measurements"),
    # show
    ("show-lut-binary", ["show", "--lut", "{inp}/binary.bin"], "is not a readable Parquet file"),
    ("show-lut-name-too-long", ["show", "--lut", f"{{work}}/{LONG}.parquet"],
     "a name in the path is longer than the file system allows"),
    ("show-arch-binary", ["show", "--lut", "{inp}/tiny.parquet", "--arch", "{inp}/binary.bin"],
     "--arch: {inp}/binary.bin is a binary file, not text"),
    ("show-arch-missing", ["show", "--lut", "{inp}/tiny.parquet", "--arch", "{work}/none.json"],
     "--arch: no such file"),
    ("show-arch-bad-json", ["show", "--lut", "{inp}/tiny.parquet", "--arch", "{inp}/arch-bad.json"],
     "--arch: {inp}/arch-bad.json: not valid JSON"),
    ("show-arch-wide", ["show", "--lut", "{inp}/tiny.parquet", "--arch", "{inp}/arch-wide.json"],
     "latency table has no entry for"),
    ("show-stat-unknown", ["show", "--lut", "{inp}/tiny.parquet", "--stat", "mode"], "stat: expected one of"),
    ("show-preset-unknown", ["show", "--lut", "{inp}/tiny.parquet", "--preset", "l9"], "l9"),
    # import-measurements
    ("import-out-under-file", ["import-measurements", "--bundle", "{inp}/folder", "--measurements",
                               "{inp}/measurements.json", "--out", "{inp}/afile/t.parquet"],
     "--out: {inp}/afile/t.parquet: {inp}/afile is a file, not a folder"),
    ("import-measurements-binary", ["import-measurements", "--bundle", "{inp}/folder", "--measurements",
                                    "{inp}/binary.bin", "--out", "{work}/t.parquet"],
     "--measurements: {inp}/binary.bin is a binary file"),
    ("import-no-manifest", ["import-measurements", "--bundle", "{inp}/folder", "--measurements",
                            "{inp}/measurements.json", "--out", "{work}/t.parquet"], "no manifest.json"),
]


@pytest.mark.parametrize("argv, needle", [c[1:] for c in LUT], ids=[c[0] for c in LUT])
def test_lut_refuses_bad_input_before_any_work(argv, needle, inp, work, capsys):
    argv = ["lut", *[_expand(a, inp, work) for a in argv]]
    if argv[1] == "build":
        flags = {"--space": "tiny", "--backend": "torch-cpu"}
        for flag, value in flags.items():
            if flag not in argv:
                argv += [flag, value]
    refused(argv, _expand(needle, inp, work), capsys, work, inp)


# ---------------------------------------------------------------------------------------------------- arch, space
ARCH = [
    ("arch-binary", ["arch", "--arch", "{inp}/binary.bin"], "--arch: {inp}/binary.bin is a binary file, not text"),
    ("arch-missing", ["arch", "--arch", "{work}/none.json"], "--arch: no such file {work}/none.json"),
    ("arch-folder", ["arch", "--arch", "{inp}/folder"], "--arch: {inp}/folder is a folder, not a file"),
    ("arch-name-too-long", ["arch", "--arch", f"{{work}}/{LONG}.json"], "--arch: "),
    ("arch-under-file", ["arch", "--arch", "{inp}/afile/a.json"], "a part of the path is a file, not a folder"),
    ("arch-latin1", ["arch", "--arch", "{inp}/latin1.yaml"], "is not UTF-8 text"),
    ("arch-bad-json", ["arch", "--arch", "{inp}/arch-bad.json"], "not valid JSON"),
    ("arch-json-list", ["arch", "--arch", "{inp}/arch-list.json"], "expected a mapping, got list"),
    ("arch-bad-width", ["arch", "--arch", "{inp}/arch-widths.json"], "widths[0]: must be a positive multiple of 16"),
    ("arch-bad-img-size", ["arch", "--arch", "{inp}/arch-img.json"], "img_size: must be a positive multiple of 32"),
    ("arch-unknown-field", ["arch", "--arch", "{inp}/arch-extra.json"], "unknown field(s) ['depth']"),
    ("arch-cannot-fit", ["arch", "--arch", "{inp}/arch-huge.json", "--params"], "needs at least"),
    ("arch-num-classes-zero", ["arch", "--preset", "l1", "--params", "--num-classes", "0"],
     "argument --num-classes: must be from 1 to 1000000, got 0"),
    ("arch-num-classes-negative", ["arch", "--preset", "l1", "--params", "--num-classes=-5"], "--num-classes"),
    ("arch-num-classes-text", ["arch", "--preset", "l1", "--num-classes", "many"], "--num-classes: expected an "
                                                                                   "integer"),
    ("arch-preset-unknown", ["arch", "--preset", "l9"], "unknown preset 'l9'"),
    ("arch-space-unknown", ["arch", "--preset", "l1", "--space", "huge"], "unknown preset 'huge'"),
    ("arch-not-in-space", ["arch", "--preset", "l1", "--space", "tiny"], "img_size"),
    ("space-unknown", ["space", "huge"], "unknown preset 'huge'"),
    ("command-unknown", ["nonsense"], "invalid choice"),
]


@pytest.mark.parametrize("argv, needle", [c[1:] for c in ARCH], ids=[c[0] for c in ARCH])
def test_arch_and_space_refuse_bad_input(argv, needle, inp, work, capsys):
    refused([_expand(a, inp, work) for a in argv], _expand(needle, inp, work), capsys, work, inp)


# ---------------------------------------------------------------------------------------------------- ui
UI = [
    ("port-too-large", ["--port", "70000"], "argument --port: must be from 1 to 65535, got 70000"),
    ("port-zero", ["--port", "0"], "argument --port"),
    ("port-negative", ["--port=-1"], "argument --port"),
    ("port-text", ["--port", "http"], "argument --port: expected an integer"),
    ("host-not-here", ["--host", "10.255.255.254", "--port", "{free}"], "--host: 10.255.255.254 is not an address"),
    ("store-under-file", ["--backend-store-uri", "sqlite:///{inp}/afile/mlflow.db"],
     "--backend-store-uri: {inp}/afile/mlflow.db: {inp}/afile is a file, not a folder"),
    ("store-malformed", ["--backend-store-uri", "http://[::1"], "--backend-store-uri: malformed address"),
    ("store-file", ["--backend-store-uri", "./mlruns"], "--backend-store-uri: './mlruns' is a plain file store"),
]


@pytest.mark.parametrize("argv, needle", [c[1:] for c in UI], ids=[c[0] for c in UI])
def test_ui_refuses_bad_ports_hosts_and_stores(argv, needle, inp, work, capsys):
    port = str(free_port())
    argv = ["ui", *[_expand(a, inp, work).replace("{free}", port) for a in argv]]
    refused(argv, _expand(needle, inp, work), capsys, work, inp)


def test_ui_refuses_a_port_in_use(inp, work, capsys):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        refused(["ui", "--port", str(port), "--backend-store-uri", f"sqlite:///{work}/mlflow.db"],
                f"--port: 127.0.0.1:{port} is in use", capsys, inp)


# ---------------------------------------------------------------------------------------------------- train
def _train_config(work: Path, **sections) -> Path:
    from slimnas.testing import tiny_train_config

    path = work / "train.yaml"
    path.write_text(yaml.safe_dump(tiny_train_config(work / "runs", "bad", **sections)))
    return path


TRAIN = [
    ("out-dir-under-file", {"run": {"out_dir": "{inp}/afile/runs"}}, "run.out_dir: {inp}/afile/runs: {inp}/afile "
                                                                     "is a file, not a folder"),
    ("out-dir-name-too-long", {"run": {"out_dir": f"{{work}}/{LONG}"}}, "run.out_dir: "),
    ("batch-huge", {"data": {"batch_size": 10**12}}, "data.batch_size: Input should be less than or equal to 65536"),
    ("epochs-zero", {"run": {"epochs": 0}}, "run.epochs"),
    ("lr-nan", {"optim": {"lr": float("nan")}}, "optim.lr: Input should be a finite number"),
    ("seed-huge", {"run": {"seed": 2**40}}, "run.seed"),
    ("name-too-long", {"run": {"name": LONG}}, "run.name: Value error"),
    ("workers-huge", {"data": {"workers": 100000}}, "data.workers"),
    ("distributed-unreachable", {"distributed": {"enabled": True, "address": "127.0.0.1:1"}},
     "distributed.address: cannot reach 127.0.0.1:1"),
    ("distributed-workers-zero", {"distributed": {"enabled": True, "num_workers": 0}}, "distributed.num_workers"),
    ("mlflow-unreachable", {"tracking": {"enabled": True, "tracking_uri": "http://127.0.0.1:1"}},
     "tracking.tracking_uri: cannot reach the MLflow server"),
]


@pytest.mark.parametrize("sections, needle", [c[1:] for c in TRAIN], ids=[c[0] for c in TRAIN])
@pytest.mark.parametrize("command", ["train-supernet"])
def test_train_refuses_bad_fields_before_training(command, sections, needle, inp, work, capsys):
    sections = json.loads(_expand(json.dumps(sections), inp, work))
    config = _train_config(work, **sections)
    line = refused([command, "--config", str(config)], _expand(needle, inp, work), capsys, work, inp)
    assert line.startswith(f"slimnas {command}: error: ")
    assert not (work / "runs").exists()


@pytest.mark.parametrize("name, needle", [("binary.bin", "is a binary file"), ("bomb.yaml", "expands to more than"),
                                          ("latin1.yaml", "is not UTF-8 text")])
@pytest.mark.parametrize("command", ["train-supernet", "train-arch"])
def test_train_refuses_bad_config_files(command, name, needle, inp, work, capsys):
    refused([command, "--config", str(inp / name)], f"config: {inp / name} {needle}", capsys, work, inp)


# ---------------------------------------------------------------------------------------------------- submit, jobs
JOBS = [
    ("submit-address-malformed", ["submit", "--config", "{config}", "--address", "http://[::1"],
     "--address: malformed address"),
    ("submit-address-scheme", ["submit", "--config", "{config}", "--address", "ftp://head:8265"],
     "--address: expected http://HOST:PORT"),
    ("submit-address-port-range", ["submit", "--config", "{config}", "--address", "http://head:99999"],
     "--address: malformed address"),
    ("submit-address-unreachable", ["submit", "--config", "{config}", "--address", "127.0.0.1:1"],
     "--address: cannot reach 127.0.0.1:1"),
    ("submit-config-binary", ["submit", "--config", "{inp}/binary.bin", "--address", "127.0.0.1:1"],
     "config: {inp}/binary.bin is a binary file"),
    ("submit-config-bomb", ["submit", "--config", "{inp}/bomb.yaml", "--address", "127.0.0.1:1"], "an alias bomb"),
    ("jobs-status-address-malformed", ["jobs", "status", "raysubmit_1", "--address", "http://[::1"],
     "--address: malformed address"),
    ("jobs-logs-no-address", ["jobs", "logs", "raysubmit_1"], "--address: give the head's dashboard address"),
    ("jobs-stop-address-control-char", ["jobs", "stop", "raysubmit_1", "--address", "http://head\x07:8265"],
     "--address"),
]


@pytest.mark.parametrize("argv, needle", [c[1:] for c in JOBS], ids=[c[0] for c in JOBS])
def test_submit_and_jobs_refuse_bad_addresses_and_configs(argv, needle, inp, work, capsys):
    config = work / "pipeline.yaml"
    config.write_text(yaml.safe_dump(_pipeline(work, [])))
    argv = [_expand(a, inp, work).replace("{config}", str(config)) for a in argv]
    refused(argv, _expand(needle, inp, work), capsys, work, inp)


def test_a_binary_token_file_is_named(inp, work, capsys, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(inp / "binary.bin"))
    with socket.socket() as server:  # something answers on the port, so the token is read next
        server.bind(("127.0.0.1", 0))
        server.listen(4)
        port = server.getsockname()[1]
        refused(["jobs", "status", "raysubmit_1", "--address", f"127.0.0.1:{port}"],
                f"RAY_AUTH_TOKEN_PATH: {inp / 'binary.bin'} is a binary file, not text", capsys, work, inp)


# ---------------------------------------------------------------------------------------------------- the guard
@pytest.fixture
def unwritable_folder(work):
    """A folder this process may not write in: mode 0500 for a user; for root, which ignores permission bits, an
    immutable folder (``chattr +i``, refused to root too)."""
    folder = work / "locked"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o500)
        yield folder
        folder.chmod(0o700)
        return
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("running as root on a file system without chattr +i: no folder is unwritable to root here")
    yield folder
    subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_a_folder_that_cannot_be_written_is_one_line(unwritable_folder, inp, capsys):
    refused(["lut", "build", "--space", "tiny", "--backend", "torch-cpu", "--out",
             str(unwritable_folder / "t.parquet")], f"--out: {unwritable_folder / 't.parquet'}: permission denied",
            capsys, inp)
    refused(["arch", "--arch", str(inp / "binary.bin")], "is a binary file", capsys, inp)  # control: still checked


@pytest.fixture
def full_disk(work):
    """A 64 KiB file system (tmpfs, mounted as root); skipped where it cannot be mounted."""
    mount = work / "full"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("mounting a 64 KiB tmpfs needs root (CI runs as root)")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_no_space_left_is_one_line_before_any_work(full_disk, inp, capsys):
    line = refused(["lut", "build", "--space", "tiny", "--backend", "torch-cpu", "--out", str(full_disk / "t.parquet")],
                   "no space left on the device", capsys, inp, full_disk)
    assert str(full_disk) in line


CASE_COUNTS = {
    "run: config fields": len(RUN_FIELDS), "run: config files": len(RUN_FILES),
    "run/quickstart: arguments": len(RUN_ARGS), "search: config fields": len(SEARCH_FIELDS),
    "search/sweep: arguments": len(SEARCH_ARGS), "lut build/validate/show/import-measurements": len(LUT),
    "arch/space": len(ARCH), "ui": len(UI) + 1, "train-supernet/train-arch": len(TRAIN) + 6,
    "submit/jobs": len(JOBS) + 1, "unwritable folder, full disk": 2,
}



# ---------------------------------------------------------------------------------------------------- fail fast
def test_an_address_that_never_answers_fails_in_seconds_naming_it(inp, work, capsys):
    """A blackholed Ray or MLflow address (a port whose listen queue is full: connections hang) is refused by
    ``slimnas search`` within the check's timeout, before anything starts, instead of hanging."""
    import time

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        host, port = server.getsockname()
        fillers = []
        try:
            for _ in range(8):  # fill the accept queue: later connections get no answer
                filler = socket.socket()
                filler.setblocking(False)
                filler.connect_ex((host, port))
                fillers.append(filler)
            time.sleep(0.2)
            for sets, needle in (([f"ray.address={host}:{port}"], f"ray.address: cannot reach {host}:{port} "
                                                                   "(timed out)"),
                                 (["tracking.enabled=true", f"tracking.tracking_uri=http://{host}:{port}"],
                                  f"tracking.tracking_uri: cannot reach the MLflow server at http://{host}:{port}")):
                config = _search_config(work, inp, sets)
                started = time.monotonic()
                refused(["search", "--config", str(config)], needle, capsys, work, inp)
                assert time.monotonic() - started < 15
        finally:
            for filler in fillers:
                filler.close()


def test_a_real_process_prints_one_line_and_no_traceback(inp, tmp_path):
    """The installed entry point, in a new process: the issue's cases that printed tracebacks (or exit 0)."""
    import subprocess
    import sys

    cases = [(["ui", "--port", "70000"], "argument --port: must be from 1 to 65535, got 70000"),
             (["run", "--config", str(inp / "bomb.yaml")], "an alias bomb"),
             (["lut", "build", "--space", "tiny", "--backend", "torch-cpu", "--out", str(inp / "afile" / "t.parquet")],
              "is a file, not a folder"),
             (["arch", "--arch", str(tmp_path / LONG)], "a name in the path is longer than the file system allows")]
    for argv, needle in cases:
        proc = subprocess.run([sys.executable, "-m", "slimnas.platform.cli", *argv], capture_output=True, text=True,
                              cwd=tmp_path, timeout=120)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and needle in lines[0], (argv, proc.stderr[-2000:])
        assert "Traceback" not in proc.stderr and len(lines[0]) < 400
    assert list(tmp_path.iterdir()) == []
