"""Done-when of the plug-in interfaces: an outside package adds a space family, a latency backend and a search method,
each in one module, declared as entry points; a pipeline job runs all three end to end with no edit to slimnas.

The package is ``tests/plugins/site/slimnas_toyplugin`` with its ``slimnas_toyplugin-0.1.dist-info`` (what pip leaves
in site-packages): ``space.py`` (the ``toynet`` family: two stages, kinds ``conv``/``mix``, its own parts, networks and
supernet), ``backend.py`` (``toy-npu``: deterministic, times nothing real) and ``method.py`` (``cheapest-first``). The
job runs as a user runs it: ``slimnas run --config`` in a new process, with the package on ``PYTHONPATH`` (so Ray's
workers see it too), a real Ray, a real MLflow store.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from slimnas.latency import LatencyTable
from slimnas.search_spaces import Arch
from slimnas.winners import load_winner

CONFIG = """\
name: toy
output: {out}
threads: 1
train:
  space: toy-digits          # a preset of the toynet family, found through the entry point
  data: {{kind: digits, batch_size: 32, calib_images: 64}}
  run: {{epochs: 2, max_steps_per_epoch: 4, log_every: 2}}
latency:
  backend: toy-npu           # the plug-in backend, with its own setting
  speed: 2
  rotation_mb: 0
  calibrate_networks: 6
  protocol: {{passes: 2, samples: 2, pass_ms: 0, warmup_ms: 0, reference_networks: 1}}
  validate: {{num_archs: 4}}
search:
  methods: [slimming, cheapest-first]    # a built-in and the plug-in method
  targets_relative: [0.9, 0.7]
  eval_images: 64
  max_extra_steps: 1
ray: {{num_cpus: 2, object_store_mb: 128}}
tracking: {{experiment: toy-plugins, tracking_uri: "sqlite:///{db}"}}
"""


@pytest.mark.slow
def test_a_pipeline_runs_a_plugin_space_backend_and_method_end_to_end(tmp_path, toy_plugin):
    out, db = tmp_path / "runs" / "toy", tmp_path / "mlflow.db"
    config = tmp_path / "toy.yaml"
    config.write_text(CONFIG.format(out=out, db=db))
    env = {**os.environ, "RAY_ADDRESS": ""}
    proc = subprocess.run([sys.executable, "-m", "slimnas.platform.cli", "run", "--config", str(config)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    # train: the toynet supernet
    record = json.loads((out / "pipeline.json").read_text())
    assert set(record["stages"]) >= {"train", "table", "search"}
    # table: every part of the toynet space, timed by the toy NPU (deterministic: validation is exact)
    table = LatencyTable.load(next((out / "latency").glob("toy-npu-*.parquet")))
    assert table.meta.backend == "toy-npu" and table.meta.options["speed"] == 2.0
    assert table.space.family == "toynet" and not table.missing_for_space()
    assert {p.kind for p in table.entries} == {"stem", "conv", "down", "mix", "head"}
    # search: both methods answered both targets with toynet archs, each measured on the device by the toy NPU
    results = json.loads((out / "search" / "results.json").read_text())
    rows = results["results"]
    assert {r["method"] for r in rows} == {"slimming", "cheapest-first"} and len(rows) == 4
    for row in rows:
        arch = Arch.from_dict(row["arch"])
        assert arch.family == "toynet" and table.space.contains(arch)
        assert row["meets_target"] is True and 0 < row["top1"] <= 1
        # the winner saved as evaluated, rebuilt from its card by the plug-in family
        model, card = load_winner(out / "search" / "winners" / f"{row['method']}@{row['target_ms']:g}ms")
        assert card.family == "toynet" and card.arch == arch and card.top1 == row["top1"]
        assert type(model).__name__ == "ToyNet"
    # MLflow: the pipeline's parent run with the search's child runs, one per (method, target)
    client = MlflowClient(f"sqlite:///{db}")
    experiment = client.get_experiment_by_name("toy-plugins")
    runs = client.search_runs([experiment.experiment_id])
    methods = {r.data.params.get("method") for r in runs}
    assert {"slimming", "cheapest-first"} <= methods, methods
