"""The latency service: tables held by name, answering batched predictions. Plain Python (no ray).

:mod:`slimnas.latency.actor` runs it as a named Ray actor; tests and single-process jobs can use it directly. Tables
arrive as Parquet bytes (or paths, or tables) so that an actor restarted on another node rebuilds itself from its
constructor arguments alone.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Union

import numpy as np

from slimnas.errors import InputError

from .table import LatencyTable

__all__ = ["LatencyService", "TableSource"]

TableSource = Union[bytes, str, os.PathLike, LatencyTable]  # noqa: UP007 - a runtime alias, py3.10-safe


def _as_table(source: TableSource, name: str) -> LatencyTable:
    if isinstance(source, LatencyTable):
        return source
    if isinstance(source, (bytes, bytearray)):
        return LatencyTable.from_bytes(bytes(source), source=f"table {name!r}")
    return LatencyTable.load(source)


class LatencyService:
    """Holds one or more tables; ``predict(features, table)`` answers for a whole batch of archs at once."""

    def __init__(self, tables: Mapping[str, TableSource]) -> None:
        if not tables:
            raise InputError("tables: the latency service needs at least one table")
        self.tables = {name: _as_table(source, name) for name, source in tables.items()}
        self.default = next(iter(self.tables))

    def names(self) -> list[str]:
        return list(self.tables)

    def meta(self, table: str | None = None) -> dict:
        return self._table(table).meta.to_dict()

    def add_table(self, name: str, source: TableSource) -> None:
        self.tables[name] = _as_table(source, name)

    def _table(self, table: str | None) -> LatencyTable:
        name = table or self.default
        if name not in self.tables:
            raise InputError(f"table: no table named {name!r} (have {sorted(self.tables)})")
        return self.tables[name]

    def predict(self, features: Any, table: str | None = None) -> np.ndarray:
        """Latency (ms) of each arch given in its family's :meth:`~slimnas.search_spaces.SpaceFamily.features` form
        (EfficientFormer: integer arrays, so thousands of archs travel as a few small arrays)."""
        return self._table(table).predict_features(features)

    def ping(self) -> dict:
        return {"pid": os.getpid(), "tables": self.names()}
