"""What can be searched: space families, the encoding they share, and the built-in EfficientFormer family.

Plain Python (no torch): :class:`SpaceFamily` (the interface a family implements, see ``_family``), :class:`Part`,
:func:`get_family`, the shared encoding :class:`Arch`, :class:`SearchSpace`, :class:`Importance`, and the export hint
:func:`onnx_blocked_layout`. Families are registered in :data:`slimnas.registry.SPACES` (entry-point group
``slimnas.spaces``); ``efficientformer`` is built in.
"""

from ._arch import Arch, BlockRef
from ._export_hints import onnx_blocked_layout
from ._family import DEFAULT_FAMILY, IDENTITY, Part, SpaceFamily, SuperNetLike, forget_family, get_family, iter_families
from ._importance import Importance, importance_from_alphas, metapath_importance
from ._presets import find_space_preset, space_preset_names
from ._space import SearchSpace

__all__ = ["Arch", "BlockRef", "SearchSpace", "Importance", "importance_from_alphas", "metapath_importance",
           "SpaceFamily", "SuperNetLike", "Part", "IDENTITY", "DEFAULT_FAMILY", "get_family", "forget_family",
           "iter_families", "find_space_preset", "space_preset_names", "onnx_blocked_layout"]
