"""How fast: latency lookup tables for the EfficientFormer space (Li et al., NeurIPS 2022, Sec. 4.2).

- :class:`LatencyTable` (``load``, ``predict``, ``predict_many``, ``missing``): measured parts in Parquet, additive
  prediction. Plain Python + NumPy + PyArrow: no torch needed to predict.
- :mod:`.backends`: ``torch-cpu``, ``torch-cuda``, ``onnxruntime``, ``coreml`` (imported on first use: torch).
- :func:`build_table` (resumable), :func:`validate_table`, :class:`CalibratedPredictor`, the Core ML bundle
  round trip, and the Ray service in :mod:`.actor` (the only module here that imports ray).
"""

from __future__ import annotations

from slimnas._lazy import lazy_attributes

from ._parts import Part, part_kinds, parts_of, parts_of_space, repeat_key
from ._timing import STATS, Timing
from .predictor import CalibratedPredictor
from .table import LatencyTable, MissingEntryError, TableMeta

__all__ = [
    "LatencyTable", "TableMeta", "MissingEntryError", "Timing", "STATS", "Part", "part_kinds", "parts_of",
    "parts_of_space", "repeat_key", "CalibratedPredictor", "build_table", "validate_table", "get_backend",
]

_LAZY = {"build_table": ".builder", "validate_table": ".validate", "get_backend": ".backends"}


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())
