"""``ray_cluster.yaml`` passes Ray's own cluster-launcher validation and provides what the ImageNet config asks for."""

import copy
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from slimnas.platform.pipeline.config import load_pipeline

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cluster():
    return yaml.safe_load((ROOT / "ray_cluster.yaml").read_text())


def test_ray_validates_the_cluster_config(cluster):
    prepared = prepare_config(copy.deepcopy(cluster))
    validate_config(prepared)
    types = prepared["available_node_types"]
    assert prepared["head_node_type"] == "head" and set(types) == {"head", "a100_train", "v100_eval"}
    assert types["a100_train"]["node_config"]["InstanceType"].startswith("p4d")  # AWS: A100
    assert types["v100_eval"]["node_config"]["InstanceType"].startswith("p3")  # AWS: V100
    setup = " ".join(prepared["setup_commands"])
    assert "pip install" in setup and "~/slimnas" in setup and prepared["file_mounts"]["~/slimnas"] == "."
    starts = prepared["head_start_ray_commands"] + prepared["worker_start_ray_commands"]
    assert all("RAY_AUTH_MODE=token" in c for c in starts if "ray start" in c)  # token auth stays on
    assert "--dashboard-host=127.0.0.1" in " ".join(prepared["head_start_ray_commands"])


def test_the_validator_catches_mistakes(cluster):
    broken = copy.deepcopy(cluster)
    broken["available_node_types"]["v100_eval"]["resources"]["GPU"] = 0.5  # resources must be integers
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(broken))
    broken = copy.deepcopy(cluster)
    broken["available_node_types"]["a100_train"]["labels"] = {"gpu-type": 100}  # labels are strings
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(broken))


def test_the_imagenet_config_places_work_on_the_cluster_node_types(cluster):
    cfg = load_pipeline(ROOT / "configs" / "imagenet-l7.yaml")
    types = cluster["available_node_types"]
    a100, v100 = types["a100_train"]["resources"], types["v100_eval"]["resources"]
    d = cfg.train.distributed
    assert f"accelerator_type:{d.accelerator_type}" in a100 and d.use_gpu
    assert d.num_workers <= a100["GPU"] * types["a100_train"]["max_workers"]
    assert d.cpus_per_worker * a100["GPU"] <= a100["CPU"]
    for resources in (cfg.latency.resources, cfg.ray.latency_resources):
        assert all(k in v100 for k in resources if k not in ("CPU", "GPU"))
    assert cfg.ray.gpus_per_trial <= v100["GPU"] and cfg.ray.cpus_per_trial * v100["GPU"] <= v100["CPU"]
