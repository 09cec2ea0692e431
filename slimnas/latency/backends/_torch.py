"""PyTorch eager backends: ``torch-cpu`` (intra-op threads fixed and recorded) and ``torch-cuda`` (CUDA events)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from slimnas._threads import torch_threads
from slimnas.errors import InputError

from ..protocol import MAX_SAMPLES, ContextSamples, Protocol
from ._alloc import ALLOCATORS, allocator_state, tune_allocator
from ._base import Backend, BackendSettings, Threads, cpu_name

if TYPE_CHECKING:  # torch is imported where a backend times (a settings model needs none)
    import torch

__all__ = ["TorchCPUBackend", "TorchCUDABackend"]

#: The dtypes eager PyTorch times modules in.
TorchDtype = Literal["float32", "float16", "bfloat16"]


def _prepared(module: torch.nn.Module, example: torch.Tensor, device: str, dtype: str):
    from ..modules import DTYPES

    module = module.to(device=device, dtype=DTYPES[dtype]).eval()
    example = example.to(device=device, dtype=DTYPES[dtype])
    return module, example


class TorchCPUBackend(Backend):
    """``torch-cpu``: eager PyTorch on the CPU under ``torch.inference_mode``, ``threads`` intra-op threads (default:
    torch's current setting) and the ``allocator`` setting (``tuned`` or ``default``, see :mod:`._alloc`), both
    recorded in the table."""

    name = "torch-cpu"

    class Settings(BackendSettings):
        threads: Threads = None
        dtype: TorchDtype = Field("float32", description="the dtype modules are timed in")
        allocator: Literal[ALLOCATORS] = Field(  # type: ignore[valid-type]
            "tuned", description="the glibc allocator setting (see slimnas.latency.backends._alloc)")

    def __init__(self, **settings: Any) -> None:
        import torch

        super().__init__(**settings)
        self.allocator: str = self.settings.allocator
        if self.threads is None:
            self.threads = torch.get_num_threads()

    def unavailable_reason(self) -> str | None:
        if self.allocator == "default" and allocator_state() == "tuned":
            return ("this process already tuned the allocator (it cannot be undone); measure allocator=default in "
                    "a fresh process")
        return None

    def device_name(self) -> str:
        return cpu_name()

    def prepare(self, module: torch.nn.Module, example: torch.Tensor) -> Callable[[], Any]:
        import torch

        module, example = _prepared(module, example, "cpu", self.dtype)

        def run() -> Any:
            with torch.inference_mode():
                return module(example)

        return run

    supports_context = True

    @contextlib.contextmanager
    def _settings(self) -> Iterator[None]:

        if self.allocator == "tuned" and not tune_allocator():
            raise InputError("allocator: cannot tune this C library's allocator; use allocator=default")
        with torch_threads(self.threads):
            yield

    def sample(self, module: torch.nn.Module, example: torch.Tensor, protocol: Protocol) -> list[float]:
        with self._settings():
            return super().sample(module, example, protocol)

    def sample_context(self, network: torch.nn.Module, modules: Sequence[torch.nn.Module], example: torch.Tensor,
                       protocol: Protocol) -> ContextSamples:
        import torch

        self.check()
        network, example = _prepared(network, example, "cpu", self.dtype)
        clock = time.perf_counter
        with self._settings(), torch.inference_mode():
            calls, start = 0, clock()
            while calls < 3 or (clock() - start) * 1e3 < protocol.warmup_ms:
                network(example)
                calls += 1
            whole: list[float] = []
            parts: list[list[float]] = [[] for _ in modules]
            begin = clock()
            while len(whole) < protocol.samples or ((clock() - begin) * 1e3 < protocol.pass_ms
                                                    and len(whole) < MAX_SAMPLES):
                t0 = clock()
                network(example)
                whole.append((clock() - t0) * 1e3)
                x, last = example, clock()
                for i, module in enumerate(modules):
                    x = module(x)
                    now = clock()
                    parts[i].append((now - last) * 1e3)
                    last = now
        return ContextSamples(whole, parts)


class TorchCUDABackend(Backend):
    """``torch-cuda``: eager PyTorch on one GPU, timed with CUDA events (the paper's A100 figures use batch 64)."""

    name = "torch-cuda"
    host_memory = False  # the GPU's

    class Settings(BackendSettings):
        dtype: TorchDtype = Field("float32", description="the dtype modules are timed in")
        device: str = Field("cuda:0", pattern=r"^cuda(:[0-9]{1,3})?$", description="the GPU, e.g. cuda:1")

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        self.device: str = self.settings.device

    def options(self) -> dict[str, Any]:
        return {}  # the GPU's name is the table's device; which index it had here does not change the numbers

    def unavailable_reason(self) -> str | None:
        import torch

        if not torch.cuda.is_available():
            return "no CUDA device is visible to torch on this machine"
        return None

    def device_name(self) -> str:
        import torch

        if not torch.cuda.is_available():
            return "unavailable"
        return torch.cuda.get_device_name(torch.device(self.device))

    def building(self) -> contextlib.AbstractContextManager[Any]:
        import torch

        return torch.device(self.device)

    def versions(self) -> dict[str, str]:
        import torch

        out = super().versions()
        out["cuda"] = str(torch.version.cuda)
        return out

    def prepare(self, module: torch.nn.Module, example: torch.Tensor) -> Callable[[], Any]:
        import torch

        module, example = _prepared(module, example, self.device, self.dtype)

        def run() -> Any:
            with torch.inference_mode():
                return module(example)

        return run

    def _sync(self) -> None:
        import torch

        torch.cuda.synchronize(self.device)

    supports_context = True

    def sample_context(self, network: torch.nn.Module, modules: Sequence[torch.nn.Module], example: torch.Tensor,
                       protocol: Protocol) -> ContextSamples:
        import torch

        self.check()
        network, example = _prepared(network, example, self.device, self.dtype)
        events = [torch.cuda.Event(enable_timing=True) for _ in range(len(modules) + 1)]
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        with torch.inference_mode():
            warm, calls = 0.0, 0
            while calls < 3 or warm < protocol.warmup_ms:
                start.record()
                network(example)
                end.record()
                end.synchronize()
                warm += start.elapsed_time(end)
                calls += 1
            whole: list[float] = []
            parts: list[list[float]] = [[] for _ in modules]
            elapsed = 0.0
            while len(whole) < protocol.samples or (elapsed < protocol.pass_ms and len(whole) < MAX_SAMPLES):
                start.record()
                network(example)
                end.record()
                end.synchronize()
                whole.append(start.elapsed_time(end))
                elapsed += whole[-1]
                x = example
                events[0].record()
                for i, module in enumerate(modules):
                    x = module(x)
                    events[i + 1].record()
                events[-1].synchronize()
                for i in range(len(modules)):
                    parts[i].append(events[i].elapsed_time(events[i + 1]))
        return ContextSamples(whole, parts)

    def _sample(self, run: Callable[[], Any], protocol: Protocol) -> list[float]:
        import torch

        # The base protocol, each sample timed with CUDA events around one call (the host clock would time the
        # launch, not the kernels).
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        warm, calls = 0.0, 0
        while calls < 3 or warm < protocol.warmup_ms:
            start.record()
            run()
            end.record()
            end.synchronize()
            warm += start.elapsed_time(end)
            calls += 1
        samples: list[float] = []
        elapsed = 0.0
        while len(samples) < protocol.samples or (elapsed < protocol.pass_ms and len(samples) < MAX_SAMPLES):
            start.record()
            run()
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end))
            elapsed += samples[-1]
        return samples
