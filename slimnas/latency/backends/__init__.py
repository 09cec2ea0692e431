"""Latency backends: ``torch-cpu``, ``torch-cuda``, ``onnxruntime`` (CPU or CUDA provider) and ``coreml``.

``get_backend(name, **settings)`` builds one; a name it does not know raises ``ValueError`` naming the choices. A
backend that cannot run here says why in one line (``backend.unavailable_reason()``; ``check()`` raises
:class:`BackendUnavailable`), never an ImportError trace.
"""

from __future__ import annotations

from typing import Any

from ._alloc import ALLOCATORS, allocator_state, tune_allocator
from ._base import Backend, BackendUnavailable, cpu_name
from ._coreml import COMPUTE_UNITS, CoreMLBackend
from ._onnx import ONNXRuntimeBackend, export_onnx
from ._torch import TorchCPUBackend, TorchCUDABackend

__all__ = [
    "Backend", "BackendUnavailable", "BACKENDS", "get_backend", "cpu_name", "export_onnx", "COMPUTE_UNITS",
    "ALLOCATORS", "allocator_state", "tune_allocator",
    "TorchCPUBackend", "TorchCUDABackend", "ONNXRuntimeBackend", "CoreMLBackend",
]

BACKENDS: dict[str, type[Backend]] = {
    "torch-cpu": TorchCPUBackend,
    "torch-cuda": TorchCUDABackend,
    "onnxruntime": ONNXRuntimeBackend,
    "coreml": CoreMLBackend,
}


def get_backend(name: str, **settings: Any) -> Backend:
    """A backend by name; ``settings`` are its constructor arguments (``threads``, ``dtype``, ``repeats``, ...)."""
    if name not in BACKENDS:
        raise ValueError(f"backend: unknown backend {name!r} (expected one of {sorted(BACKENDS)})")
    return BACKENDS[name](**{k: v for k, v in settings.items() if v is not None})
