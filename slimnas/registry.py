"""Named plug-ins: space families, latency backends and search methods. Plain Python (no torch, ray or mlflow).

One :class:`Registry` per extension point, each discoverable through a Python entry-point group, so an outside
package adds a family, a backend or a method by declaring it in its own ``pyproject.toml`` and installing itself:

==================  =====================  ==============================================================
registry            entry-point group      what a name resolves to
==================  =====================  ==============================================================
``SPACES``          ``slimnas.spaces``     a :class:`~slimnas.search_spaces.SpaceFamily` instance
``BACKENDS``        ``slimnas.backends``   a :class:`~slimnas.latency.backends.Backend` subclass
``METHODS``         ``slimnas.methods``    a :class:`~slimnas.search.MethodSpec`
==================  =====================  ==============================================================

For example (an outside package's ``pyproject.toml``)::

    [project.entry-points."slimnas.backends"]
    my-npu = "my_pkg.npu:NPUBackend"

A name resolves, in order: to an object registered in this process (:meth:`Registry.register`, e.g. by a test or a
notebook), to an installed entry point, to a built-in. slimnas declares its built-ins as entry points too (see
``pyproject.toml``); they are also known by their import path here, so a source checkout that is not installed works.
Loading is lazy: a name's module is imported the first time the name is asked for, so listing names imports nothing.
A name that resolves to nothing raises :class:`~slimnas.errors.InputError` naming the known ones; an entry point
whose import fails raises one naming the entry point and the failure.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from importlib import metadata
from typing import Any, Generic, TypeVar

from slimnas.errors import InputError

__all__ = ["Registry", "SPACES", "BACKENDS", "METHODS", "load_path"]

T = TypeVar("T")


def load_path(path: str) -> Any:
    """The object at ``"package.module:attribute"`` (the entry-point syntax)."""
    module, _, attr = path.partition(":")
    obj: Any = importlib.import_module(module)
    for part in filter(None, attr.split(".")):
        obj = getattr(obj, part)
    return obj


class Registry(Generic[T]):
    """Names of one extension point (``what``, e.g. ``"space family"``) and the objects they resolve to.

    Args:
        what: what a name names, for messages.
        group: the entry-point group outside packages declare names in.
        builtins: slimnas's own names and their import paths (``"module:attribute"``).
        check: called on every loaded object; raises ``TypeError``/``ValueError`` when it is not a ``what``.
    """

    def __init__(self, what: str, group: str, builtins: Mapping[str, str],
                 check: Callable[[str, Any], None] | None = None) -> None:
        self.what = what
        self.group = group
        self.builtins = dict(builtins)
        self._check = check
        self._registered: dict[str, T] = {}
        self._loaded: dict[str, T] = {}

    # ------------------------------------------------------------------ registration
    def register(self, name: str, obj: T, *, replace: bool = False) -> T:
        """Make ``name`` resolve to ``obj`` in this process (``replace`` to override a name already known)."""
        if not name or not isinstance(name, str):
            raise ValueError(f"{self.what}: a name must be a non-empty string, got {name!r}")
        if not replace and name in self.names():
            raise ValueError(f"{self.what} {name!r} is registered already (pass replace=True to override it)")
        if self._check is not None:
            self._check(name, obj)
        self._registered[name] = obj
        self._loaded.pop(name, None)
        return obj

    def unregister(self, name: str) -> None:
        """Forget a name registered with :meth:`register` (entry points and built-ins stay)."""
        self._registered.pop(name, None)
        self._loaded.pop(name, None)

    # ------------------------------------------------------------------ lookup
    def _entry_points(self) -> dict[str, metadata.EntryPoint]:
        return {ep.name: ep for ep in metadata.entry_points(group=self.group)}

    def names(self) -> tuple[str, ...]:
        """Every name known here, sorted (imports nothing)."""
        return tuple(sorted(set(self.builtins) | set(self._entry_points()) | set(self._registered)))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.names()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def get(self, name: str) -> T:
        """The object ``name`` resolves to; :class:`InputError` naming the known names if none."""
        if name in self._registered:
            return self._registered[name]
        if name in self._loaded:
            return self._loaded[name]
        entry = self._entry_points().get(name)
        if entry is None and name not in self.builtins:
            raise InputError(f"{self.what}: unknown name {name!r} (known: {', '.join(self.names())})")
        path = entry.value if entry is not None else self.builtins[name]
        try:
            obj = entry.load() if entry is not None else load_path(path)
        except Exception as exc:  # an outside plug-in may fail in any way: say which and why, in one line
            raise InputError(f"{self.what} {name!r}: cannot load {path!r} "
                             f"({type(exc).__name__}: {exc})") from exc
        if self._check is not None:
            self._check(name, obj)
        self._loaded[name] = obj
        return obj

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def items(self) -> list[tuple[str, T]]:
        """Every name with its object (imports every plug-in)."""
        return [(name, self.get(name)) for name in self.names()]


#: Space families (:class:`slimnas.search_spaces.SpaceFamily` instances).
SPACES: Registry[Any] = Registry(
    "space family", "slimnas.spaces",
    {"efficientformer": "slimnas.search_spaces.efficientformer:FAMILY"},
)
#: Latency backends (:class:`slimnas.latency.backends.Backend` subclasses).
BACKENDS: Registry[Any] = Registry(
    "latency backend", "slimnas.backends",
    {
        "torch-cpu": "slimnas.latency.backends._torch:TorchCPUBackend",
        "torch-cuda": "slimnas.latency.backends._torch:TorchCUDABackend",
        "onnxruntime": "slimnas.latency.backends._onnx:ONNXRuntimeBackend",
        "coreml": "slimnas.latency.backends._coreml:CoreMLBackend",
    },
)
#: Search methods (:class:`slimnas.search.MethodSpec` instances).
METHODS: Registry[Any] = Registry(
    "search method", "slimnas.methods",
    {
        "slimming": "slimnas.search.methods:SLIMMING",
        "slimming-extended": "slimnas.search.methods:SLIMMING_EXTENDED",
        "random": "slimnas.search.methods:RANDOM",
        "exhaustive": "slimnas.search.methods:EXHAUSTIVE",
        "tpe": "slimnas.search.methods:TPE",
        "nsga2": "slimnas.search.methods:NSGA2",
    },
)
