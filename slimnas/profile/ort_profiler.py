"""Operator-level profiles on ONNX Runtime, with its own profiler (``SessionOptions.enable_profiling``).

The network is exported with slimnas's exporter (:func:`slimnas.latency.backends.export_onnx`, through the
``onnxruntime`` backend's cache: the very graph its measurement timed) and run in a session built like the backend's
(:meth:`ONNXRuntimeBackend.session`, ``ORT_ENABLE_ALL``) with profiling on. Every node's ``kernel_time`` event of a
profiled call is one operator sample; calls are told apart by the session's ``model_run`` events, and the first
(warm-up) calls are dropped.

Where a node ran: the exporter names nodes after the module path (``/stages/stages.0/blocks/blocks.1/mlp/fc1/MatMul``),
which :func:`module_of_node` maps back to a qualified module name, and so to a unit (:mod:`.structure`). Nodes that
ONNX Runtime's optimizer created without a path (``Gelu`` from a fused GELU, ``gemm_input_reshape``) belong to the unit
of the node before them in execution order. A ``MatMul`` inside an ``nn.Linear`` is a linear layer, not attention.

What ONNX Runtime's profiler covers: its ``model_run`` event spans a session run inside the runtime (the executor,
input binding, output fetch; ``ProfiledCalls.walls``), its node events only the kernels (``*_kernel_time``). The
categories are the kernels; the executor's time between them gets no ``framework`` row here, because most of it is
the profiler's own recording (a few microseconds per node): estimated on a calibration graph, the per-node cost
(about 6 us on the development CPU) exceeded the whole gap of deit_tiny's calls (the row came out negative), so the
estimate does not transfer between graphs. The Python binding around ``session.run`` is in no event either. Compare
``profiled_ms`` (kernels) with ``profiled_wall_ms`` (model_run) and ``unprofiled_ms`` for what is outside the nodes.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Mapping
from typing import Any

from slimnas.latency.protocol import Protocol, assess

from .categories import is_known_onnx, onnx_category
from .records import OpSample, ProfiledCalls
from .structure import TOP_LEVEL, Unit, model_units, unit_of_module

__all__ = ["profile_session", "module_of_node"]


def module_of_node(node: str, modules: Mapping[str, Any]) -> str | None:
    """The qualified name of the deepest module of ``modules`` an exported node's name points into, ``""`` for a
    node of the top-level forward, ``None`` for a node without a path (created by the optimizer)."""
    if not node.startswith("/"):
        return None
    qualified = ""
    for segment in node.strip("/").split("/")[:-1]:
        found = _resolve(qualified, segment, modules)
        if found is None:
            break
        qualified = found
    return qualified


def _resolve(qualified: str, segment: str, modules: Mapping[str, Any]) -> str | None:
    """The module one more path segment names below ``qualified``: an attribute name (``attn``) or a dotted name that
    repeats the end of ``qualified`` (``blocks.0`` below ``blocks``, ``blocks.0.1`` below ``blocks.0``)."""
    comps = qualified.split(".") if qualified else []
    pieces = segment.split(".")
    for k in range(len(pieces)):
        if k and (k > len(comps) or comps[-k:] != pieces[:k]):
            continue
        candidate = ".".join(comps + pieces[k:])
        if candidate in modules:
            return candidate
    return None


def profile_session(backend: Any, model: Any, example: Any, runs: int, protocol: Protocol, warmup: int = 3,
                    ) -> ProfiledCalls:
    """Profile ``runs`` calls of ``model`` on ONNX Runtime (after ``warmup`` calls), each right after a call of the
    same graph in a session without profiling, timed alone."""
    from torch import nn

    from slimnas.latency.backends import export_onnx

    units = model_units(model)
    modules = dict(model.named_modules())
    exported = getattr(backend, "exported", None)  # the backend's own, cached: the graph its measurement timed
    data = exported(model, example) if exported is not None else export_onnx(model, example)
    plain_session = backend.session(data)
    plain: list[float] = []
    with tempfile.TemporaryDirectory(prefix="slimnas-ort-") as tmp:
        session = backend.session(data, profile_prefix=os.path.join(tmp, "ort"))
        feed = {session.get_inputs()[0].name: example.detach().cpu().numpy()}
        for i in range(warmup + runs):
            t0 = time.perf_counter()
            plain_session.run(None, feed)
            if i >= warmup:
                plain.append((time.perf_counter() - t0) * 1e3)
            session.run(None, feed)
        with open(session.end_profiling()) as handle:
            events = json.load(handle)
    spans = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("cat") == "Session"
                   and e.get("name") == "model_run")[warmup:]
    nodes = sorted((e for e in events if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")),
                   key=lambda e: e["ts"])
    samples: list[list[OpSample]] = [[] for _ in spans]
    last: dict[int, Unit] = {}
    pending: dict[int, list[tuple[str, str, float]]] = {}
    for event in nodes:
        call = next((i for i, (a, b) in enumerate(spans) if a <= event["ts"] <= b), None)
        if call is None:
            continue
        node = event["name"][:-len("_kernel_time")]
        op = str(event.get("args", {}).get("op_name", node))
        where = module_of_node(node, modules)
        if where is None:  # an optimizer-made node: the unit of the node before it
            if call in last:
                unit = last[call]
            else:
                pending.setdefault(call, []).append((node, op, event["dur"] / 1e3))
                continue
            in_linear = False
        else:
            unit = unit_of_module(where, units) if where else TOP_LEVEL
            in_linear = isinstance(modules.get(where), nn.Linear)
            last[call] = unit
            for _node, p_op, p_ms in pending.pop(call, []):
                samples[call].append(OpSample(p_op, onnx_category(p_op, unit.kind == "stem"), unit, p_ms,
                                              is_known_onnx(p_op)))
        samples[call].append(OpSample(op, onnx_category(op, unit.kind == "stem", in_linear), unit,
                                      event["dur"] / 1e3, is_known_onnx(op)))
    for call, rest in pending.items():
        for _, op, ms in rest:
            samples[call].append(OpSample(op, onnx_category(op), TOP_LEVEL, ms, is_known_onnx(op)))
    walls = [(b - a) / 1e3 for a, b in spans]
    totals = [sum(s.ms for s in call) or 1e-9 for call in samples]
    verdict = assess([[t] for t in totals], protocol) if totals else None
    kept = list(verdict.accepted) if verdict else []
    return ProfiledCalls(samples, kept, walls, plain[-len(samples):] if samples else [], units)
