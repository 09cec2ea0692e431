"""``onnxruntime``: export to ONNX (opset 17) and time ``InferenceSession.run`` on the CPU or CUDA provider.

:func:`export_onnx` is slimnas's one ONNX exporter: this backend times what it writes and ``slimnas export --format
onnx`` ships what it writes (the same graph, dynamic batch dimension included), so a table built on this backend
predicts the exported file. It uses the TorchScript exporter (``torch.onnx.export(dynamo=False)``, opset 17, the batch
dimension dynamic through ``dynamic_axes``): the dynamo exporter fixes the batch of the fused form at 1. An exporter
failure raises :class:`~slimnas.errors.ExportError`; there is no fallback to another exporter.

ONNX Runtime applies its own graph optimizations (``ORT_ENABLE_ALL``: conv+BN folding, GELU and LayerNorm fusion), so
this backend times the *eager* module form by default (measured fastest in ONNX Runtime, ``docs/benchmarks.md``).
``layout: blocked`` exports under :func:`~slimnas.search_spaces.onnx_blocked_layout`: the graph ``slimnas export
--format onnx-blocked`` ships, each MB4D block written so that the CPU provider keeps its blocked layout. With
the CUDA provider, ``run`` includes the host<->device copies of the input and output (what a caller of ``run`` pays).
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from ._base import Backend, BackendSettings, Threads, cpu_name

if TYPE_CHECKING:  # torch is imported where a backend times (a settings model needs none)
    import torch

__all__ = ["ONNXRuntimeBackend", "export_onnx"]

_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def export_onnx(module: torch.nn.Module, example: torch.Tensor, opset: int = 17, dynamic_batch: bool = True) -> bytes:
    """The ONNX model (serialized) of ``module`` (put in eval mode) traced at ``example``: input ``input``, output
    ``output``, dimension 0 of both named ``batch`` and dynamic unless ``dynamic_batch`` is false. Any failure of the
    exporter raises :class:`~slimnas.errors.ExportError` naming it."""
    import torch

    from slimnas.errors import ExportError

    module = module.eval()
    buffer = io.BytesIO()
    axes = {"input": {0: "batch"}, "output": {0: "batch"}} if dynamic_batch else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with torch.no_grad():
                torch.onnx.export(module, (example,), buffer, dynamo=False, opset_version=opset,
                                  input_names=["input"], output_names=["output"], dynamic_axes=axes)
        except Exception as exc:  # noqa: BLE001 - any failure of the exporter is the same error, said in one line
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise ExportError(f"ONNX export (torch.onnx.export, TorchScript exporter, opset {opset}) of "
                              f"{type(module).__name__} failed: {type(exc).__name__}: {first[:300]}") from None
    return buffer.getvalue()


class ONNXRuntimeBackend(Backend):
    """``onnxruntime`` with ``provider="cpu"`` (``threads`` intra-op threads) or ``provider="cuda"``."""

    name = "onnxruntime"
    default_form = "eager"

    class Settings(BackendSettings):
        threads: Threads = None
        provider: Literal[tuple(_PROVIDERS)] = Field(  # type: ignore[valid-type]
            "cpu", description="the onnxruntime execution provider")
        layout: Literal["plain", "blocked"] = Field(
            "plain", description="the graph timed: plain (each block as timm writes it; what export --format onnx "
                                 "ships) or blocked (MB4D written for the CPU provider's blocked layout; what "
                                 "export --format onnx-blocked ships)")

    def __init__(self, **settings: Any) -> None:
        import torch

        super().__init__(**settings)
        self.provider: str = self.settings.provider
        self.layout: str = self.settings.layout
        if self.threads is None and self.provider == "cpu":
            self.threads = torch.get_num_threads()
        self._exports: dict[tuple, bytes] = {}

    def unavailable_reason(self) -> str | None:
        try:
            import onnxruntime as ort
        except ImportError:
            return "onnxruntime is not installed (pip install onnxruntime)"
        if _PROVIDERS[self.provider] not in ort.get_available_providers():
            return f"{_PROVIDERS[self.provider]} is not available in this onnxruntime build"
        return None

    def device_name(self) -> str:
        import torch

        if self.provider == "cuda" and torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
        return cpu_name()

    def versions(self) -> dict[str, str]:
        import onnxruntime as ort

        out = super().versions()
        out["onnxruntime"] = ort.__version__
        out["provider"] = _PROVIDERS[self.provider]
        return out

    def session(self, model: bytes, profile_prefix: str | None = None):
        """An inference session of ``model`` with this backend's settings; ``profile_prefix``: ONNX Runtime's own
        profiler on, its JSON written there (``session.end_profiling()`` names the file)."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.inter_op_num_threads = 1
        if self.threads:
            options.intra_op_num_threads = self.threads
        options.log_severity_level = 3
        if profile_prefix is not None:
            options.enable_profiling = True
            options.profile_file_prefix = profile_prefix
        return ort.InferenceSession(model, sess_options=options, providers=[_PROVIDERS[self.provider]])

    def prepare(self, module: torch.nn.Module, example: torch.Tensor) -> Callable[[], Any]:
        """One session per module; a :class:`~slimnas.latency.modules.Rotation` becomes one session per copy,
        called in turn (each session holds its own weights, so they leave the cache as inside a network)."""
        from ..modules import Rotation

        copies = list(module.copies) if isinstance(module, Rotation) else [module]
        model = self.exported(copies[0], example)
        sessions = [self.session(model) for _ in copies]
        feed = {sessions[0].get_inputs()[0].name: example.detach().cpu().numpy()}
        if len(sessions) == 1:
            return lambda: sessions[0].run(None, feed)
        turn = [0]

        def run() -> Any:
            session = sessions[turn[0]]
            turn[0] = (turn[0] + 1) % len(sessions)
            return session.run(None, feed)

        return run

    def exported(self, module: torch.nn.Module, example: torch.Tensor) -> bytes:
        """The ONNX model of ``module``, exported once per structure (timing does not depend on weight values)."""
        key = (type(module).__qualname__, tuple(example.shape),
               tuple((name, tuple(t.shape)) for name, t in module.state_dict().items()))
        if key not in self._exports:
            from slimnas.search_spaces import onnx_blocked_layout

            if len(self._exports) >= 4096:
                self._exports.clear()
            with onnx_blocked_layout(self.layout == "blocked"):
                self._exports[key] = export_onnx(module, example)
        return self._exports[key]
