import pickle
import random

import numpy as np
import pytest
import ray
from ray.cluster_utils import Cluster

from slimnas.latency import MissingEntryError
from slimnas.latency.actor import LatencyClient, start_latency_actor
from slimnas.latency.service import LatencyService
from slimnas.search_spaces.efficientformer import Arch, SearchSpace

TINY = SearchSpace.preset("tiny")
ARCHS = [TINY.sample(random.Random(0)) for _ in range(50)]


def test_service_in_process(tiny_table):
    service = LatencyService({"tiny": tiny_table.to_bytes()})


    np.testing.assert_allclose(service.predict(ARCHS[0].space_family.features(ARCHS)), tiny_table.predict_many(ARCHS))
    assert service.names() == ["tiny"] and service.meta()["backend"] == "torch-cpu"


def test_actor_round_trip_in_local_ray(tiny_table):
    ray.init(num_cpus=1, object_store_memory=80 * 1024**2, include_dashboard=False, log_to_driver=False)
    try:
        actor = start_latency_actor({"tiny": tiny_table}, name="lut-test", detached=False)
        client = LatencyClient(name="lut-test")  # found by name, as Tune trials find it
        np.testing.assert_allclose(client.predict_many(ARCHS), tiny_table.predict_many(ARCHS))
        assert client.predict(ARCHS[0]) == pytest.approx(tiny_table.predict(ARCHS[0]))
        assert start_latency_actor({"tiny": tiny_table}, name="lut-test", detached=False) == actor  # get_if_exists
        wide = Arch(64, (32, 64, 96, 256), TINY.max_arch().blocks)
        with pytest.raises(MissingEntryError, match=r"downsample\(stage 4, 96->256\)"):
            client.predict_many([wide])
        saved = pickle.dumps(LatencyClient(actor, name="lut-test"))  # a description, not the live handle
    finally:
        ray.shutdown()
    # a new Ray session with its own service under the same name (a restored job): the saved client reconnects
    ray.init(num_cpus=1, object_store_memory=80 * 1024**2, include_dashboard=False, log_to_driver=False)
    try:
        service = start_latency_actor({"tiny": tiny_table}, name="lut-test", detached=False)  # kept alive by its handle
        np.testing.assert_allclose(pickle.loads(saved).predict_many(ARCHS), tiny_table.predict_many(ARCHS))
        del service
    finally:
        ray.shutdown()


def test_actor_restarts_on_another_node_and_reloads_its_tables(tiny_table):
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": 80 * 1024**2})
    first = cluster.add_node(num_cpus=1, resources={"eval_node": 1}, object_store_memory=80 * 1024**2)
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        actor = start_latency_actor({"tiny": tiny_table}, name="lut-ha", detached=False,
                                    resources={"eval_node": 0.01})
        client = LatencyClient(actor)
        before_pid = ray.get(actor.ping.remote())["pid"]
        before = client.predict_many(ARCHS)
        cluster.remove_node(first)
        cluster.add_node(num_cpus=1, resources={"eval_node": 1}, object_store_memory=80 * 1024**2)
        after = client.predict_many(ARCHS)  # retried until the actor is back
        assert ray.get(actor.ping.remote())["pid"] != before_pid
        np.testing.assert_allclose(after, before)
    finally:
        ray.shutdown()
        cluster.shutdown()
