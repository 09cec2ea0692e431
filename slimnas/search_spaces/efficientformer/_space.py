"""The supernet's bounds: the EfficientFormer search space (Li et al., NeurIPS 2022, Sec. 4.2, Eq. 7). Plain Python.

A :class:`SearchSpace` fixes the input size, each stage's maximum width and number of slots (MetaPaths), the kinds each
stage's slots may take (Eq. 7: ``{MB4D, I}`` in stages 1-2, ``{MB4D, MB3D, I}`` in stages 3-4) and the minimum width.
The supernet is single-width: every stage at its maximum width.

``space.sample(rng)`` is uniform over the *valid archs* of the space: widths uniform over their multiples of 16, and
each stage's slot kinds uniform over the valid kind sequences (at least one active block; MB3D a suffix of the active
blocks). Uniform over archs is not uniform per slot: a stage of ``n`` slots has far more valid sequences with about
``n/2`` active blocks than with one, so samples concentrate there. ``sample(rng, per_slot=True)`` draws each slot's
kind independently instead (resampling invalid draws), which is what a Gumbel sampler with uniform alpha does.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ._arch import KIND_3D, KIND_4D, KIND_ID, KINDS, NUM_STAGES, WIDTH_STEP, Arch

__all__ = ["SearchSpace", "SPACE_PRESETS"]

_STAGE12 = (KIND_4D, KIND_ID)
_STAGE34 = (KIND_4D, KIND_3D, KIND_ID)

#: Named spaces. ``l7`` holds the L1, L3 and L7 presets; ``tiny`` is sized for the bundled UCI digits data (8x8 digits
#: upsampled to 64x64) so that one supernet epoch on 2 CPU cores takes seconds.
SPACE_PRESETS: dict[str, dict[str, Any]] = {
    "l7": {"img_size": 224, "max_widths": (96, 192, 384, 768), "slots": (6, 6, 18, 8)},
    "l3": {"img_size": 224, "max_widths": (64, 128, 320, 512), "slots": (4, 4, 12, 6)},
    "l1": {"img_size": 224, "max_widths": (48, 96, 224, 448), "slots": (3, 2, 6, 4)},
    "tiny": {"img_size": 64, "max_widths": (32, 64, 96, 128), "slots": (2, 2, 4, 3)},
}


def _valid_stage(kinds: tuple[str, ...]) -> bool:
    """At least one active block, and the MB3D blocks a suffix of the active ones (see ``Arch``)."""
    active = [k for k in kinds if k != KIND_ID]
    if not active:
        return False
    first_3d = active.index(KIND_3D) if KIND_3D in active else len(active)
    return all(k == KIND_3D for k in active[first_3d:])


def _rng(rng: random.Random | int | None) -> random.Random:
    return rng if isinstance(rng, random.Random) else random.Random(rng)


@dataclass(frozen=True)
class SearchSpace:
    """Bounds of the single-width supernet.

    Args:
        name: a label stored with latency tables and checkpoints.
        img_size: input resolution.
        max_widths: each stage's (supernet) width, a multiple of 16.
        slots: each stage's number of MetaPaths.
        kinds: each stage's allowed kinds; default Eq. 7.
        min_widths: each stage's smallest width (default 16).
    """

    name: str
    img_size: int
    max_widths: tuple[int, ...]
    slots: tuple[int, ...]
    kinds: tuple[tuple[str, ...], ...] = (_STAGE12, _STAGE12, _STAGE34, _STAGE34)
    min_widths: tuple[int, ...] = (WIDTH_STEP,) * NUM_STAGES

    def __post_init__(self) -> None:
        object.__setattr__(self, "max_widths", tuple(self.max_widths))
        object.__setattr__(self, "slots", tuple(self.slots))
        for s, ks in enumerate(self.kinds):
            bad = [k for k in ks if k not in KINDS]
            if bad:
                raise ValueError(f"kinds[{s}]: unknown kind(s) {bad} (expected some of {KINDS})")
        object.__setattr__(self, "kinds", tuple(tuple(k for k in KINDS if k in ks) for ks in self.kinds))
        if isinstance(self.min_widths, int):
            object.__setattr__(self, "min_widths", (self.min_widths,) * NUM_STAGES)
        object.__setattr__(self, "min_widths", tuple(self.min_widths))
        for field_name in ("max_widths", "slots", "kinds", "min_widths"):
            if len(getattr(self, field_name)) != NUM_STAGES:
                raise ValueError(f"{field_name}: expected {NUM_STAGES} stages")
        for s in range(NUM_STAGES):
            lo, hi = self.min_widths[s], self.max_widths[s]
            if lo <= 0 or lo % WIDTH_STEP or hi % WIDTH_STEP or lo > hi:
                raise ValueError(f"min_widths[{s}]/max_widths[{s}]: need multiples of {WIDTH_STEP} with "
                                 f"0 < min <= max, got {lo} and {hi}")
            if self.slots[s] < 1:
                raise ValueError(f"slots[{s}]: need at least one slot, got {self.slots[s]}")
            if KIND_4D not in self.kinds[s] and KIND_3D not in self.kinds[s]:
                raise ValueError(f"kinds[{s}]: a stage needs at least one block kind besides identity")
        # The max arch must itself be valid (img_size multiple of 32, ...): raises ValueError naming the field.
        self.max_arch()

    # ------------------------------------------------------------------ presets
    @classmethod
    def preset(cls, name: str) -> SearchSpace:
        """``"l7"`` (contains L1, L3 and L7), ``"l3"``, ``"l1"`` or ``"tiny"`` (digits)."""
        key = name.lower()
        if key not in SPACE_PRESETS:
            raise ValueError(f"space: unknown preset {name!r} (expected one of {sorted(SPACE_PRESETS)})")
        return cls(name=key, **SPACE_PRESETS[key])

    # ------------------------------------------------------------------ queries
    def width_choices(self, stage: int) -> tuple[int, ...]:
        return tuple(range(self.min_widths[stage], self.max_widths[stage] + 1, WIDTH_STEP))

    @property
    def grids(self) -> tuple[int, ...]:
        return self.max_arch().grids

    def max_arch(self) -> Arch:
        """The supernet's own arch: maximum widths, every slot MB4D except MB3D in the last stage when allowed.

        The supernet contains every kind in every slot; this is the densest *standalone* arch (all slots active), the
        starting point of slimming. The last stage is all MB3D when allowed (as in L7), otherwise all MB4D.
        """
        blocks = []
        for s in range(NUM_STAGES):
            kind = KIND_3D if (s == NUM_STAGES - 1 and KIND_3D in self.kinds[s]) else KIND_4D
            if kind not in self.kinds[s]:
                kind = KIND_3D
            blocks.append((kind,) * self.slots[s])
        return Arch(self.img_size, self.max_widths, tuple(blocks))

    def check(self, arch: Arch) -> None:
        """Raise ``ValueError`` naming the first field of ``arch`` outside this space."""
        if not isinstance(arch, Arch):
            raise ValueError(f"arch: expected an Arch, got {type(arch).__name__}")
        if arch.img_size != self.img_size:
            raise ValueError(f"img_size: {arch.img_size} differs from the space's {self.img_size}")
        for s in range(NUM_STAGES):
            lo, hi = self.min_widths[s], self.max_widths[s]
            if not lo <= arch.widths[s] <= hi:
                raise ValueError(f"widths[{s}]: {arch.widths[s]} outside the space's range [{lo}, {hi}]")
            if len(arch.blocks[s]) != self.slots[s]:
                raise ValueError(f"blocks[{s}]: {len(arch.blocks[s])} slots, the space has {self.slots[s]}")
            for slot, kind in enumerate(arch.blocks[s]):
                if kind not in self.kinds[s]:
                    raise ValueError(f"blocks[{s}][{slot}]: kind {kind!r} not allowed in stage {s + 1} "
                                     f"(allowed: {self.kinds[s]})")

    def contains(self, arch: Arch) -> bool:
        try:
            self.check(arch)
        except ValueError:
            return False
        return True

    # ------------------------------------------------------------------ counting and sampling
    def _stage_counts(self, stage: int) -> list[int]:
        """Number of valid kind sequences of the stage with ``m`` active blocks, for m = 0..slots."""
        n, kinds = self.slots[stage], self.kinds[stage]
        per_active = (lambda m: m + 1) if (KIND_4D in kinds and KIND_3D in kinds) else (lambda m: 1)
        if KIND_ID not in kinds:
            return [0] * n + [per_active(n)]
        return [0] + [math.comb(n, m) * per_active(m) for m in range(1, n + 1)]

    def num_archs(self) -> int:
        """The number of valid archs in the space."""
        total = 1
        for s in range(NUM_STAGES):
            total *= len(self.width_choices(s)) * sum(self._stage_counts(s))
        return total

    def sample(self, rng: random.Random | int | None = None, per_slot: bool = False) -> Arch:
        """A random valid arch of the space (uniform over archs; see the module docstring for ``per_slot``)."""
        rng = _rng(rng)
        widths = tuple(rng.choice(self.width_choices(s)) for s in range(NUM_STAGES))
        blocks = []
        for s in range(NUM_STAGES):
            blocks.append(self._sample_slots_per_slot(s, rng) if per_slot else self._sample_slots(s, rng))
        return Arch(self.img_size, widths, tuple(blocks))

    def _sample_slots(self, stage: int, rng: random.Random) -> tuple[str, ...]:
        n, kinds = self.slots[stage], self.kinds[stage]
        counts = self._stage_counts(stage)
        m = rng.choices(range(n + 1), weights=counts)[0]
        positions = sorted(rng.sample(range(n), m))
        if KIND_4D in kinds and KIND_3D in kinds:
            num_3d = rng.randint(0, m)
        else:
            num_3d = m if KIND_4D not in kinds else 0
        active = [KIND_4D] * (m - num_3d) + [KIND_3D] * num_3d
        out = [KIND_ID] * n
        for pos, kind in zip(positions, active):
            out[pos] = kind
        return tuple(out)

    def _sample_slots_per_slot(self, stage: int, rng: random.Random) -> tuple[str, ...]:
        while True:
            draw = tuple(rng.choice(self.kinds[stage]) for _ in range(self.slots[stage]))
            if _valid_stage(draw):
                return draw

    # ------------------------------------------------------------------ serialization
    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "img_size": self.img_size,
            "max_widths": list(self.max_widths),
            "slots": list(self.slots),
            "kinds": [list(k) for k in self.kinds],
            "min_widths": list(self.min_widths),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SearchSpace:
        if not isinstance(data, Mapping):
            raise ValueError(f"space: expected a mapping, got {type(data).__name__}")
        known = {"name", "img_size", "max_widths", "slots", "kinds", "min_widths"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"space: unknown field(s) {sorted(unknown)}")
        for key in ("name", "img_size", "max_widths", "slots"):
            if key not in data:
                raise ValueError(f"space.{key}: missing")
        kwargs = dict(data)
        for key in ("max_widths", "slots", "min_widths"):
            if key in kwargs:
                kwargs[key] = tuple(kwargs[key])
        if "kinds" in kwargs:
            for s, ks in enumerate(kwargs["kinds"]):
                bad = [k for k in ks if k not in KINDS]
                if bad:
                    raise ValueError(f"space.kinds[{s}]: unknown kind(s) {bad}")
            kwargs["kinds"] = tuple(tuple(k) for k in kwargs["kinds"])
        return cls(**kwargs)

    @classmethod
    def resolve(cls, spec: SearchSpace | str | Mapping[str, Any]) -> SearchSpace:
        """A space from itself, a preset name, or a dict."""
        if isinstance(spec, SearchSpace):
            return spec
        if isinstance(spec, str):
            return cls.preset(spec)
        return cls.from_dict(spec)
