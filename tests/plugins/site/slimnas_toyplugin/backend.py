"""A latency backend that slimnas does not ship, in one module: ``toy-npu``, a deterministic device.

The toy device times nothing: a module's latency is a per-call constant plus a cost per weight, divided by its
``speed`` setting (a setting of its own, which ``slimnas lut build --speed`` and the pipeline's ``latency.speed`` take
from its settings model). A network's latency is then exactly its parts' plus one call, which a table of parts timed
alone (the empty call taken off each part and added once) predicts exactly. Known to slimnas through the entry point
``toy-npu`` of this package's ``slimnas.backends`` group.
"""

from __future__ import annotations

from pydantic import Field

from slimnas.latency.backends import Backend, BackendSettings

#: What one call costs on the toy device (ms), and each weight.
CALL_MS, MS_PER_WEIGHT = 0.05, 1e-5


class ToyNPUBackend(Backend):
    """A deterministic device: ``(CALL_MS + weights * MS_PER_WEIGHT) / speed`` per call."""

    name = "toy-npu"

    class Settings(BackendSettings):
        speed: float = Field(1.0, gt=0, le=1000, description="how many times faster than the reference toy NPU")

    def device_name(self) -> str:
        return f"toy NPU x{self.settings.speed:g}"

    def versions(self) -> dict[str, str]:
        return {"toy-npu": "1"}

    def prepare(self, module, example):
        raise AssertionError("the toy NPU runs nothing")

    def sample(self, module, example, protocol) -> list[float]:
        copies = getattr(module, "copies", None)  # a Rotation of weight copies: one copy runs per call
        weights = sum(p.numel() for p in (copies[0] if copies else module).parameters())
        return [(CALL_MS + weights * MS_PER_WEIGHT) / self.settings.speed] * protocol.samples
