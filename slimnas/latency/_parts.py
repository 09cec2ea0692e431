"""The parts a network is made of: the entries of a latency lookup table. Plain Python.

The parts are the space family's (:meth:`~slimnas.search_spaces.SpaceFamily.parts`); for EfficientFormer see
:mod:`slimnas.search_spaces.efficientformer._parts` (stem, downsample, mb4d, mb3d, to_tokens, to_grid, head). The
paper builds its table from "the on-device latency of MB4D and MB3D with different widths (multiples of 16)"
(Sec. 4.2); a network's latency is the sum of its parts, and slimnas times every part a network is made of, so the
sum leaves nothing out.
"""

from __future__ import annotations

from slimnas.search_spaces import Arch, Part, SearchSpace, get_family

__all__ = ["Part", "parts_of", "parts_of_space", "part_kinds", "repeat_key"]


def parts_of(arch: Arch, num_classes: int = 1000, in_chans: int = 3) -> list[Part]:
    """The parts of ``arch``'s standalone network, in order (identities contribute nothing)."""
    return get_family(arch.family).parts(arch, num_classes, in_chans)


def parts_of_space(space: SearchSpace, num_classes: int = 1000, in_chans: int = 3) -> list[Part]:
    """Every part any arch of ``space`` can be made of (the entries of a complete table), in build order."""
    return get_family(space.family).parts_of_space(space, num_classes, in_chans)


def part_kinds(space: SearchSpace) -> tuple[str, ...]:
    """The part kinds of ``space``'s family, in build order."""
    return get_family(space.family).part_kinds


def repeat_key(part: Part) -> str:
    """The key of ``part``'s kind and stage in ``TableMeta.repeat_factors`` (a part right after an identical one)."""
    return f"{part.kind}:{part.stage}"
