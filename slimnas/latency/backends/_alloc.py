"""The CPU memory allocator setting that latency numbers depend on.

PyTorch's CPU tensors come from the C library's ``malloc``. With glibc's defaults, blocks above a dynamic threshold
are ``mmap``-ed and returned to the OS on free, so a network whose activations change size from layer to layer pays
page faults for its large activations on every inference, while one block timed alone in a loop recycles the same
heap memory. Measured on EfficientFormer at 224 px, batch 1, one thread: the same modules ran 10-60% slower inside
the network than alone, and the whole network 10-20% slower than the sum of its parts; with the threshold raised and
trimming off, the network ran ~15% faster and the gap fell to a few percent (``docs/benchmarks.md``).

``tuned`` (the default of the ``torch-cpu`` backend, and slimnas's deployment recommendation on Linux) raises glibc's
mmap threshold and trim threshold with ``mallopt`` -- the runtime equivalent of ``MALLOC_MMAP_THRESHOLD_`` and
``MALLOC_TRIM_THRESHOLD_``, or of using jemalloc/tcmalloc. ``default`` leaves the allocator alone. The setting is
process-wide and cannot be undone in a running process, so tables record it and validation refuses a mismatch.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform

__all__ = ["ALLOCATORS", "tune_allocator", "allocator_state"]

log = logging.getLogger(__name__)

ALLOCATORS = ("tuned", "default")
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_state = {"tuned": False}


def tune_allocator() -> bool:
    """Raise glibc's mmap/trim thresholds for this process; ``False`` where it does not apply (not glibc)."""
    if _state["tuned"]:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = bool(libc.mallopt(_M_MMAP_THRESHOLD, 256 << 20)) or bool(libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20))
        ok = ok and bool(libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30)) and bool(libc.mallopt(_M_TOP_PAD, 64 << 20))
    except (OSError, AttributeError):
        ok = False
    _state["tuned"] = ok
    if not ok:
        log.warning("could not tune the glibc allocator with mallopt; latency will include page-fault costs")
    return ok


def allocator_state() -> str:
    """``tuned`` once :func:`tune_allocator` succeeded in this process, else ``default``."""
    return "tuned" if _state["tuned"] else "default"
