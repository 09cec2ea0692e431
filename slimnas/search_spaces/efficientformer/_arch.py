"""The EfficientFormer architecture encoding (plain Python, no torch).

An :class:`Arch` describes one network of the EfficientFormer family (Li et al., "EfficientFormer: Vision
Transformers at MobileNet Speed", NeurIPS 2022, Sec. 4.1-4.2): four stages at strides 4, 8, 16 and 32, each with a
width ``C_j`` and a sequence of *slots*. A slot is one MetaPath of the supernet (Eq. 7) and holds the block kind the
arch chose for it: ``"4d"`` (MB4D, pool mixer + conv MLP), ``"3d"`` (MB3D, attention + linear MLP) or ``"id"`` (the
identity path I).

Keeping identities in their slots is what lets the slimming search (Sec. 4.2) say *which* MetaPath it removed. The
standalone network only depends on the active blocks: two archs that differ only in where their identities sit have
the same :meth:`Arch.structure_key` and build the same model.

Validity (checked on construction, ``ValueError`` naming the field):

- ``img_size`` a positive multiple of 32 (the token grid of every stage is then a whole number);
- every width a positive multiple of 16 (:data:`WIDTH_STEP`, the granularity of the latency tables);
- every kind one of :data:`KINDS`;
- every stage has at least one active block;
- in every stage the MB3D blocks form a contiguous run at the end of its active blocks (MB4D blocks first: the
  paper's "dimension-consistent" design, Fig. 3).

Which kinds a stage may use (MB3D only in stages 3-4) is a property of the search space, not of the arch: see
:class:`~slimnas.search_spaces.efficientformer.SearchSpace`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "KIND_4D",
    "KIND_3D",
    "KIND_ID",
    "KINDS",
    "NUM_STAGES",
    "STAGE_STRIDES",
    "WIDTH_STEP",
    "PRESETS",
    "PRESET_SLOTS",
    "Arch",
    "BlockRef",
]

KIND_4D = "4d"
KIND_3D = "3d"
KIND_ID = "id"
#: Block kinds in the order the supernet keeps its architecture parameters.
KINDS: tuple[str, ...] = (KIND_4D, KIND_3D, KIND_ID)
NUM_STAGES = 4
#: Output stride of each stage (the stem has stride 4; each later stage starts with a stride-2 downsample).
STAGE_STRIDES: tuple[int, ...] = (4, 8, 16, 32)
#: Widths are multiples of 16: the paper's latency table granularity and the slimming step (Sec. 4.2).
WIDTH_STEP = 16
_IMG_STEP = 32

#: The paper's (and timm's) presets: widths, depths, and the number of MB3D blocks at the end of stage 4.
PRESETS: dict[str, dict[str, tuple[int, ...] | int]] = {
    "l1": {"widths": (48, 96, 224, 448), "depths": (3, 2, 6, 4), "num_3d": 1},
    "l3": {"widths": (64, 128, 320, 512), "depths": (4, 4, 12, 6), "num_3d": 4},
    "l7": {"widths": (96, 192, 384, 768), "depths": (6, 6, 18, 8), "num_3d": 8},
}
#: Slot counts of the presets' arch encoding: L7's depths, so that every preset lies in ``SearchSpace.preset("l7")``.
PRESET_SLOTS: tuple[int, ...] = (6, 6, 18, 8)


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
    """One network of the EfficientFormer space; frozen and hashable.

    Args:
        img_size: input resolution (square), a positive multiple of 32.
        widths: channels of each of the four stages, positive multiples of 16.
        blocks: per stage, the kind in each supernet slot (``"4d"``, ``"3d"`` or ``"id"``).
    """

    img_size: int
    widths: tuple[int, ...]
    blocks: tuple[tuple[str, ...], ...]
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
                if kind != KIND_ID:
                    refs.append(BlockRef(stage=s, slot=slot, kind=kind, index=len(refs)))
            active.append(tuple(refs))
        object.__setattr__(self, "_active", tuple(active))

    def _validate(self) -> None:
        size = _as_int(self.img_size, "img_size")
        if size <= 0 or size % _IMG_STEP:
            raise ValueError(f"img_size: must be a positive multiple of {_IMG_STEP}, got {size}")
        if len(self.widths) != NUM_STAGES:
            raise ValueError(f"widths: expected {NUM_STAGES} stages, got {len(self.widths)}")
        for s, width in enumerate(self.widths):
            width = _as_int(width, f"widths[{s}]")
            if width <= 0 or width % WIDTH_STEP:
                raise ValueError(f"widths[{s}]: must be a positive multiple of {WIDTH_STEP}, got {width}")
        if len(self.blocks) != NUM_STAGES:
            raise ValueError(f"blocks: expected {NUM_STAGES} stages, got {len(self.blocks)}")
        for s, stage in enumerate(self.blocks):
            for slot, kind in enumerate(stage):
                if kind not in KINDS:
                    raise ValueError(f"blocks[{s}][{slot}]: unknown kind {kind!r} (expected one of {KINDS})")
            active = [k for k in stage if k != KIND_ID]
            if not active:
                raise ValueError(f"blocks[{s}]: stage {s + 1} has no active block")
            first_3d = active.index(KIND_3D) if KIND_3D in active else len(active)
            if any(k != KIND_3D for k in active[first_3d:]):
                raise ValueError(
                    f"blocks[{s}]: MB3D blocks must be a contiguous run at the end of the stage's active blocks, "
                    f"got {'-'.join(stage)}"
                )

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_depths(
        cls,
        widths: Sequence[int],
        depths: Sequence[int],
        num_3d: int | Sequence[int] = 0,
        img_size: int = 224,
        slots: Sequence[int] | None = None,
    ) -> Arch:
        """An arch from widths and depths with ``num_3d`` MB3D blocks closing the last stage.

        ``num_3d`` is an int (MB3D blocks at the end of stage 4, as in the paper's presets) or one count per stage.
        Active blocks occupy the first slots of each stage; with ``slots`` (per-stage slot counts, each >= depth) the
        remaining slots are identities.
        """
        depths = [_as_int(d, f"depths[{i}]") for i, d in enumerate(depths)]
        if isinstance(num_3d, int):
            counts = [0] * (len(depths) - 1) + [num_3d]
        else:
            counts = list(num_3d)
        slots = list(depths) if slots is None else list(slots)
        if not (len(depths) == len(counts) == len(slots) == NUM_STAGES):
            raise ValueError(f"depths: expected {NUM_STAGES} stages for depths, num_3d and slots")
        blocks = []
        for s, (depth, n3d, n_slots) in enumerate(zip(depths, counts, slots)):
            if not 0 <= n3d <= depth:
                raise ValueError(f"num_3d[{s}]: must be between 0 and the depth {depth}, got {n3d}")
            if n_slots < depth:
                raise ValueError(f"slots[{s}]: {n_slots} slots cannot hold depth {depth}")
            kinds = [KIND_4D] * (depth - n3d) + [KIND_3D] * n3d + [KIND_ID] * (n_slots - depth)
            blocks.append(tuple(kinds))
        return cls(img_size=img_size, widths=tuple(widths), blocks=tuple(blocks))

    @classmethod
    def preset(cls, name: str, img_size: int = 224, slots: Sequence[int] | None = PRESET_SLOTS) -> Arch:
        """The paper's L1, L3 or L7 (``"l1" | "l3" | "l7"``).

        Its blocks fill the first slots of each stage and identities pad it to ``slots`` (L7's depths by default), so
        every preset lies in ``SearchSpace.preset("l7")``. Pass ``slots=None`` for an encoding without identities.
        """
        key = name.lower()
        if key not in PRESETS:
            raise ValueError(f"preset: unknown preset {name!r} (expected one of {sorted(PRESETS)})")
        spec = PRESETS[key]
        return cls.from_depths(spec["widths"], spec["depths"], spec["num_3d"], img_size=img_size, slots=slots)

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
        """MB3D blocks per stage."""
        return tuple(stage.count(KIND_3D) for stage in self.blocks)

    @property
    def grids(self) -> tuple[int, ...]:
        """Side of each stage's token grid (``img_size / stride``)."""
        return tuple(self.img_size // stride for stride in STAGE_STRIDES)

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
        return Arch(self.img_size, self.widths, tuple(tuple(b) for b in blocks))

    def with_width(self, stage: int, width: int) -> Arch:
        """A copy with one stage's width replaced (validated)."""
        widths = list(self.widths)
        widths[stage] = width
        return Arch(self.img_size, tuple(widths), self.blocks)

    # ------------------------------------------------------------------ serialization
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; :meth:`from_dict` inverts it."""
        return {"img_size": self.img_size, "widths": list(self.widths), "blocks": [list(b) for b in self.blocks]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Arch:
        if not isinstance(data, Mapping):
            raise ValueError(f"arch: expected a mapping, got {type(data).__name__}")
        unknown = set(data) - {"img_size", "widths", "blocks"}
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
        return cls(img_size=data["img_size"], widths=tuple(widths), blocks=tuple(tuple(b) for b in blocks))

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
        code = {KIND_4D: "4", KIND_3D: "3", KIND_ID: "."}
        stages = " | ".join(f"{w}:{''.join(code[k] for k in b)}" for w, b in zip(self.widths, self.blocks))
        return f"Arch({self.img_size}px  {stages})"

