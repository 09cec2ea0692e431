"""The parts an EfficientFormer network is made of: the entries of its latency lookup tables. Plain Python + numpy.

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
channels (for ``head``, the class count is ``c_out``). :func:`arch_features` and :func:`dense_summer` are the
vectorized form of :func:`parts_of` that the latency tables predict with (thousands of archs per call).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._arch import Arch
from .._family import Part
from .._space import SearchSpace
from ._constants import GROUPS, KIND_3D, KIND_4D, PART_KINDS, WIDTH_STEP

__all__ = ["PART_KINDS", "GROUPS", "parts_of", "parts_of_space", "ArchFeatures", "arch_features", "dense_summer",
           "parts_of_row"]



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
    n = space.num_stages
    choices = [space.width_choices(s) for s in range(n)]
    last = n - 1
    parts = [Part("stem", 0, in_chans, w) for w in choices[0]]
    for s in range(n):
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

    def __len__(self) -> int:
        return len(self.widths)


def arch_features(archs: Sequence[Arch] | Iterable[Arch], num_stages: int = 4) -> ArchFeatures:
    """Widths, per-stage MB4D/MB3D counts and reshape counts of every arch (the whole decomposition of
    :func:`parts_of` in array form)."""
    rows_w, rows_4, rows_3 = [], [], []
    for arch in archs:
        rows_w.append(arch.widths)
        n3 = arch.num_3d
        rows_3.append(n3)
        rows_4.append(tuple(d - t for d, t in zip(arch.depths, n3)))
    widths = np.asarray(rows_w, dtype=np.int64).reshape(-1, num_stages)
    n4d = np.asarray(rows_4, dtype=np.int64).reshape(-1, num_stages)
    n3d = np.asarray(rows_3, dtype=np.int64).reshape(-1, num_stages)
    has3 = (n3d > 0).astype(np.int64)
    to_tokens = has3.copy()
    to_tokens[:, -1] = 1  # the last stage always reaches tokens: before its first MB3D, or before the head
    to_grid = has3.copy()
    to_grid[:, -1] = 0
    return ArchFeatures(widths, n4d, n3d, to_tokens, to_grid)


def _dense(values: Mapping[Part, float], space: SearchSpace, num_classes: int, in_chans: int) -> dict[str, Any]:
    """``values`` as arrays indexed by ``width // 16`` (``nan`` where a part has no value)."""
    n = space.num_stages
    size = max(max(space.max_widths), max((max(p.c_in, p.c_out) for p in values if p.kind != "head"),
                                          default=0)) // WIDTH_STEP + 1
    nan1 = lambda: np.full(size, np.nan)  # noqa: E731
    dense: dict[str, Any] = {
        "stem": nan1(), "head": nan1(),
        "downsample": [np.full((size, size), np.nan) for _ in range(n)],
        "mb4d": [nan1() for _ in range(n)], "mb3d": [nan1() for _ in range(n)],
        "to_tokens": [nan1() for _ in range(n)], "to_grid": [nan1() for _ in range(n)],
        "size": size,
    }
    for part, value in values.items():
        if part.kind == "stem":
            if part.c_in == in_chans:
                dense["stem"][part.c_out // WIDTH_STEP] = value
        elif part.kind == "head":
            if part.c_out == num_classes:
                dense["head"][part.c_in // WIDTH_STEP] = value
        elif part.kind == "downsample":
            dense["downsample"][part.stage][part.c_in // WIDTH_STEP, part.c_out // WIDTH_STEP] = value
        elif part.kind in dense:
            dense[part.kind][part.stage][part.c_out // WIDTH_STEP] = value
    return dense


def dense_summer(values: Mapping[Part, float], space: SearchSpace, num_classes: int, in_chans: int,
                 repeat_values: Mapping[Part, float] | None = None) -> Callable[[ArchFeatures], dict[str, np.ndarray]]:
    """Per part kind, each arch's sum of ``values`` over its parts, vectorized over :class:`ArchFeatures` rows
    (``nan`` where a part is missing or a width lies outside the table). ``repeat_values``: the value of the second
    and later MB4D (MB3D) of a stage, which follow an identical block (default: ``values``)."""
    dense = _dense(values, space, num_classes, in_chans)
    again = dense if repeat_values is None else _dense(repeat_values, space, num_classes, in_chans)

    def sums(feats: ArchFeatures) -> dict[str, np.ndarray]:
        n = len(feats.widths)
        raw = feats.widths // WIDTH_STEP
        inside = np.all((raw < dense["size"]) & (raw >= 0) & (feats.widths % WIDTH_STEP == 0), axis=1)
        idx = np.where(inside[:, None], raw, 0)

        def counted(table: np.ndarray, stage: int, counts: np.ndarray) -> np.ndarray:
            return np.where(counts > 0, counts * table[idx[:, stage]], 0.0)

        def run(kind: str, stage: int, counts: np.ndarray) -> np.ndarray:  # a run of identical blocks
            if again is dense:
                return counted(dense[kind][stage], stage, counts)
            return counted(dense[kind][stage], stage, np.minimum(counts, 1)) + counted(again[kind][stage], stage,
                                                                                       counts - 1)

        zeros = np.zeros(n)
        out = {"stem": dense["stem"][idx[:, 0]], "downsample": zeros.copy(), "mb4d": zeros.copy(),
               "mb3d": zeros.copy(), "to_tokens": zeros.copy(), "to_grid": zeros.copy(),
               "head": dense["head"][idx[:, -1]]}
        for s in range(feats.widths.shape[1]):
            if s:
                out["downsample"] = out["downsample"] + dense["downsample"][s][idx[:, s - 1], idx[:, s]]
            out["mb4d"] = out["mb4d"] + run("mb4d", s, feats.n4d[:, s])
            out["mb3d"] = out["mb3d"] + run("mb3d", s, feats.n3d[:, s])
            out["to_tokens"] = out["to_tokens"] + counted(dense["to_tokens"][s], s, feats.to_tokens[:, s])
            out["to_grid"] = out["to_grid"] + counted(dense["to_grid"][s], s, feats.to_grid[:, s])
        outside = ~inside
        if outside.any():
            for values_ in out.values():
                values_[outside] = np.nan
        return out

    return sums


def parts_of_row(feats: ArchFeatures, row: int, num_classes: int, in_chans: int) -> list[Part]:
    """The parts of arch ``row`` of ``feats``, in network order (the order of :func:`parts_of`, one per kind)."""
    w = [int(v) for v in feats.widths[row]]
    n = len(w)
    wanted = [Part("stem", 0, in_chans, w[0])]
    for s in range(n):
        if s:
            wanted.append(Part("downsample", s, w[s - 1], w[s]))
        for kind, counts in (("mb4d", feats.n4d), ("to_tokens", feats.to_tokens), ("mb3d", feats.n3d),
                             ("to_grid", feats.to_grid)):
            if counts[row, s] > 0:
                wanted.append(Part(kind, s, w[s], w[s]))
    wanted.append(Part("head", n - 1, w[-1], num_classes))
    return wanted
