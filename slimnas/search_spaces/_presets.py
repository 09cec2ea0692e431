"""Looking up a named space across the registered families. Plain Python."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._family import DEFAULT_FAMILY, get_family, iter_families

__all__ = ["find_space_preset", "space_preset_names"]


def find_space_preset(name: str, family: str | None = None) -> tuple[str, str, Mapping[str, Any]]:
    """``(family, preset, fields)`` of the space preset ``name``: in ``family`` when given, else in EfficientFormer's
    presets first, then in the other registered families' (the first family, by name, that has it)."""
    if not isinstance(name, str):
        raise ValueError(f"space: expected a preset name, got {name!r}")
    key = name.lower()
    if family is not None:
        fam = get_family(family)
        if key not in fam.space_presets:
            raise ValueError(f"space: unknown preset {name!r} of family {family!r} "
                             f"(expected one of {sorted(fam.space_presets)})")
        return family, key, fam.space_presets[key]
    default = get_family(DEFAULT_FAMILY)
    if key in default.space_presets:
        return DEFAULT_FAMILY, key, default.space_presets[key]
    for fam in iter_families():
        if key in fam.space_presets:
            return fam.name, key, fam.space_presets[key]
    raise ValueError(f"space: unknown preset {name!r} (expected one of {space_preset_names()})")


def space_preset_names() -> list[str]:
    """Every family's space presets (EfficientFormer's first)."""
    names = sorted(get_family(DEFAULT_FAMILY).space_presets)
    for fam in iter_families():
        names += [n for n in sorted(fam.space_presets) if n not in names]
    return names
