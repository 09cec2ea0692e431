"""``coreml``: convert with coremltools to an ML Program (``.mlpackage``) and time ``predict`` on macOS.

The paper's latencies are iPhone 12 figures from Core ML (Sec. 5). coremltools converts on Linux too, but prediction
needs macOS. Elsewhere this backend converts and the caller writes a *benchmark bundle* (:mod:`slimnas.latency.bundle`)
that a user times on the device; the measurements file is imported back into a table. Core ML fuses on its own, so
the backend converts the *eager* module form by default. The fused form converts too: coremltools 9.0 has no converter
for ``torch.lerp`` (the fused EfficientFormer's pool mixer), so :meth:`CoreMLBackend.convert` registers one
(:func:`register_lerp`: ``x + w * (end - x)``). ``slimnas export --format coreml`` converts with the same method.
"""

from __future__ import annotations

import contextlib
import io
import logging
import platform
import subprocess
import warnings
from collections.abc import Callable
from typing import Any, Literal

from pydantic import Field

from ._base import Backend, BackendSettings

__all__ = ["CoreMLBackend", "COMPUTE_UNITS", "register_lerp"]

log = logging.getLogger(__name__)

COMPUTE_UNITS = ("all", "cpu_only", "cpu_and_gpu", "cpu_and_ne")


def _quiet_coremltools():
    """Import coremltools without its import-time chatter (missing native libs on Linux, untested torch version)."""
    for name in ("coremltools", "coremltools.models.model", "coremltools.converters"):
        logging.getLogger(name).setLevel(logging.ERROR)
    import coremltools as ct

    return ct


def register_lerp() -> None:
    """Register a coremltools converter for ``torch.lerp(x, end, weight)`` as ``x + weight * (end - x)`` (once per
    process; coremltools 9.0 has none)."""
    _quiet_coremltools()
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.frontend.torch import register_torch_op
    from coremltools.converters.mil.frontend.torch.ops import _get_inputs
    from coremltools.converters.mil.frontend.torch.torch_op_registry import _TORCH_OPS_REGISTRY

    if _TORCH_OPS_REGISTRY.get_func("lerp") is not None:
        return

    def lerp(context, node):
        x, end, weight = _get_inputs(context, node, expected=3)
        context.add(mb.add(x=x, y=mb.mul(x=weight, y=mb.sub(x=end, y=x)), name=node.name))

    register_torch_op(lerp)


class CoreMLBackend(Backend):
    """``coreml`` with a compute-unit setting (``all``, ``cpu_only``, ``cpu_and_gpu``, ``cpu_and_ne``)."""

    name = "coreml"
    default_form = "eager"

    class Settings(BackendSettings):
        dtype: Literal["float32", "float16"] = Field("float32", description="the compute precision")
        compute_units: Literal[COMPUTE_UNITS] = Field(  # type: ignore[valid-type]
            "all", description="the Core ML compute units")

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        self.compute_units: str = self.settings.compute_units

    @staticmethod
    def can_convert() -> str | None:
        try:
            _quiet_coremltools()
        except ImportError:
            return "coremltools is not installed (pip install coremltools)"
        return None

    def unavailable_reason(self) -> str | None:
        reason = self.can_convert()
        if reason:
            return reason
        if platform.system() != "Darwin":
            return (f"timing Core ML models needs macOS (this machine runs {platform.system()}); write a benchmark "
                    f"bundle with `slimnas lut build --backend coreml --bundle DIR`, time it on the device, then "
                    f"`slimnas lut import-measurements`")
        return None

    def device_name(self) -> str:
        if platform.system() == "Darwin":
            try:
                brand = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True,
                                       text=True, timeout=5).stdout.strip()
                return f"{brand or platform.machine()} (Core ML, {self.compute_units})"
            except (OSError, subprocess.SubprocessError):
                pass
        return f"not measured here (Core ML, {self.compute_units})"

    def versions(self) -> dict[str, str]:
        out = super().versions()
        try:
            out["coremltools"] = _quiet_coremltools().__version__
        except ImportError:
            pass
        return out

    def convert(self, module: Any, example: Any):
        """The ``ct.models.MLModel`` (ML Program, float32 compute) of ``module`` at ``example``'s shape."""
        import torch

        ct = _quiet_coremltools()
        reason = self.can_convert()
        if reason:
            raise RuntimeError(reason)
        register_lerp()
        module = module.eval()
        # coremltools converts TorchScript traces (its torch.export path is newer); keep its progress bars quiet.
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            with torch.no_grad():
                traced = torch.jit.trace(module, example)
            return ct.convert(
                traced,
                inputs=[ct.TensorType(name="input", shape=tuple(example.shape))],
                outputs=[ct.TensorType(name="output")],
                convert_to="mlprogram",
                compute_precision=ct.precision.FLOAT32 if self.dtype == "float32" else ct.precision.FLOAT16,
                compute_units=getattr(ct.ComputeUnit, self.compute_units.upper()),
                minimum_deployment_target=ct.target.iOS16,
            )

    def prepare(self, module: Any, example: Any) -> Callable[[], Any]:
        model = self.convert(module, example)
        feed = {"input": example.detach().cpu().numpy()}
        return lambda: model.predict(feed)
