"""Latency backends: ``torch-cpu``, ``torch-cuda``, ``onnxruntime`` (CPU or CUDA provider) and ``coreml``, and any
backend an outside package or a test adds.

A backend is a :class:`Backend` subclass that declares its settings as a pydantic model (its ``Settings``); it is
known by name through :data:`slimnas.registry.BACKENDS` (re-exported here), whose entry-point group
``slimnas.backends`` lets an installed package add one without editing slimnas. Adding a backend is one module::

    class NPUBackend(Backend):
        name = "my-npu"

        class Settings(BackendSettings):
            threads: Threads = None
            clock_mhz: int = Field(800, ge=100, le=4000, description="the NPU clock")

        def device_name(self) -> str: ...
        def prepare(self, module, example): ...   # or override sample() when the device is timed elsewhere

plus ``[project.entry-points."slimnas.backends"] my-npu = "my_pkg.npu:NPUBackend"`` (or
``BACKENDS.register("my-npu", NPUBackend)`` in a process). ``slimnas lut build --backend my-npu`` then takes
``--threads`` and ``--clock-mhz``, a pipeline config's ``latency`` section takes ``threads:`` and ``clock_mhz:``, and
a table records ``clock_mhz`` so validation and search jobs rebuild the backend as it was.

``get_backend(name, **settings)`` builds one (``None`` settings mean the backend's default); an unknown name or a
bad setting raises :class:`~slimnas.errors.InputError` naming it. A backend that cannot run here says why in one
line (``backend.unavailable_reason()``; ``check()`` raises :class:`BackendUnavailable`), never an ImportError trace.
"""

from __future__ import annotations

from typing import Any

from slimnas.errors import InputError
from slimnas.registry import BACKENDS

from ._alloc import ALLOCATORS, allocator_state, tune_allocator
from ._base import (
    BUILDER_OPTIONS,
    Backend,
    BackendSettings,
    BackendUnavailable,
    Threads,
    backend_options,
    building,
    cpu_name,
    table_options,
)
from ._coreml import COMPUTE_UNITS, CoreMLBackend
from ._onnx import ONNXRuntimeBackend, export_onnx
from ._torch import TorchCPUBackend, TorchCUDABackend

__all__ = [
    "Backend", "BackendSettings", "BackendUnavailable", "Threads", "BACKENDS", "get_backend", "backend_class",
    "table_options", "backend_options", "building", "BUILDER_OPTIONS", "cpu_name", "export_onnx", "COMPUTE_UNITS",
    "ALLOCATORS", "allocator_state", "tune_allocator",
    "TorchCPUBackend", "TorchCUDABackend", "ONNXRuntimeBackend", "CoreMLBackend",
]


def backend_class(name: str) -> type[Backend]:
    """The backend class registered as ``name``; :class:`InputError` naming the known ones if none."""
    if name not in BACKENDS:
        raise InputError(f"backend: unknown backend {name!r} (known: {', '.join(BACKENDS.names())})")
    cls = BACKENDS.get(name)
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise InputError(f"backend {name!r}: {cls!r} is not a slimnas.latency.backends.Backend subclass")
    return cls


def get_backend(name: str, **settings: Any) -> Backend:
    """A backend by name; ``settings`` are fields of its ``Settings`` model (``threads``, ``dtype``, ...), ``None``
    meaning the backend's default."""
    return backend_class(name)(**{k: v for k, v in settings.items() if v is not None})
