"""EfficientFormer as a space family (:class:`~slimnas.search_spaces.SpaceFamily`): the built-in ``efficientformer``.

Kinds: MB4D (``"4d"``, the lead kind) and MB3D (``"3d"``, the tail kind closing a stage, Fig. 3 of Li et al., NeurIPS
2022), four stages at strides 4-32, widths in steps of 16, inputs in steps of 32. Eq. 7's search space: MB4D or identity
in stages 1-2, MB4D, MB3D or identity in stages 3-4. The torch members import their modules when first called.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .._arch import Arch
from .._family import IDENTITY, Part, SpaceFamily
from .._space import SearchSpace
from ._constants import (
    GROUPS,
    KIND_3D,
    KIND_4D,
    NUM_STAGES,
    PART_KINDS,
    PRESETS,
    SPACE_PRESETS,
    STAGE_STRIDES,
    WIDTH_STEP,
)

__all__ = ["EfficientFormerFamily", "FAMILY"]

_STAGE12 = (KIND_4D, IDENTITY)
_STAGE34 = (KIND_4D, KIND_3D, IDENTITY)


class EfficientFormerFamily(SpaceFamily):
    """The EfficientFormer family (see the module docstring)."""

    name = "efficientformer"
    lead = KIND_4D
    tail = KIND_3D
    num_stages = NUM_STAGES
    strides = STAGE_STRIDES
    width_step = WIDTH_STEP
    img_step = 32
    default_kinds = (_STAGE12, _STAGE12, _STAGE34, _STAGE34)
    kind_codes = {KIND_4D: "4", KIND_3D: "3"}
    kind_labels = {KIND_4D: "MB4D", KIND_3D: "MB3D"}
    space_presets = SPACE_PRESETS
    arch_presets = PRESETS
    part_kinds = PART_KINDS
    part_groups = GROUPS

    # ------------------------------------------------------------------ latency parts
    # numpy-based (imported on first use, so the encoding stays plain Python)
    def parts(self, arch: Arch, num_classes: int = 1000, in_chans: int = 3) -> list[Part]:
        from . import _parts

        return _parts.parts_of(arch, num_classes, in_chans)

    def parts_of_space(self, space: SearchSpace, num_classes: int = 1000, in_chans: int = 3) -> list[Part]:
        from . import _parts

        return _parts.parts_of_space(space, num_classes, in_chans)

    def features(self, archs: Sequence[Arch]) -> Any:
        from . import _parts

        return _parts.arch_features(archs, self.num_stages)

    def part_summer(self, values: Mapping[Part, float], space: SearchSpace, num_classes: int, in_chans: int,
                    repeat_values: Mapping[Part, float] | None = None) -> Callable[[Any], dict[str, Any]]:
        from . import _parts

        return _parts.dense_summer(values, space, num_classes, in_chans, repeat_values)

    def parts_of_row(self, feats: Any, row: int, num_classes: int, in_chans: int) -> list[Part]:
        from . import _parts

        return _parts.parts_of_row(feats, row, num_classes, in_chans)

    # ------------------------------------------------------------------ networks
    def build_model(self, arch: Arch, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> Any:
        from ._model import build_model

        return build_model(arch, num_classes=num_classes, in_chans=in_chans, **kwargs)

    def deploy(self, model: Any) -> Any:
        from ._fuse import fuse_for_inference

        return fuse_for_inference(model)

    def supernet(self, space: SearchSpace, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> Any:
        from ._supernet import SuperNet

        return SuperNet(space, num_classes=num_classes, in_chans=in_chans, **kwargs)

    def part_module(self, part: Part, img_size: int, batch: int = 1, form: str = "fused") -> tuple[Any, Any]:
        from ._part_modules import part_module

        return part_module(part, img_size, batch, form)

    def network_parts(self, arch: Arch, batch: int = 1, form: str = "fused", num_classes: int = 1000,
                      in_chans: int = 3) -> tuple[Any, list[Any], Any]:
        from ._part_modules import network_parts

        return network_parts(arch, batch, form, num_classes, in_chans)


#: The registered instance (entry point ``slimnas.spaces: efficientformer``).
FAMILY = EfficientFormerFamily()
