"""Hints a network's modules read while they are exported (plain Python: importable without torch).

:func:`onnx_blocked_layout` asks the modules of a family that have one for the form of their function that ONNX
Runtime's CPU provider runs in its blocked (NCHWc) layout. The ``onnxruntime`` latency backend exports under it when
its ``layout`` setting is ``blocked``, and ``slimnas export --format onnx-blocked`` writes under it, so a table built
that way times exactly the file that format ships. A family whose modules have no such form ignores it. The built-in
EfficientFormer's forms: ``MB4D`` and ``EfficientFormer.forward_head`` (``slimnas/search_spaces/efficientformer``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

__all__ = ["onnx_blocked_layout", "blocked_layout_export"]

_BLOCKED_LAYOUT: ContextVar[bool] = ContextVar("slimnas_onnx_blocked_layout", default=False)


@contextlib.contextmanager
def onnx_blocked_layout(enabled: bool = True) -> Iterator[None]:
    """ONNX exports inside this block write the modules that have one in their blocked-layout form."""
    token = _BLOCKED_LAYOUT.set(enabled)
    try:
        yield
    finally:
        _BLOCKED_LAYOUT.reset(token)


def blocked_layout_export() -> bool:
    """Whether an ONNX export is in progress and asked for the blocked-layout form (:func:`onnx_blocked_layout`)."""
    if not _BLOCKED_LAYOUT.get():
        return False
    import torch

    return torch.onnx.is_in_onnx_export()
