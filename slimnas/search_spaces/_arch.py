"""The architecture encoding every space family shares (plain Python, no torch).

An :class:`Arch` describes one network of a space family (:mod:`slimnas.search_spaces._family`): ``num_stages``
stages, each with a width and a sequence of *slots*. A slot is one MetaPath of the supernet (Li et al.,
"EfficientFormer: Vision Transformers at MobileNet Speed", NeurIPS 2022, Eq. 7) and holds the block kind the arch chose
for it, or the identity ``"id"``. For EfficientFormer (the default family): ``"4d"`` (MB4D, pool mixer + conv MLP),
``"3d"`` (MB3D, attention + linear MLP) or ``"id"``, over four stages at strides 4, 8, 16 and 32.

Keeping identities in their slots is what lets the slimming search (Sec. 4.2) say *which* MetaPath it removed. The
standalone network only depends on the active blocks: two archs that differ only in where their identities sit have
the same :meth:`Arch.structure_key` and build the same model.

Validity (checked on construction, ``ValueError`` naming the field), with the family's constants:

- ``img_size`` a positive multiple of ``img_step`` (EfficientFormer: 32, so every stage's token grid is whole);
- every width a positive multiple of ``width_step`` (16: the granularity of the latency tables);
- every kind one of the family's kinds;
- every stage has at least one active block;
- in every stage the tail blocks (MB3D) form a contiguous run at the end of its active blocks (lead blocks, MB4D,
  first: the paper's "dimension-consistent" design, Fig. 3).

Which kinds a stage may use (MB3D only in stages 3-4) is a property of the search space, not of the arch: see
:class:`~slimnas.search_spaces.SearchSpace`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from slimnas.errors import shorten

from ._family import DEFAULT_FAMILY, IDENTITY, SpaceFamily, get_family

__all__ = ["Arch", "BlockRef"]

@dataclass(frozen=True)
class BlockRef:
    """One active block of an arch: its stage, its supernet slot, its kind and its index among the stage's blocks."""

    stage: int
    slot: int
    kind: str
    index: int


def _as_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name}: expected an integer, got {value!r}")
    return value


@dataclass(frozen=True)
class Arch:
    """One network of a space family; frozen and hashable.

    Args:
        img_size: input resolution (square), a positive multiple of the family's ``img_step``.
        widths: channels of each stage, positive multiples of the family's ``width_step``.
        blocks: per stage, the kind in each supernet slot (EfficientFormer: ``"4d"``, ``"3d"`` or ``"id"``).
        family: the space family's name (default ``"efficientformer"``).
    """

    img_size: int
    widths: tuple[int, ...]
    blocks: tuple[tuple[str, ...], ...]
    family: str = DEFAULT_FAMILY
    _active: tuple[tuple[BlockRef, ...], ...] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        # Accept lists (e.g. from JSON) but store tuples so the arch stays hashable.
        object.__setattr__(self, "widths", tuple(self.widths))
        object.__setattr__(self, "blocks", tuple(tuple(stage) for stage in self.blocks))
        self._validate()
        active = []
        for s, stage in enumerate(self.blocks):
            refs = []
            for slot, kind in enumerate(stage):
                if kind != IDENTITY:
                    refs.append(BlockRef(stage=s, slot=slot, kind=kind, index=len(refs)))
            active.append(tuple(refs))
        object.__setattr__(self, "_active", tuple(active))

    @property
    def space_family(self) -> SpaceFamily:
        """The family object (:func:`~slimnas.search_spaces.get_family`)."""
        return get_family(self.family)

    def _validate(self) -> None:
        if not isinstance(self.family, str):
            raise ValueError(f"family: expected a name, got {self.family!r}")
        fam = get_family(self.family)
        size = _as_int(self.img_size, "img_size")
        if size <= 0 or size % fam.img_step:
            raise ValueError(f"img_size: must be a positive multiple of {fam.img_step}, got {size}")
        n = fam.num_stages
        if len(self.widths) != n:
            raise ValueError(f"widths: expected {n} stages, got {len(self.widths)}")
        for s, width in enumerate(self.widths):
            width = _as_int(width, f"widths[{s}]")
            if width <= 0 or width % fam.width_step:
                raise ValueError(f"widths[{s}]: must be a positive multiple of {fam.width_step}, got {width}")
        if len(self.blocks) != n:
            raise ValueError(f"blocks: expected {n} stages, got {len(self.blocks)}")
        kinds = fam.kinds
        for s, stage in enumerate(self.blocks):
            for slot, kind in enumerate(stage):
                if kind not in kinds:
                    raise ValueError(f"blocks[{s}][{slot}]: unknown kind {kind!r} (expected one of {kinds})")
            problem = stage_problem(fam, stage)
            if problem:
                raise ValueError(f"blocks[{s}]: {problem.format(stage=s + 1)}, got {'-'.join(stage)}")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_depths(
        cls,
        widths: Sequence[int],
        depths: Sequence[int],
        num_3d: int | Sequence[int] = 0,
        img_size: int = 224,
        slots: Sequence[int] | None = None,
        family: str = DEFAULT_FAMILY,
    ) -> Arch:
        """An arch from widths and depths with ``num_3d`` tail (MB3D) blocks closing the last stage.

        ``num_3d`` is an int (tail blocks at the end of the last stage, as in the paper's presets) or one count per
        stage. Active blocks occupy the first slots of each stage; with ``slots`` (per-stage slot counts, each >=
        depth) the remaining slots are identities.
        """
        fam = get_family(family)
        depths = [_as_int(d, f"depths[{i}]") for i, d in enumerate(depths)]
        if isinstance(num_3d, int):
            counts = [0] * (len(depths) - 1) + [num_3d]
        else:
            counts = list(num_3d)
        slots = list(depths) if slots is None else list(slots)
        if not (len(depths) == len(counts) == len(slots) == fam.num_stages):
            raise ValueError(f"depths: expected {fam.num_stages} stages for depths, num_3d and slots")
        blocks = []
        for s, (depth, n3d, n_slots) in enumerate(zip(depths, counts, slots)):
            if not 0 <= n3d <= depth:
                raise ValueError(f"num_3d[{s}]: must be between 0 and the depth {depth}, got {n3d}")
            if n_slots < depth:
                raise ValueError(f"slots[{s}]: {n_slots} slots cannot hold depth {depth}")
            if n3d and fam.tail is None:
                raise ValueError(f"num_3d[{s}]: family {family!r} has no tail kind")
            kinds = [fam.lead] * (depth - n3d) + [fam.tail] * n3d + [IDENTITY] * (n_slots - depth)
            blocks.append(tuple(kinds))
        return cls(img_size=img_size, widths=tuple(widths), blocks=tuple(blocks), family=family)

    @classmethod
    def preset(cls, name: str, img_size: int = 224, slots: Sequence[int] | None | str = "default",
               family: str = DEFAULT_FAMILY) -> Arch:
        """A named arch of the family (EfficientFormer: the paper's L1, L3 or L7, ``"l1" | "l3" | "l7"``).

        Its blocks fill the first slots of each stage and identities pad it to ``slots`` (default: the preset's own
        ``slots``; EfficientFormer's are L7's depths, so every preset lies in ``SearchSpace.preset("l7")``).
        Pass ``slots=None`` for an encoding without identities.
        """
        fam = get_family(family)
        key = name.lower()
        if key not in fam.arch_presets:
            raise ValueError(f"preset: unknown preset {name!r} (expected one of {sorted(fam.arch_presets)})")
        spec = fam.arch_presets[key]
        if slots == "default":
            slots = spec.get("slots")
        return cls.from_depths(spec["widths"], spec["depths"], spec["num_3d"], img_size=img_size, slots=slots,
                               family=family)

    # ------------------------------------------------------------------ views
    @property
    def num_stages(self) -> int:
        return len(self.widths)

    @property
    def depths(self) -> tuple[int, ...]:
        """Active blocks per stage."""
        return tuple(len(refs) for refs in self._active)

    @property
    def slots(self) -> tuple[int, ...]:
        """Slots (MetaPaths) per stage, identities included."""
        return tuple(len(stage) for stage in self.blocks)

    @property
    def num_3d(self) -> tuple[int, ...]:
        """Tail blocks (EfficientFormer's MB3D) per stage."""
        tail = get_family(self.family).tail
        return tuple(stage.count(tail) for stage in self.blocks)

    @property
    def grids(self) -> tuple[int, ...]:
        """Side of each stage's token grid (``img_size / stride``)."""
        return tuple(self.img_size // stride for stride in get_family(self.family).strides)

    def active_blocks(self, stage: int | None = None) -> tuple[BlockRef, ...]:
        """The active blocks of one stage, or of the whole network in order."""
        if stage is not None:
            return self._active[stage]
        return tuple(ref for refs in self._active for ref in refs)

    def iter_slots(self) -> Iterator[tuple[int, int, str]]:
        """Every slot in network order as ``(stage, slot, kind)``, identities included."""
        for s, stage in enumerate(self.blocks):
            for slot, kind in enumerate(stage):
                yield s, slot, kind

    def structure_key(self) -> tuple:
        """What the standalone network depends on: input size, widths and the active kinds of each stage."""
        return (self.img_size, self.widths, tuple(tuple(r.kind for r in refs) for refs in self._active))

    def same_structure(self, other: Arch) -> bool:
        return self.structure_key() == other.structure_key()

    # ------------------------------------------------------------------ edits (used by slimming)
    def with_kind(self, stage: int, slot: int, kind: str) -> Arch:
        """A copy with one slot's kind replaced (validated)."""
        blocks = [list(b) for b in self.blocks]
        blocks[stage][slot] = kind
        return Arch(self.img_size, self.widths, tuple(tuple(b) for b in blocks), self.family)

    def with_width(self, stage: int, width: int) -> Arch:
        """A copy with one stage's width replaced (validated)."""
        widths = list(self.widths)
        widths[stage] = width
        return Arch(self.img_size, tuple(widths), self.blocks, self.family)

    # ------------------------------------------------------------------ serialization
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; :meth:`from_dict` inverts it (``family`` is written when it is not the default)."""
        out: dict[str, Any] = {"img_size": self.img_size, "widths": list(self.widths),
                               "blocks": [list(b) for b in self.blocks]}
        if self.family != DEFAULT_FAMILY:
            out["family"] = self.family
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Arch:
        if not isinstance(data, Mapping):
            raise ValueError(f"arch: expected a mapping, got {type(data).__name__}")
        unknown = set(data) - {"img_size", "widths", "blocks", "family"}
        if unknown:
            raise ValueError(f"arch: unknown field(s) {sorted(unknown)}")
        for key in ("img_size", "widths", "blocks"):
            if key not in data:
                raise ValueError(f"{key}: missing")
        widths, blocks = data["widths"], data["blocks"]
        if not isinstance(widths, (list, tuple)):
            raise ValueError(f"widths: expected a list, got {type(widths).__name__}")
        if not isinstance(blocks, (list, tuple)) or not all(isinstance(b, (list, tuple)) for b in blocks):
            raise ValueError("blocks: expected a list of per-stage lists of kinds")
        family = data.get("family", DEFAULT_FAMILY)
        if not isinstance(family, str):
            raise ValueError(f"family: expected a name, got {shorten(repr(family))}")
        return cls(img_size=data["img_size"], widths=tuple(widths), blocks=tuple(tuple(b) for b in blocks),
                   family=family)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Arch:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"arch: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        return cls.from_dict(data)

    def __str__(self) -> str:
        code = {IDENTITY: ".", **get_family(self.family).kind_codes}
        stages = " | ".join(f"{w}:{''.join(code[k] for k in b)}" for w, b in zip(self.widths, self.blocks))
        label = "" if self.family == DEFAULT_FAMILY else f"{self.family} "
        return f"Arch({label}{self.img_size}px  {stages})"


def stage_problem(fam: SpaceFamily, stage: Sequence[str]) -> str | None:
    """Why a stage's kind sequence is invalid in ``fam`` (``{stage}`` left to fill), or ``None`` when it is valid:
    at least one active block, and the tail blocks a suffix of the active ones."""
    active = [k for k in stage if k != IDENTITY]
    if not active:
        return "stage {stage} has no active block"
    tail = fam.tail
    first = active.index(tail) if tail in active else len(active)
    if any(k != tail for k in active[first:]):
        label = fam.kind_labels.get(tail, tail)
        return f"{label} blocks must be a contiguous run at the end of the stage's active blocks"
    return None

