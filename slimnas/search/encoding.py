"""The baselines' encoding of an arch: per stage a width, a depth and an MB3D count. Plain Python.

Slimming edits specific slots, guided by the supernet's importance scores. The enumeration baselines search the
space's *structure*: per stage a width (a multiple of 16 in the space's range), a depth (active blocks) and, where the
stage allows MB3D, how many of its last active blocks are MB3D (the paper's "C_j, N_j and the last N blocks that apply
MB3D", Sec. 4.2). Active blocks occupy the first slots of each stage, the usual choice in weight-sharing NAS (OFA keeps
the first blocks of a stage); this is a decision of slimnas, recorded in each candidate's arch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from slimnas.search_spaces import IDENTITY, Arch, SearchSpace

__all__ = ["StructureChoice", "encode", "decode", "depth_choices", "mb3d_choices", "coarse"]


@dataclass(frozen=True)
class StructureChoice:
    widths: tuple[int, ...]
    depths: tuple[int, ...]
    num_3d: tuple[int, ...]


def depth_choices(space: SearchSpace, stage: int) -> tuple[int, ...]:
    return tuple(range(1, space.slots[stage] + 1)) if IDENTITY in space.kinds[stage] else (space.slots[stage],)


def mb3d_choices(space: SearchSpace, stage: int, depth: int) -> tuple[int, ...]:
    kinds, fam = space.kinds[stage], space.space_family
    if fam.tail not in kinds:
        return (0,)
    if fam.lead not in kinds:
        return (depth,)
    return tuple(range(0, depth + 1))


def decode(space: SearchSpace, choice: StructureChoice) -> Arch:
    """The arch with ``choice``'s widths, depths and MB3D counts, active blocks in the first slots."""
    blocks = []
    lead, tail = space.space_family.lead, space.space_family.tail
    for s, (depth, n3d) in enumerate(zip(choice.depths, choice.num_3d)):
        if depth not in depth_choices(space, s):
            raise ValueError(f"depths[{s}]: {depth} not possible in stage {s + 1}")
        n3d = min(n3d, depth) if lead in space.kinds[s] else depth
        if tail not in space.kinds[s]:
            n3d = 0
        kinds = [lead] * (depth - n3d) + [tail] * n3d + [IDENTITY] * (space.slots[s] - depth)
        blocks.append(tuple(kinds))
    arch = Arch(space.img_size, tuple(choice.widths), tuple(blocks), space.family)
    space.check(arch)
    return arch


def encode(arch: Arch) -> StructureChoice:
    return StructureChoice(arch.widths, arch.depths, arch.num_3d)


def coarse(values: Sequence[int], step: int) -> tuple[int, ...]:
    """Every ``step``-th value counted from the largest, plus the smallest (both ends are always kept)."""
    picked = set(list(values)[::-1][::step]) | {min(values)}
    return tuple(sorted(picked))
