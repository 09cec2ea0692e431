"""The EfficientFormer search space (Li et al., "EfficientFormer: Vision Transformers at MobileNet Speed", 2022).

Plain Python (importable without torch): :data:`FAMILY` (the registered :class:`~slimnas.search_spaces.SpaceFamily`),
:class:`Arch`, :class:`SearchSpace`, :class:`Importance` (the shared encoding, re-exported) and the constants.
Torch-based (imported on first use): :func:`build_model`, :class:`EfficientFormer`, :class:`SuperNet`,
:func:`fuse_for_inference` and the blocks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from slimnas._lazy import lazy_attributes

from .._arch import Arch, BlockRef
from .._importance import Importance, importance_from_alphas, metapath_importance
from .._space import SearchSpace
from ._constants import KIND_3D, KIND_4D, KIND_ID, KINDS, NUM_STAGES, PRESETS, SPACE_PRESETS, STAGE_STRIDES, WIDTH_STEP
from ._family import FAMILY, EfficientFormerFamily

if TYPE_CHECKING:
    from ._blocks import MB3D, MB4D, Downsample, Stem, Unflat, onnx_blocked_layout
    from ._fuse import fuse_for_inference
    from ._model import EfficientFormer, build_model
    from ._supernet import MetaPath, SuperNet, arch_from_timm_state_dict

__all__ = [
    "Arch", "BlockRef", "SearchSpace", "Importance", "importance_from_alphas", "metapath_importance",
    "KIND_3D", "KIND_4D", "KIND_ID", "KINDS", "NUM_STAGES", "PRESETS", "SPACE_PRESETS", "STAGE_STRIDES", "WIDTH_STEP",
    "FAMILY", "EfficientFormerFamily",
    "build_model", "EfficientFormer", "SuperNet", "MetaPath", "fuse_for_inference", "arch_from_timm_state_dict",
    "MB3D", "MB4D", "Downsample", "Stem", "Unflat", "onnx_blocked_layout",
]

_LAZY = {
    "build_model": "._model", "EfficientFormer": "._model",
    "SuperNet": "._supernet", "MetaPath": "._supernet", "arch_from_timm_state_dict": "._supernet",
    "fuse_for_inference": "._fuse",
    "MB3D": "._blocks", "MB4D": "._blocks", "Downsample": "._blocks", "Stem": "._blocks", "Unflat": "._blocks",
    "onnx_blocked_layout": "._blocks",
}


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())
