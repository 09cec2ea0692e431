"""The supernet's bounds: a search space of a family (Li et al., NeurIPS 2022, Sec. 4.2, Eq. 7). Plain Python.

A :class:`SearchSpace` fixes the family, the input size, each stage's maximum width and number of slots (MetaPaths), the
kinds each stage's slots may take (EfficientFormer, Eq. 7: ``{MB4D, I}`` in stages 1-2, ``{MB4D, MB3D, I}`` in stages
3-4) and the minimum width. The supernet is single-width: every stage at its maximum width.

``space.sample(rng)`` is uniform over the *valid archs* of the space: widths uniform over their multiples of the
family's width step, and each stage's slot kinds uniform over the valid kind sequences (at least one active block; the
tail kind a suffix of the active blocks). Uniform over archs is not uniform per slot: a stage of ``n`` slots has far
more valid sequences with about ``n/2`` active blocks than with one, so samples concentrate there.
``sample(rng, per_slot=True)`` draws each slot's kind independently instead (resampling invalid draws), which is what a
Gumbel sampler with uniform alpha does.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ._arch import Arch, stage_problem
from ._family import DEFAULT_FAMILY, IDENTITY, SpaceFamily, get_family

__all__ = ["SearchSpace"]


def _rng(rng: random.Random | int | None) -> random.Random:
    return rng if isinstance(rng, random.Random) else random.Random(rng)


@dataclass(frozen=True)
class SearchSpace:
    """Bounds of the single-width supernet.

    Args:
        name: a label stored with latency tables and checkpoints.
        img_size: input resolution.
        max_widths: each stage's (supernet) width, a multiple of the family's width step.
        slots: each stage's number of MetaPaths.
        kinds: each stage's allowed kinds; default the family's (EfficientFormer: Eq. 7).
        min_widths: each stage's smallest width (default one width step).
        family: the space family's name (default ``"efficientformer"``).
    """

    name: str
    img_size: int
    max_widths: tuple[int, ...]
    slots: tuple[int, ...]
    kinds: tuple[tuple[str, ...], ...] | None = None
    min_widths: tuple[int, ...] | int | None = None
    family: str = DEFAULT_FAMILY

    def __post_init__(self) -> None:
        fam = get_family(self.family)
        n, step, all_kinds = fam.num_stages, fam.width_step, fam.kinds
        object.__setattr__(self, "max_widths", tuple(self.max_widths))
        object.__setattr__(self, "slots", tuple(self.slots))
        if self.kinds is None:
            object.__setattr__(self, "kinds", fam.default_kinds)
        for s, ks in enumerate(self.kinds):
            bad = [k for k in ks if k not in all_kinds]
            if bad:
                raise ValueError(f"kinds[{s}]: unknown kind(s) {bad} (expected some of {all_kinds})")
        object.__setattr__(self, "kinds", tuple(tuple(k for k in all_kinds if k in ks) for ks in self.kinds))
        if self.min_widths is None:
            object.__setattr__(self, "min_widths", step)
        if isinstance(self.min_widths, int):
            object.__setattr__(self, "min_widths", (self.min_widths,) * n)
        object.__setattr__(self, "min_widths", tuple(self.min_widths))
        for field_name in ("max_widths", "slots", "kinds", "min_widths"):
            if len(getattr(self, field_name)) != n:
                raise ValueError(f"{field_name}: expected {n} stages")
        for s in range(n):
            lo, hi = self.min_widths[s], self.max_widths[s]
            if lo <= 0 or lo % step or hi % step or lo > hi:
                raise ValueError(f"min_widths[{s}]/max_widths[{s}]: need multiples of {step} with "
                                 f"0 < min <= max, got {lo} and {hi}")
            if self.slots[s] < 1:
                raise ValueError(f"slots[{s}]: need at least one slot, got {self.slots[s]}")
            if not set(self.kinds[s]) - {IDENTITY}:
                raise ValueError(f"kinds[{s}]: a stage needs at least one block kind besides identity")
        # The max arch must itself be valid (img_size multiple of 32, ...): raises ValueError naming the field.
        self.max_arch()

    # ------------------------------------------------------------------ presets
    @property
    def space_family(self) -> SpaceFamily:
        """The family object (:func:`~slimnas.search_spaces.get_family`)."""
        return get_family(self.family)

    @property
    def num_stages(self) -> int:
        return len(self.slots)

    @classmethod
    def preset(cls, name: str, family: str | None = None) -> SearchSpace:
        """A named space: EfficientFormer's ``"l7"`` (contains L1, L3 and L7), ``"l3"``, ``"l1"`` or ``"tiny"``
        (digits), or a preset of another registered family (``family`` to say which; otherwise the name is looked up
        in EfficientFormer's presets, then in every other family's)."""
        from ._presets import find_space_preset

        fam, key, spec = find_space_preset(name, family)
        return cls(name=key, family=fam, **spec)

    # ------------------------------------------------------------------ queries
    def width_choices(self, stage: int) -> tuple[int, ...]:
        return tuple(range(self.min_widths[stage], self.max_widths[stage] + 1, get_family(self.family).width_step))

    @property
    def grids(self) -> tuple[int, ...]:
        return self.max_arch().grids

    def max_arch(self) -> Arch:
        """The supernet's own arch (:meth:`SpaceFamily.max_arch`; EfficientFormer: maximum widths, every slot MB4D
        except MB3D in the last stage when allowed, as in L7).

        The supernet contains every kind in every slot; this is the densest *standalone* arch (all slots active), the
        starting point of slimming.
        """
        return get_family(self.family).max_arch(self)

    def check(self, arch: Arch) -> None:
        """Raise ``ValueError`` naming the first field of ``arch`` outside this space."""
        if not isinstance(arch, Arch):
            raise ValueError(f"arch: expected an Arch, got {type(arch).__name__}")
        if arch.family != self.family:
            raise ValueError(f"family: the arch is a {arch.family!r} network, the space is {self.family!r}")
        if arch.img_size != self.img_size:
            raise ValueError(f"img_size: {arch.img_size} differs from the space's {self.img_size}")
        for s in range(self.num_stages):
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
        per_active = (lambda m: m + 1) if len(set(kinds) - {IDENTITY}) == 2 else (lambda m: 1)
        if IDENTITY not in kinds:
            return [0] * n + [per_active(n)]
        return [0] + [math.comb(n, m) * per_active(m) for m in range(1, n + 1)]

    def num_archs(self) -> int:
        """The number of valid archs in the space."""
        total = 1
        for s in range(self.num_stages):
            total *= len(self.width_choices(s)) * sum(self._stage_counts(s))
        return total

    def sample(self, rng: random.Random | int | None = None, per_slot: bool = False) -> Arch:
        """A random valid arch of the space (uniform over archs; see the module docstring for ``per_slot``)."""
        rng = _rng(rng)
        widths = tuple(rng.choice(self.width_choices(s)) for s in range(self.num_stages))
        blocks = []
        for s in range(self.num_stages):
            blocks.append(self._sample_slots_per_slot(s, rng) if per_slot else self._sample_slots(s, rng))
        return Arch(self.img_size, widths, tuple(blocks), self.family)

    def _sample_slots(self, stage: int, rng: random.Random) -> tuple[str, ...]:
        n, kinds = self.slots[stage], self.kinds[stage]
        counts = self._stage_counts(stage)
        m = rng.choices(range(n + 1), weights=counts)[0]
        positions = sorted(rng.sample(range(n), m))
        fam = get_family(self.family)
        lead, tail = fam.lead, fam.tail
        if lead in kinds and tail in kinds:
            num_3d = rng.randint(0, m)
        else:
            num_3d = m if lead not in kinds else 0
        active = [lead] * (m - num_3d) + [tail] * num_3d
        out = [IDENTITY] * n
        for pos, kind in zip(positions, active):
            out[pos] = kind
        return tuple(out)

    def _sample_slots_per_slot(self, stage: int, rng: random.Random) -> tuple[str, ...]:
        while True:
            draw = tuple(rng.choice(self.kinds[stage]) for _ in range(self.slots[stage]))
            if stage_problem(get_family(self.family), draw) is None:
                return draw

    # ------------------------------------------------------------------ serialization
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``family`` written when it is not the default); :meth:`from_dict` inverts it."""
        extra = {} if self.family == DEFAULT_FAMILY else {"family": self.family}
        return {
            **extra,
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
        known = {"name", "img_size", "max_widths", "slots", "kinds", "min_widths", "family"}
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
        if not isinstance(kwargs.get("family", DEFAULT_FAMILY), str):
            raise ValueError("space.family: expected a family name")
        if "kinds" in kwargs:
            all_kinds = get_family(kwargs.get("family", DEFAULT_FAMILY)).kinds
            for s, ks in enumerate(kwargs["kinds"]):
                bad = [k for k in ks if k not in all_kinds]
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
