"""Where in a network an operator runs: the network's *units* (stem, each stage's downsample and blocks, the head's
modules), found from the module tree.

The rules cover timm's ViT/DeiT (``patch_embed``, ``blocks``), MetaFormer/PoolFormer, LeViT and EfficientFormer
(``stem``, ``stages[i].downsample``, ``stages[i].blocks``), the EfficientNet/MobileNet family (``conv_stem``, ``bn1``,
``blocks[i][j]``) and slimnas's own networks (eager: ``stages[i].downsample/blocks``; fused: ``downsamples[i]`` and
``stages[i]``):

- the *stage container* is the first top-level child named ``stages``, ``blocks``, ``layers`` or ``features``;
- top-level children registered before it are the stem (``patch_embed``; ``conv_stem`` + ``bn1``), those after it
  the head (``norm``, ``head``, ``classifier``, ...), one unit each;
- a stage with ``blocks`` (and maybe ``downsample``) gives those; a stage that is a plain sequence gives its children
  as blocks; a container of blocks that are not sequences is one stage (ViT).

Stages are numbered from 0 (the paper's S1 is stage 0), as in the latency tables' parts. Operators that run outside
every unit (a ViT's position-embedding add, run in the model's own ``forward``) belong to the ``top level`` unit.
Plain Python on ``torch.nn`` modules.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Unit", "TOP_LEVEL", "model_units", "unit_of_module"]

_STAGE_CONTAINERS = ("stages", "blocks", "layers", "features")


@dataclass(frozen=True)
class Unit:
    """One row of a per-block breakdown: a module of the network (``module`` is its qualified name)."""

    module: str  # qualified module name ("" for the top level)
    kind: str  # "stem" | "downsample" | "block" | "head" | "top"
    stage: int | None = None  # 0-based stage (downsample and block units)
    index: int | None = None  # block index within the stage
    type_name: str = ""  # the module's class name

    @property
    def block(self) -> str:
        """The unit's name within its stage: ``"0"``, ``"1"``, ... for blocks; the kind or module name otherwise."""
        if self.kind == "block":
            return str(self.index)
        if self.kind in ("stem", "downsample", "top"):
            return self.kind if self.kind != "stem" or self.module in ("stem", "") else f"stem:{self.module}"
        return self.module

    @property
    def label(self) -> str:
        if self.kind in ("block", "downsample"):
            return f"stage {self.stage} {self.block}"
        return self.block


#: The unit of operators that run outside every other unit.
TOP_LEVEL = Unit(module="", kind="top", type_name="")


def _is_sequence(module: Any) -> bool:
    from torch import nn

    return isinstance(module, (nn.Sequential, nn.ModuleList))


def _is_identity(module: Any) -> bool:
    from torch import nn

    return isinstance(module, nn.Identity)


def _stage_units(stage: Any, prefix: str, index: int) -> list[Unit]:
    units: list[Unit] = []
    downsample = getattr(stage, "downsample", None)
    if downsample is not None and not _is_identity(downsample):
        units.append(Unit(f"{prefix}.downsample", "downsample", index, None, type(downsample).__name__))
    blocks = getattr(stage, "blocks", None)
    if blocks is not None and _is_sequence(blocks):
        children, where = list(blocks.named_children()), f"{prefix}.blocks"
    elif _is_sequence(stage):
        children, where = list(stage.named_children()), prefix
    else:
        return units + [Unit(prefix, "block", index, 0, type(stage).__name__)]
    position = 0
    for name, child in children:
        if _is_identity(child):
            continue
        units.append(Unit(f"{where}.{name}", "block", index, position, type(child).__name__))
        position += 1
    return units


def model_units(model: Any) -> list[Unit]:
    """The units of ``model``, in module order (see the module docstring); every unit's ``module`` is a qualified
    name of ``model.named_modules()``."""
    children = list(model.named_children())
    names = [n for n, _ in children]
    container = next((n for n in _STAGE_CONTAINERS if n in names and _is_sequence(getattr(model, n))), None)
    if container is None:  # no recognizable stages: every top-level child is one unit
        return [Unit(n, "head", None, None, type(c).__name__) for n, c in children if not _is_identity(c)]
    position = names.index(container)
    stages = list(getattr(model, container).named_children())
    nested = bool(stages) and all(_is_sequence(c) or hasattr(c, "blocks") for _, c in stages)
    downsamples = getattr(model, "downsamples", None)
    units: list[Unit] = []
    for name, child in children[:position]:
        if name == "downsamples" or _is_identity(child):
            continue
        units.append(Unit(name, "stem", None, None, type(child).__name__))
    if nested:
        for i, (name, stage) in enumerate(stages):
            if downsamples is not None and _is_sequence(downsamples) and i < len(downsamples) \
                    and not _is_identity(downsamples[i]):
                units.append(Unit(f"downsamples.{i}", "downsample", i, None, type(downsamples[i]).__name__))
            units += _stage_units(stage, f"{container}.{name}", i)
    else:
        units += _stage_units(getattr(model, container), container, 0)
    for name, child in children[position + 1:]:
        if name == "downsamples" or _is_identity(child):
            continue
        if not any(True for _ in child.modules()) or _has_no_compute(child):
            continue
        units.append(Unit(name, "head", None, None, type(child).__name__))
    return units


def _has_no_compute(module: Any) -> bool:
    """Dropout and identity modules (no operators at inference)."""
    from torch import nn

    return isinstance(module, (nn.Identity, nn.Dropout))


def unit_of_module(qualified: str, units: Sequence[Unit]) -> Unit:
    """The unit holding the module ``qualified`` (the longest unit name that is it or a prefix of it), else
    :data:`TOP_LEVEL`."""
    best: Unit | None = None
    for unit in units:
        if qualified == unit.module or qualified.startswith(unit.module + "."):
            if best is None or len(unit.module) > len(best.module):
                best = unit
    return best or TOP_LEVEL
