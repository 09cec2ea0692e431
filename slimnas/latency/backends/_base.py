"""The backend interface: how one module is timed on one device.

Calling contract (what the caller owns and when each method runs):

- ``Backend(**settings)`` is cheap and never fails on a machine that cannot run it; ``unavailable_reason()`` says in
  one line why it cannot (``None`` when it can), and ``check()`` raises :class:`BackendUnavailable` with that line.
- ``sample(module, example, protocol)`` takes one pass of samples of ``module(example)``: warm-up for
  ``protocol.warmup_ms`` (at least 3 calls), then single-call timings (ms) for at least ``protocol.pass_ms`` and at
  least ``protocol.samples`` calls. The caller owns the module (eval mode, random weights); the backend may convert it
  (ONNX, Core ML). ``measure(module, example, protocol)`` runs the whole protocol on one module
  (:func:`slimnas.latency.protocol.measure_items` does it for many, interleaved).
- A backend describes the device (threads, dtype, provider, ...); *how* to time is the protocol's
  (:mod:`slimnas.latency.protocol`). One backend measures one thing at a time: parallel timing on one device corrupts
  itself, so callers must run measurements sequentially.
"""

from __future__ import annotations

import abc
import platform
import time
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from slimnas import __version__
from slimnas.errors import InputError

from ..protocol import MAX_SAMPLES, ContextSamples, Measurement, Protocol, measure_items

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
    #: Whether :meth:`sample_context` can time a network's modules one by one inside the running network.
    supports_context: ClassVar[bool] = False
    #: The module form this backend times by default (see :mod:`slimnas.latency.modules`).
    default_form: ClassVar[str] = "fused"

    def __init__(
        self,
        threads: int | None = None,
        dtype: str = "float32",
    ) -> None:
        if threads is not None and (not isinstance(threads, int) or not 1 <= threads <= 4096):
            raise InputError(f"threads: must be an integer from 1 to 4096, got {threads!r}")
        self.threads = threads
        self.dtype = dtype

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

    def measure(self, module: Any, example: Any, protocol: Protocol | None = None) -> Measurement:
        """The latency of ``module(example)`` under ``protocol`` (default: :class:`Protocol`'s defaults)."""
        return measure_items([lambda: (module, example)], self, protocol or Protocol())[0]

    def sample(self, module: Any, example: Any, protocol: Protocol) -> list[float]:
        """One pass: the single-call times (ms) of ``module(example)`` after warm-up (see the module docstring)."""
        self.check()
        return self._sample(self.prepare(module, example), protocol)

    def sample_context(self, network: Any, modules: Sequence[Any], example: Any,
                       protocol: Protocol) -> ContextSamples:
        """One pass of ``network(example)`` in context: whole calls alternating with calls that run ``modules`` in turn
        (which computes the same network) and time each one (see :mod:`slimnas.latency.context`)."""
        raise BackendUnavailable(f"backend {self.name}: cannot time parts inside a running network; build the table "
                                 f"with harness 'isolated'")

    def _sync(self) -> None:  # noqa: B027 - a no-op by design for synchronous devices
        """Wait for queued work (asynchronous devices override it)."""

    def _sample(self, run: Callable[[], Any], protocol: Protocol) -> list[float]:
        clock = time.perf_counter
        calls, start = 0, clock()
        while calls < 3 or (clock() - start) * 1e3 < protocol.warmup_ms:
            run()
            calls += 1
        self._sync()
        samples: list[float] = []
        begin = clock()
        while len(samples) < protocol.samples or ((clock() - begin) * 1e3 < protocol.pass_ms
                                                   and len(samples) < MAX_SAMPLES):
            t0 = clock()
            run()
            self._sync()
            samples.append((clock() - t0) * 1e3)
        return samples
