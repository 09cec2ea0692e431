"""Lazy package attributes (PEP 562): a name is imported from its module on first use, so a package's light part
stays importable without the heavy dependencies (torch) of the rest."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_attributes"]


def lazy_attributes(package: str, modules: Mapping[str, str],
                    namespace: dict[str, Any]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: each name of ``modules`` (name -> module, relative to ``package``)
    is imported on first access and kept in ``namespace`` (the package's ``globals()``).

    Use: ``__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())``.
    """

    def __getattr__(name: str) -> Any:
        if name not in modules:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(modules[name], package), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(namespace.get("__all__", ())) | set(modules))

    return __getattr__, __dir__
