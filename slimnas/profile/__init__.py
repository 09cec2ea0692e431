"""Latency breakdowns of networks on the user's device (the EfficientFormer paper's Section 3 and Fig. 2).

``slimnas profile MODEL ...`` (:mod:`slimnas.platform.commands.profile`) measures each network end to end under the
latency tables' protocol, profiles it operator by operator with the backend's own profiler, and reports the time per
operator category (:mod:`.categories`) and per block (:mod:`.structure`), as CSV, JSON and a stacked-bar figure
(:mod:`.records`, :mod:`.figure`). ``slimnas lut explain`` (:mod:`.explain`) puts a latency table's entries next to
the parts' measured in-network times.

Modules: :mod:`.categories` (operator -> category), :mod:`.structure` (module tree -> stem, stages, blocks, head),
:mod:`.sources` (MODEL arguments), :mod:`.torch_profiler`, :mod:`.ort_profiler`, :mod:`.run` (one model on one
backend), :mod:`.records`, :mod:`.figure`, :mod:`.explain`. Heavy imports (torch, timm, onnxruntime, matplotlib) happen
inside functions.
"""

from .categories import CATEGORIES, LABELS
from .records import BlockRow, CategoryRow, ModelProfile, OpSample, ProfileReport
from .structure import Unit

__all__ = ["CATEGORIES", "LABELS", "BlockRow", "CategoryRow", "ModelProfile", "OpSample", "ProfileReport", "Unit"]
