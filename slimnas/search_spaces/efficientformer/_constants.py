"""EfficientFormer's kinds, stages and presets (Li et al., NeurIPS 2022, Sec. 4.1-4.2). Plain Python."""

from __future__ import annotations

from typing import Any

from .._family import IDENTITY

__all__ = ["KIND_4D", "KIND_3D", "KIND_ID", "KINDS", "NUM_STAGES", "STAGE_STRIDES", "WIDTH_STEP", "PRESETS",
           "PRESET_SLOTS", "SPACE_PRESETS", "PART_KINDS", "GROUPS"]

KIND_4D = "4d"
KIND_3D = "3d"
KIND_ID = IDENTITY
#: Block kinds in the order the supernet keeps its architecture parameters.
KINDS: tuple[str, ...] = (KIND_4D, KIND_3D, KIND_ID)
NUM_STAGES = 4
#: Output stride of each stage (the stem has stride 4; each later stage starts with a stride-2 downsample).
STAGE_STRIDES: tuple[int, ...] = (4, 8, 16, 32)
#: Widths are multiples of 16: the paper's latency table granularity and the slimming step (Sec. 4.2).
WIDTH_STEP = 16

#: Slot counts of the presets' arch encoding: L7's depths, so that every preset lies in ``SearchSpace.preset("l7")``.
PRESET_SLOTS: tuple[int, ...] = (6, 6, 18, 8)
#: The paper's (and timm's) presets: widths, depths, and the number of MB3D blocks at the end of stage 4.
PRESETS: dict[str, dict[str, Any]] = {
    "l1": {"widths": (48, 96, 224, 448), "depths": (3, 2, 6, 4), "num_3d": 1, "slots": PRESET_SLOTS},
    "l3": {"widths": (64, 128, 320, 512), "depths": (4, 4, 12, 6), "num_3d": 4, "slots": PRESET_SLOTS},
    "l7": {"widths": (96, 192, 384, 768), "depths": (6, 6, 18, 8), "num_3d": 8, "slots": PRESET_SLOTS},
}

#: Named spaces. ``l7`` holds the L1, L3 and L7 presets; ``tiny`` is sized for the bundled UCI digits data (8x8 digits
#: upsampled to 64x64) so that one supernet epoch on 2 CPU cores takes seconds.
SPACE_PRESETS: dict[str, dict[str, Any]] = {
    "l7": {"img_size": 224, "max_widths": (96, 192, 384, 768), "slots": (6, 6, 18, 8)},
    "l3": {"img_size": 224, "max_widths": (64, 128, 320, 512), "slots": (4, 4, 12, 6)},
    "l1": {"img_size": 224, "max_widths": (48, 96, 224, 448), "slots": (3, 2, 6, 4)},
    "tiny": {"img_size": 64, "max_widths": (32, 64, 96, 128), "slots": (2, 2, 4, 3)},
}

#: The parts of EfficientFormer's latency tables (:mod:`._parts`), in build order.
PART_KINDS: tuple[str, ...] = ("stem", "downsample", "mb4d", "mb3d", "to_tokens", "to_grid", "head")
#: Groups of part kinds that a calibration corrects together (:class:`~slimnas.latency.CalibratedPredictor`).
GROUPS: dict[str, tuple[str, ...]] = {
    "stem": ("stem",), "downsample": ("downsample",), "mb4d": ("mb4d",), "mb3d": ("mb3d",),
    "reshape": ("to_tokens", "to_grid"), "head": ("head",),
}
