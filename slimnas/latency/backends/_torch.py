"""PyTorch eager backends: ``torch-cpu`` (intra-op threads fixed and recorded) and ``torch-cuda`` (CUDA events)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from slimnas.errors import InputError

from ..modules import DTYPES
from ._alloc import ALLOCATORS, allocator_state, tune_allocator
from ._base import Backend, cpu_name

__all__ = ["TorchCPUBackend", "TorchCUDABackend"]


def _prepared(module: torch.nn.Module, example: torch.Tensor, device: str, dtype: str):
    if dtype not in DTYPES:
        raise ValueError(f"dtype: expected one of {sorted(DTYPES)}, got {dtype!r}")
    module = module.to(device=device, dtype=DTYPES[dtype]).eval()
    example = example.to(device=device, dtype=DTYPES[dtype])
    return module, example


class TorchCPUBackend(Backend):
    """``torch-cpu``: eager PyTorch on the CPU under ``torch.inference_mode``, ``threads`` intra-op threads (default:
    torch's current setting) and the ``allocator`` setting (``tuned`` or ``default``, see :mod:`._alloc`), both
    recorded in the table."""

    name = "torch-cpu"

    def __init__(self, threads: int | None = None, allocator: str = "tuned", **kwargs: Any) -> None:
        if allocator not in ALLOCATORS:
            raise ValueError(f"allocator: expected one of {ALLOCATORS}, got {allocator!r}")
        super().__init__(threads=threads or torch.get_num_threads(), **kwargs)
        self.allocator = allocator

    def options(self) -> dict[str, Any]:
        return {"allocator": self.allocator}

    def unavailable_reason(self) -> str | None:
        if self.allocator == "default" and allocator_state() == "tuned":
            return ("this process already tuned the allocator (it cannot be undone); measure allocator=default in "
                    "a fresh process")
        return None

    def device_name(self) -> str:
        return cpu_name()

    def prepare(self, module: torch.nn.Module, example: torch.Tensor) -> Callable[[], Any]:
        module, example = _prepared(module, example, "cpu", self.dtype)

        def run() -> Any:
            with torch.inference_mode():
                return module(example)

        return run

    def measure_samples(self, module: torch.nn.Module, example: torch.Tensor) -> list[float]:
        if self.allocator == "tuned" and not tune_allocator():
            raise InputError("allocator: cannot tune this C library's allocator; use allocator=default")
        previous = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            return super().measure_samples(module, example)
        finally:
            torch.set_num_threads(previous)


class TorchCUDABackend(Backend):
    """``torch-cuda``: eager PyTorch on one GPU, timed with CUDA events (the paper's A100 figures use batch 64)."""

    name = "torch-cuda"

    def __init__(self, device: str = "cuda:0", **kwargs: Any) -> None:
        kwargs.pop("threads", None)
        super().__init__(threads=None, **kwargs)
        self.device = device

    def unavailable_reason(self) -> str | None:
        if not torch.cuda.is_available():
            return "no CUDA device is visible to torch on this machine"
        return None

    def device_name(self) -> str:
        if not torch.cuda.is_available():
            return "unavailable"
        return torch.cuda.get_device_name(torch.device(self.device))

    def versions(self) -> dict[str, str]:
        out = super().versions()
        out["cuda"] = str(torch.version.cuda)
        return out

    def prepare(self, module: torch.nn.Module, example: torch.Tensor) -> Callable[[], Any]:
        module, example = _prepared(module, example, self.device, self.dtype)

        def run() -> Any:
            with torch.inference_mode():
                return module(example)

        return run

    def _sync(self) -> None:
        torch.cuda.synchronize(self.device)

    def _time(self, run: Callable[[], Any]) -> list[float]:
        # Warm-up and the per-sample call count as in the base protocol; each sample timed with CUDA events.
        import math

        for _ in range(3):
            run()
        self._sync()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        elapsed, calls = 0.0, 0
        while calls < 3 or elapsed < self.warmup_ms:
            start.record()
            run()
            end.record()
            end.synchronize()
            elapsed += start.elapsed_time(end)
            calls += 1
        number = max(1, math.ceil(self.min_sample_ms / max(elapsed / calls, 1e-6)))
        samples = []
        for _ in range(self.repeats):
            start.record()
            for _ in range(number):
                run()
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end) / number)
        return samples
