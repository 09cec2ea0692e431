"""The backend interface: how one module is timed on one device.

Calling contract (what the caller owns and when each method runs):

- ``Backend(**settings)`` is cheap and never fails on a machine that cannot run it; ``unavailable_reason()`` says in
  one line why it cannot (``None`` when it can), and ``check()`` raises :class:`BackendUnavailable` with that line.
  The settings are the backend's :attr:`Backend.Settings` model (a pydantic model: each field's type, range, default
  and description, declared once): the CLI's ``slimnas lut build`` flags and the pipeline config's ``latency`` keys
  are derived from it, and a bad value raises :class:`~slimnas.errors.InputError` naming the setting.
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
import contextlib
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from slimnas import __version__
from slimnas.errors import InputError

from ..protocol import MAX_SAMPLES, ContextSamples, Measurement, Protocol, measure_items

__all__ = ["Backend", "BackendSettings", "BackendUnavailable", "Threads", "cpu_name", "table_options",
           "backend_options", "building", "BUILDER_OPTIONS"]

#: The ``threads`` setting of a backend that runs on CPU threads (``None``: the backend's default).
Threads = Annotated[int | None, Field(ge=1, le=4096, description="CPU threads (intra-op); default: torch's current "
                                                                  "setting")]

#: Keys of a table's ``options`` that the table builder adds (how parts were timed), not the backend's settings.
BUILDER_OPTIONS = ("rotation_mb",)


class BackendSettings(BaseModel):
    """The base of a backend's settings model: every backend has a ``dtype`` (recorded in the table); a subclass
    adds the backend's own (``threads``, a provider, a device, ...), each with its type, range, default and a
    ``description`` (the CLI's help)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    dtype: Literal["float32"] = Field("float32", description="the dtype modules are timed in")


def table_options(backend: Backend, rotation_mb: float = 0.0) -> dict[str, Any]:
    """The ``options`` a table built on ``backend`` records: the backend's own (:meth:`Backend.options`), and
    ``rotation_mb`` when parts were timed with rotating weight copies (:mod:`slimnas.latency.modules`)."""
    options = dict(backend.options())
    if rotation_mb:
        options["rotation_mb"] = rotation_mb
    return options


def backend_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """The backend's own settings among a table's ``options`` (:func:`table_options` minus the builder's)."""
    return {k: v for k, v in options.items() if k not in BUILDER_OPTIONS}


def building(backend: Any) -> contextlib.AbstractContextManager[Any]:
    """Where the modules ``backend`` will time are constructed: its :meth:`Backend.building`, or the host for an
    object that only samples (a :class:`~slimnas.latency.protocol.Sampler`, such as a wrapper around a backend)."""
    method = getattr(backend, "building", None)
    return method() if method is not None else contextlib.nullcontext()


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
    """Times modules on one device. Subclasses set ``name``, declare ``Settings`` and implement ``prepare`` and
    ``device_name`` (or override ``sample``).

    ``Backend(**settings)`` validates ``settings`` with :attr:`Settings` (unknown names and bad values raise
    :class:`~slimnas.errors.InputError` naming the setting) and keeps the model as :attr:`settings`; ``threads``
    (``None`` for a backend without threads) and ``dtype`` are attributes too, since every table records them.
    """

    name: ClassVar[str] = ""
    #: The backend's settings (a :class:`BackendSettings` subclass): the one declaration the CLI and configs use.
    Settings: ClassVar[type[BackendSettings]] = BackendSettings
    #: Whether :meth:`sample_context` can time a network's modules one by one inside the running network.
    supports_context: ClassVar[bool] = False
    #: The module form this backend times by default (see :mod:`slimnas.latency.modules`).
    default_form: ClassVar[str] = "fused"
    #: Whether the timed activations live in this machine's memory (``slimnas lut build`` then checks the batch fits).
    host_memory: ClassVar[bool] = True

    def __init__(self, **settings: Any) -> None:
        self.settings: BackendSettings = self.validate_settings(settings)
        self.threads: int | None = getattr(self.settings, "threads", None)
        self.dtype: str = self.settings.dtype

    @classmethod
    def validate_settings(cls, settings: Mapping[str, Any]) -> BackendSettings:
        """``settings`` as this backend's :attr:`Settings`; :class:`InputError` naming the first bad setting."""
        from slimnas.config import format_validation_error

        try:
            return cls.Settings.model_validate(dict(settings))
        except ValidationError as exc:
            error = exc.errors()[0]
            if error.get("type") == "extra_forbidden":
                raise InputError(f"{error['loc'][0]}: not a setting of backend {cls.name} (its settings: "
                                 f"{', '.join(cls.Settings.model_fields)})") from None
            raise InputError(format_validation_error(exc)) from None

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
        """Settings besides threads and dtype that the numbers depend on (recorded in the table, given back to the
        backend to measure against the table): by default every other field of :attr:`Settings`."""
        return self.settings.model_dump(exclude={"threads", "dtype"})

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "device": self.device_name(), "threads": self.threads, "dtype": self.dtype,
                "options": self.options(), "versions": self.versions()}

    # ------------------------------------------------------------------ timing
    def building(self) -> contextlib.AbstractContextManager[Any]:
        """The context the modules this backend will time are constructed in. Default: none (on the host); a GPU
        backend constructs on its device (``torch.device``), so that weights are initialised there: one ``l7``
        network at 224 px takes ~0.6 s to initialise on 2 CPU cores, and a context build constructs its covering
        networks once per pass (768 of them with the default protocol)."""
        return contextlib.nullcontext()

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
