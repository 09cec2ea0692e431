"""The backend interface: how one module is timed on one device.

Calling contract (what the caller owns and when each method runs):

- ``Backend(**settings)`` is cheap and never fails on a machine that cannot run it; ``unavailable_reason()`` says in
  one line why it cannot (``None`` when it can), and ``check()`` raises :class:`BackendUnavailable` with that line.
- ``measure(module, example)`` times ``module(example)`` after warm-up and returns :class:`Timing` statistics in
  milliseconds. The caller owns the module (eval mode, random weights); the backend may convert it (ONNX, Core ML).
- One backend measures one thing at a time: parallel timing on one device corrupts itself, so callers must run
  measurements sequentially.

The protocol (shared by the backends unless they override ``_time``): warm up for ``warmup_ms`` (at least 3 calls);
pick ``number`` so that one sample (``number`` back-to-back calls) lasts at least ``min_sample_ms``; take ``repeats``
samples; each sample's per-call time is one observation.
"""

from __future__ import annotations

import abc
import math
import platform
import time
from collections.abc import Callable
from typing import Any, ClassVar

from slimnas import __version__
from slimnas.errors import InputError

from .._timing import Timing

__all__ = ["Backend", "BackendUnavailable", "cpu_name"]


class BackendUnavailable(InputError):
    """The backend cannot run on this machine (the message says why, in one line)."""


def cpu_name() -> str:
    """The CPU model (from /proc/cpuinfo on Linux), with the number of logical cores."""
    import os

    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{name} ({os.cpu_count()} logical cores)"


class Backend(abc.ABC):
    """Times modules on one device. Subclasses set ``name`` and implement ``prepare``."""

    name: ClassVar[str] = ""
    #: The module form this backend times by default (see :mod:`slimnas.latency.modules`).
    default_form: ClassVar[str] = "fused"

    def __init__(
        self,
        threads: int | None = None,
        dtype: str = "float32",
        warmup_ms: float = 200.0,
        repeats: int = 30,
        min_sample_ms: float = 2.0,
    ) -> None:
        if threads is not None and threads < 1:
            raise ValueError(f"threads: must be at least 1, got {threads}")
        if repeats < 1:
            raise ValueError(f"repeats: must be at least 1, got {repeats}")
        self.threads = threads
        self.dtype = dtype
        self.warmup_ms = float(warmup_ms)
        self.repeats = int(repeats)
        self.min_sample_ms = float(min_sample_ms)

    # ------------------------------------------------------------------ availability and description
    def unavailable_reason(self) -> str | None:
        """``None`` if this backend can time modules here, else why not (one line)."""
        return None

    def check(self) -> None:
        reason = self.unavailable_reason()
        if reason:
            raise BackendUnavailable(f"backend {self.name}: {reason}")

    @abc.abstractmethod
    def device_name(self) -> str:
        """The device the numbers belong to (CPU model, GPU name, phone model)."""

    def versions(self) -> dict[str, str]:
        import torch

        return {"slimnas": __version__, "torch": torch.__version__, "python": platform.python_version()}

    def options(self) -> dict[str, Any]:
        """Backend settings besides threads and dtype that the numbers depend on (recorded in the table)."""
        return {}

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "device": self.device_name(), "threads": self.threads, "dtype": self.dtype,
                "options": self.options(), "versions": self.versions()}

    # ------------------------------------------------------------------ timing
    @abc.abstractmethod
    def prepare(self, module: Any, example: Any) -> Callable[[], Any]:
        """Convert/compile ``module`` as the backend needs and return a closure that runs it once on ``example``."""

    def measure(self, module: Any, example: Any) -> Timing:
        """Timing statistics (ms) of ``module(example)``."""
        return Timing.from_samples(self.measure_samples(module, example))

    def measure_samples(self, module: Any, example: Any) -> list[float]:
        """The per-call times (ms) of ``repeats`` samples of ``module(example)`` after warm-up."""
        self.check()
        return self._time(self.prepare(module, example))

    def _sync(self) -> None:  # noqa: B027 - a no-op by design for synchronous devices
        """Wait for queued work (asynchronous devices override it)."""

    def _clock(self) -> float:
        return time.perf_counter()

    def _time(self, run: Callable[[], Any]) -> list[float]:
        calls = 0
        start = self._clock()
        while calls < 3 or (self._clock() - start) * 1e3 < self.warmup_ms:
            run()
            calls += 1
        self._sync()
        per_call_ms = max((self._clock() - start) * 1e3 / calls, 1e-6)
        number = max(1, math.ceil(self.min_sample_ms / per_call_ms))
        samples = []
        for _ in range(self.repeats):
            self._sync()
            t0 = self._clock()
            for _ in range(number):
                run()
            self._sync()
            samples.append((self._clock() - t0) * 1e3 / number)
        return samples
