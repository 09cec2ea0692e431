"""The parts a network of the space is made of: the entries of a latency lookup table. Plain Python.

The paper builds its table from "the on-device latency of MB4D and MB3D with different widths (multiples of 16)"
(Sec. 4.2); a network's latency is the sum of its parts. slimnas times every part a network is made of, so the sum
leaves nothing out:

============  =========================================  ===============================================
kind          one entry per                              what it is
============  =========================================  ===============================================
``stem``      stage-1 width                              the two stride-2 convs (input: the image)
``downsample`` stage 2-4, (input width, output width)    stride-2 conv between stages
``mb4d``      stage allowing MB4D, width                 one MB4D block at the stage's resolution
``mb3d``      stage allowing MB3D, width                 one MB3D block on the stage's tokens
``to_tokens`` stage allowing MB3D, and the last stage    the 4D -> 3D reshape
``to_grid``   stage (not the last) allowing MB3D         the 3D -> 4D reshape before the next downsample
``head``      last-stage width                           final LayerNorm, token mean, classifier
============  =========================================  ===============================================

Stage indices are 0-based (stage 0 is the paper's S1). ``c_in`` and ``c_out`` are the part's input and output
channels (for ``head``, the class count is ``c_out``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from slimnas.search_spaces.efficientformer import KIND_3D, KIND_4D, NUM_STAGES, Arch, SearchSpace

__all__ = ["Part", "PART_KINDS", "GROUPS", "GROUP_OF", "parts_of", "parts_of_space", "ArchFeatures", "arch_features"]

PART_KINDS = ("stem", "downsample", "mb4d", "mb3d", "to_tokens", "to_grid", "head")
#: Groups of part kinds that a calibration corrects together (:class:`~slimnas.latency.CalibratedPredictor`).
GROUPS: dict[str, tuple[str, ...]] = {
    "stem": ("stem",), "downsample": ("downsample",), "mb4d": ("mb4d",), "mb3d": ("mb3d",),
    "reshape": ("to_tokens", "to_grid"), "head": ("head",),
}
GROUP_OF: dict[str, str] = {kind: group for group, kinds in GROUPS.items() for kind in kinds}


@dataclass(frozen=True, order=True)
class Part:
    """One lookup-table entry: a part ``kind`` of stage ``stage`` with ``c_in`` input and ``c_out`` output channels."""

    kind: str
    stage: int
    c_in: int
    c_out: int

    def __post_init__(self) -> None:
        if self.kind not in PART_KINDS:
            raise ValueError(f"part.kind: unknown part kind {self.kind!r} (expected one of {PART_KINDS})")

    def __str__(self) -> str:
        if self.kind == "downsample":
            return f"downsample(stage {self.stage + 1}, {self.c_in}->{self.c_out})"
        if self.kind == "stem":
            return f"stem(width {self.c_out})"
        if self.kind == "head":
            return f"head(width {self.c_in}, {self.c_out} classes)"
        return f"{self.kind}(stage {self.stage + 1}, width {self.c_out})"


def parts_of(arch: Arch, num_classes: int = 1000, in_chans: int = 3) -> list[Part]:
    """The parts of ``arch``'s standalone network, in order (identities contribute nothing)."""
    w = arch.widths
    parts = [Part("stem", 0, in_chans, w[0])]
    last = arch.num_stages - 1
    for s in range(arch.num_stages):
        if s:
            parts.append(Part("downsample", s, w[s - 1], w[s]))
        tokens = False
        for ref in arch.active_blocks(s):
            if ref.kind == KIND_4D:
                parts.append(Part("mb4d", s, w[s], w[s]))
            else:
                if not tokens:
                    parts.append(Part("to_tokens", s, w[s], w[s]))
                    tokens = True
                parts.append(Part("mb3d", s, w[s], w[s]))
        if tokens and s < last:
            parts.append(Part("to_grid", s, w[s], w[s]))
        elif not tokens and s == last:
            parts.append(Part("to_tokens", s, w[s], w[s]))
    parts.append(Part("head", last, w[last], num_classes))
    return parts


def parts_of_space(space: SearchSpace, num_classes: int = 1000, in_chans: int = 3) -> list[Part]:
    """Every part any arch of ``space`` can be made of (the entries of a complete table), in build order."""
    choices = [space.width_choices(s) for s in range(NUM_STAGES)]
    last = NUM_STAGES - 1
    parts = [Part("stem", 0, in_chans, w) for w in choices[0]]
    for s in range(NUM_STAGES):
        if s:
            parts += [Part("downsample", s, a, b) for a in choices[s - 1] for b in choices[s]]
        if KIND_4D in space.kinds[s]:
            parts += [Part("mb4d", s, w, w) for w in choices[s]]
        if KIND_3D in space.kinds[s]:
            parts += [Part("mb3d", s, w, w) for w in choices[s]]
        if KIND_3D in space.kinds[s] or s == last:
            parts += [Part("to_tokens", s, w, w) for w in choices[s]]
        if KIND_3D in space.kinds[s] and s < last:
            parts += [Part("to_grid", s, w, w) for w in choices[s]]
    parts += [Part("head", last, w, num_classes) for w in choices[last]]
    return parts


@dataclass(frozen=True)
class ArchFeatures:
    """Many archs as integer arrays (``n x 4``), for vectorized prediction."""

    widths: np.ndarray
    n4d: np.ndarray
    n3d: np.ndarray
    to_tokens: np.ndarray
    to_grid: np.ndarray


def arch_features(archs: Sequence[Arch] | Iterable[Arch]) -> ArchFeatures:
    """Widths, per-stage MB4D/MB3D counts and reshape counts of every arch (the whole decomposition of
    :func:`parts_of` in array form)."""
    rows_w, rows_4, rows_3 = [], [], []
    for arch in archs:
        rows_w.append(arch.widths)
        n3 = arch.num_3d
        rows_3.append(n3)
        rows_4.append(tuple(d - t for d, t in zip(arch.depths, n3)))
    widths = np.asarray(rows_w, dtype=np.int64).reshape(-1, NUM_STAGES)
    n4d = np.asarray(rows_4, dtype=np.int64).reshape(-1, NUM_STAGES)
    n3d = np.asarray(rows_3, dtype=np.int64).reshape(-1, NUM_STAGES)
    has3 = (n3d > 0).astype(np.int64)
    to_tokens = has3.copy()
    to_tokens[:, -1] = 1  # the last stage always reaches tokens: before its first MB3D, or before the head
    to_grid = has3.copy()
    to_grid[:, -1] = 0
    return ArchFeatures(widths, n4d, n3d, to_tokens, to_grid)
