"""One model's breakdown on one backend: measure the whole network under the protocol, then profile it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from slimnas._threads import torch_threads
from slimnas.errors import InputError, shorten
from slimnas.latency.protocol import Protocol

from .records import ModelProfile, aggregate
from .sources import ModelSource, build_source

__all__ = ["PROFILED_BACKENDS", "profile_model"]

#: The backends ``slimnas profile`` can break down (each has a profiler of its own).
PROFILED_BACKENDS = ("torch-cpu", "torch-cuda", "onnxruntime")


@contextlib.contextmanager
def _onnx_errors(name: str) -> Iterator[None]:
    """A model the ONNX exporter or ONNX Runtime refuses: one line naming the model (the exporter's own message can
    be pages long)."""
    try:
        yield
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - any export or session failure is this model's, told in one line
        first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
        raise InputError(f"MODEL {name!r}: cannot run on onnxruntime ({type(exc).__name__}: {shorten(first, 300)})"
                         ) from None


def profile_model(source: ModelSource, backend: Any, *, runs: int, protocol: Protocol, batch: int = 1,
                  img_size: int | None = None, form: str | None = None) -> ModelProfile:
    """Measure ``source``'s network end to end on ``backend`` (no profiler, the protocol of the latency tables), then
    profile ``runs`` calls of it with the backend's profiler and aggregate the accepted calls."""
    form = form or backend.default_form
    model, example, size = build_source(source, form, batch, img_size)
    if backend.name == "onnxruntime":
        from .ort_profiler import profile_session

        with _onnx_errors(source.name):
            measured = backend.measure(model, example, protocol)
            profiled = profile_session(backend, model, example, runs, protocol)
        notes = ["operator times are ONNX Runtime's node kernel times; its optimizer's fused nodes (Conv+BN, "
                 "MatMul+Add, GELU, LayerNorm) count under their fused type; the session's time between kernels "
                 "(mostly the profiler's own recording) is in no category (framework: none)"]
    else:
        from .torch_profiler import profile_calls

        cuda = backend.name == "torch-cuda"
        run = backend.prepare(model, example)
        sync = None
        if cuda:
            import torch

            def sync() -> None:
                torch.cuda.synchronize(backend.device)
        measured = backend.measure(model, example, protocol)
        with torch_threads(backend.threads if not cuda else None):
            profiled = profile_calls(model, run, runs, protocol, cuda=cuda, sync=sync)
        if cuda:
            notes = ["operator times are the kernel times of the outermost operators; the time the device waits for "
                     "the host (Python, launches) is in no category"]
        else:
            notes = ["operator times are inclusive CPU times of the outermost operators; framework: each unit's time "
                     "between its operators on the profiled call's timeline; the profiler's cost (per recorded event "
                     "and per unit scope, calibrated on a separate network) is subtracted from both"]
    low, high = measured.pass_range()
    return aggregate(profiled, model=source.name, source=source.kind, backend=backend.name,
                     device=backend.device_name(), threads=backend.threads, batch=batch, img_size=size,
                     form=form if source.kind != "timm" else "eager", measured_ms=measured.value,
                     measured_spread=high / low - 1.0 if low > 0 else 0.0,
                     statistic=protocol.statistic, notes=notes)
