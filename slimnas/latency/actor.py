"""The latency service as a named Ray actor (the only module of :mod:`slimnas.latency` that imports ray).

``start_latency_actor(tables)`` starts (or finds) the actor ``lut`` in namespace ``slimnas``; Tune trials and Train
workers reach it with :class:`LatencyClient` (``ray.get_actor`` by name). The actor restarts after its node is lost
(``max_restarts=-1``) and reloads its tables from its constructor arguments (Parquet bytes), wherever it lands; calls
made while it restarts are retried (``max_task_retries=-1``). Each call is a round trip (~1 ms): send batches.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import ray

from slimnas.search_spaces import Arch

from .service import LatencyService, TableSource
from .table import LatencyTable

__all__ = ["start_latency_actor", "get_latency_actor", "LatencyClient", "ACTOR_NAME", "NAMESPACE"]

ACTOR_NAME = "lut"
NAMESPACE = "slimnas"


def _as_bytes(source: TableSource) -> bytes:
    if isinstance(source, (bytes, bytearray)):
        return bytes(source)
    table = source if isinstance(source, LatencyTable) else LatencyTable.load(source)
    return table.to_bytes()


def start_latency_actor(
    tables: Mapping[str, TableSource],
    name: str = ACTOR_NAME,
    namespace: str = NAMESPACE,
    detached: bool = True,
    num_cpus: float = 0.0,
    resources: Mapping[str, float] | None = None,
    label_selector: Mapping[str, str] | None = None,
) -> Any:
    """Start the named latency actor holding ``tables`` (name -> path, table or Parquet bytes), or return the
    running one. ``resources``/``label_selector`` place it (e.g. on the V100 evaluation nodes)."""
    payload = {key: _as_bytes(source) for key, source in tables.items()}
    options: dict[str, Any] = dict(name=name, namespace=namespace, get_if_exists=True, max_restarts=-1,
                                   max_task_retries=-1, num_cpus=num_cpus)
    if detached:
        options["lifetime"] = "detached"
    if resources:
        options["resources"] = dict(resources)
    if label_selector:
        options["label_selector"] = dict(label_selector)
    actor = ray.remote(LatencyService).options(**options).remote(payload)
    ray.get(actor.ping.remote())
    return actor


def get_latency_actor(name: str = ACTOR_NAME, namespace: str = NAMESPACE) -> Any:
    return ray.get_actor(name, namespace=namespace)


class LatencyClient:
    """``predict_many(archs) -> ndarray`` through the actor (one round trip per call: batch your queries).

    A client pickles as a description of the service (actor name, namespace, table), never as the live actor handle:
    a handle does not survive its Ray session (unpickling one in a new driver fails inside Ray), while a description
    reconnects, by name, on first use after unpickling -- to the service of whatever session is running then (a
    restored search job starts its own first, under the same name). Give ``name`` when passing ``actor``, so that
    the description names that actor.
    """

    def __init__(self, actor: Any = None, table: str | None = None, name: str = ACTOR_NAME,
                 namespace: str = NAMESPACE) -> None:
        self.table, self.name, self.namespace = table, name, namespace
        self._actor = actor if actor is not None else get_latency_actor(name, namespace)

    @property
    def actor(self) -> Any:
        """The live actor handle (looked up by name after unpickling)."""
        if self._actor is None:
            self._actor = get_latency_actor(self.name, self.namespace)
        return self._actor

    def __getstate__(self) -> dict[str, Any]:
        return {"table": self.table, "name": self.name, "namespace": self.namespace}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.table, self.name, self.namespace = state["table"], state["name"], state["namespace"]
        self._actor = None

    def predict_many(self, archs: Sequence[Arch]) -> np.ndarray:
        archs = list(archs)
        if not archs:
            return np.zeros(0)
        feats = archs[0].space_family.features(archs)
        return ray.get(self.actor.predict.remote(feats, self.table))

    def predict(self, arch: Arch) -> float:
        return float(self.predict_many([arch])[0])
