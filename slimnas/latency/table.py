"""Latency lookup tables (Li et al., NeurIPS 2022, Sec. 4.2): measured parts, Parquet storage, additive prediction.

One table = one (backend, device, batch size, dtype, input size, threads, space), recorded in :class:`TableMeta`. A
network's predicted latency is the sum of its parts' measured latencies (:mod:`slimnas.latency._parts`). A part the
table lacks raises :class:`MissingEntryError` naming it: never a silent zero.

A table predicts with the statistic of the protocol it was measured with (``meta.protocol``, see
:mod:`slimnas.latency.protocol`; ``median`` for tables without one), so its predictions estimate what validation and a
search job's final measurements measure.

Storage: Apache Parquet through PyArrow, one row per part (``kind, stage, c_in, c_out``, the statistics in
milliseconds, the sample count and, from format version 2, ``passes`` and ``disturbed``: the accepted and dropped
passes) and the metadata as JSON under the schema metadata key ``slimnas.latency``. No pickle. Files are written
atomically (temporary file, then ``os.replace``). Version-1 files (no ``p25``/``min`` columns, no protocol) still load.
Plain Python, NumPy and PyArrow: no torch.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from slimnas._io import atomic_write
from slimnas.errors import InputError
from slimnas.search_spaces import Arch, Part, SearchSpace, SpaceFamily

from ._parts import parts_of, parts_of_space, repeat_key
from ._timing import STATS, Timing
from .protocol import Protocol
from .reference import MEDIAN

__all__ = ["LatencyTable", "TableMeta", "MissingEntryError", "FORMAT", "FORMAT_VERSION"]

FORMAT = "slimnas-latency-table"
#: 3: a calibration may hold per-part coefficients (``TableMeta.calibration["parts"]``), which a reader of version 2
#: would ignore and so mispredict; version-2 files hold none and still load.
FORMAT_VERSION = 3
_META_KEY = b"slimnas.latency"
_SCHEMA = pa.schema([
    ("kind", pa.string()), ("stage", pa.int16()), ("c_in", pa.int32()), ("c_out", pa.int32()),
    ("median_ms", pa.float64()), ("mean_ms", pa.float64()), ("p10_ms", pa.float64()), ("p90_ms", pa.float64()),
    ("std_ms", pa.float64()), ("count", pa.int32()), ("p25_ms", pa.float64()), ("min_ms", pa.float64()),
    ("passes", pa.int32()), ("disturbed", pa.int32()), ("weight_mib", pa.float64()),
])
#: The columns every version has (version 1 lacks the rest).
_V1_COLUMNS = ("kind", "stage", "c_in", "c_out", "median_ms", "mean_ms", "p10_ms", "p90_ms", "std_ms", "count")


class MissingEntryError(InputError):
    """The table has no measurement for a part the arch needs."""


#: Above this share of disturbed passes in a build's covering networks, :meth:`TableMeta.disturbed_build` warns.
DISTURBED_BUILD_SHARE = 0.5


@dataclass(frozen=True)
class TableMeta:
    """What a table's numbers depend on. The first block of fields is the table's identity."""

    backend: str
    device: str
    batch: int
    dtype: str
    img_size: int
    threads: int | None
    space: dict[str, Any]
    form: str = "fused"
    num_classes: int = 1000
    in_chans: int = 3
    options: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    created: str = ""
    notes: dict[str, Any] = field(default_factory=dict)
    protocol: dict[str, Any] | None = None  # the measurement protocol (Protocol.to_dict()); None in old tables
    harness: str = "isolated"  # how parts were timed: "context" (inside running networks) or "isolated"
    overhead_ms: float = 0.0  # added once to every prediction: a network's time outside its parts
    reference: dict[str, Any] | None = None  # reference networks and their latency at build time (latency.reference)
    # The working-set term of parts timed in context (slimnas.latency.context): a part's time inside a network grows
    # by exp(slope * (W - at)) with the network's weights W (MiB); entries are at W = at. 0: no such term.
    context_slope_per_mib: float = 0.0
    context_at_mib: float = 0.0
    # Parts timed alone: a calibration fitted at build time on measured whole networks ({"coef": {group: c},
    # "intercept": ms, "networks": n}, and per part {"parts": [[kind, stage, c_in, c_out, c], ...]} from format 3);
    # predictions are then sum_g c_g * S_g + intercept, each part counted at c times its entry. None: none.
    calibration: dict[str, Any] | None = None
    # Parts timed in context: a part right after an identical one (a repeated block) counts at its entry times
    # repeat_factors["kind:stage"] (slimnas.latency.context); a kind and stage not listed: 1. Entries are the time of
    # the first block of a run.
    repeat_factors: dict[str, float] = field(default_factory=dict)

    def reference_archs(self) -> list[Arch]:
        return [Arch.from_dict(a) for a in (self.reference or {}).get("archs", [])]

    def reference_ms(self) -> list[float]:
        return [float(v) for v in (self.reference or {}).get("ms", [])]

    def reference_pooling(self) -> str:
        """How the build pooled its reference networks' measurements (``latency.reference``): ``quiet``, or
        ``median`` for tables built before the field."""
        return str((self.reference or {}).get("pooling", MEDIAN))

    def identity(self) -> dict[str, Any]:
        """The fields two measurement sessions must share to be merged into one table."""
        return {k: getattr(self, k) for k in ("backend", "device", "batch", "dtype", "img_size", "threads", "space",
                                              "form", "num_classes", "in_chans", "options", "harness")}

    def search_space(self) -> SearchSpace:
        return SearchSpace.from_dict(self.space)

    def measurement_protocol(self) -> Protocol:
        """The protocol the entries were measured with (older tables: the default protocol's settings with the
        median, the statistic they predicted with, pooling every accepted pass)."""
        return Protocol.from_dict(self.protocol or {})

    @property
    def statistic(self) -> str:
        return str((self.protocol or {}).get("statistic", "median"))

    def disturbed_build(self) -> str | None:
        """A warning, in one sentence, when the build's covering networks had more than :data:`DISTURBED_BUILD_SHARE`
        of their passes disturbed (``notes``: ``context_disturbed`` of ``context_passes``); ``None`` otherwise, and for
        tables whose build recorded no such count. The 38 torch-cpu builds kept from the Xeon and Zen 4 VMs had 1-41%
        of their passes disturbed and met their validations; two quickstart builds on a noisier VM had 58-60%, and
        their tables ranked networks at Kendall tau 0.94 and 0.65 (``docs/benchmarks.md``, "A third kind of
        machine")."""
        passes, disturbed = (self.notes or {}).get("context_passes"), (self.notes or {}).get("context_disturbed")
        if not isinstance(passes, (int, float)) or not isinstance(disturbed, (int, float)) or passes <= 0:
            return None
        share = disturbed / passes
        if share <= DISTURBED_BUILD_SHARE:
            return None
        return (f"the machine was disturbed for much of this table's build ({100 * share:.0f}% of its covering "
                f"networks' passes, {int(disturbed)} of {int(passes)}): its entries may rank networks poorly; "
                f"validate it, and build it again when the machine is quieter")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TableMeta:
        known = {f for f in cls.__dataclass_fields__}
        missing = {"backend", "device", "batch", "dtype", "img_size", "threads", "space"} - set(data)
        if missing:
            raise InputError(f"lut: metadata lacks {sorted(missing)}")
        return cls(**{k: v for k, v in data.items() if k in known})

    def part_coefficients(self) -> dict[Part, float]:
        """The calibration's per-part coefficients (empty: none); ``ValueError`` naming a malformed row."""
        if self.calibration is None:
            return {}
        if not isinstance(self.calibration, dict):
            raise ValueError("calibration: expected a mapping")
        rows = self.calibration.get("parts") or []
        if not isinstance(rows, list):
            raise ValueError("calibration.parts: expected a list of [kind, stage, c_in, c_out, coefficient] rows")
        out: dict[Part, float] = {}
        for row in rows:
            if not (isinstance(row, list) and len(row) == 5 and isinstance(row[0], str)
                    and all(isinstance(v, int) and not isinstance(v, bool) for v in row[1:4])
                    and isinstance(row[4], (int, float)) and not isinstance(row[4], bool)
                    and np.isfinite(row[4]) and row[4] >= 0):
                raise ValueError(f"calibration.parts: malformed row {str(row)[:80]}")
            out[Part(row[0], row[1], row[2], row[3])] = float(row[4])
        return out

    def describe(self) -> str:
        threads = "" if self.threads is None else f", {self.threads} threads"
        options = "".join(f", {k} {v}" for k, v in sorted(self.options.items()))
        return (f"{self.backend} on {self.device}, batch {self.batch}, {self.dtype}, {self.img_size}px{threads}, "
                f"space {self.space.get('name', '?')}, {self.form} form{options}, parts timed {self.harness}, "
                f"{self.statistic}" + (f", calibrated{' per part' if self.calibration.get('parts') else ''} on "
                                       f"{self.calibration.get('networks')} networks" if self.calibration else ""))


class LatencyTable:
    """Measured latency of every part (see :mod:`._parts`), and the additive predictor on top.

    Args:
        entries: part -> timing statistics (milliseconds).
        meta: what the numbers depend on.
        stat: which statistic predictions add up (default: the statistic of the table's protocol).
        passes: accepted and disturbed passes per part, ``{part: (passes, disturbed)}`` (recorded, not used to
            predict).
        weights: each part's weights in MiB (the working-set term of :meth:`predict`).
    """

    def __init__(self, entries: Mapping[Part, Timing], meta: TableMeta, stat: str | None = None,
                 passes: Mapping[Part, tuple[int, int]] | None = None,
                 weights: Mapping[Part, float] | None = None) -> None:
        stat = stat or meta.statistic
        if stat not in STATS:
            raise ValueError(f"stat: expected one of {STATS}, got {stat!r}")
        self.entries: dict[Part, Timing] = dict(entries)
        self.meta = meta
        self.stat = stat
        self.passes: dict[Part, tuple[int, int]] = dict(passes or {})
        self.weights: dict[Part, float] = dict(weights or {})
        self._space = meta.search_space()
        self._family: SpaceFamily = self._space.space_family
        self._summers: dict[bool, Any] = {}
        self._part_coef = meta.part_coefficients()

    # ------------------------------------------------------------------ queries
    @property
    def space(self) -> SearchSpace:
        return self._space

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, part: Part) -> bool:
        return part in self.entries

    def with_stat(self, stat: str) -> LatencyTable:
        return LatencyTable(self.entries, self.meta, stat, self.passes, self.weights)

    def entry(self, part: Part) -> float:
        try:
            value = self.entries[part].get(self.stat)
        except KeyError:
            raise MissingEntryError(f"latency table has no entry for {part} ({self.meta.describe()})") from None
        if not np.isfinite(value):
            raise MissingEntryError(f"latency table has no {self.stat} for {part} (an older table; it has the median)")
        return value

    def parts(self, arch: Arch) -> list[Part]:
        """The parts of ``arch`` at this table's class count and input channels."""
        if arch.img_size != self.meta.img_size:
            raise InputError(f"arch.img_size: {arch.img_size} differs from the table's {self.meta.img_size}px")
        return parts_of(arch, self.meta.num_classes, self.meta.in_chans)

    def missing(self, arch: Arch) -> list[Part]:
        """The distinct parts of ``arch`` this table has no entry for, in network order (empty: it can predict)."""
        return list(dict.fromkeys(p for p in self.parts(arch) if p not in self.entries))

    def missing_for_space(self) -> list[Part]:
        """Parts of the table's own space that it lacks (empty for a complete table)."""
        return [p for p in parts_of_space(self._space, self.meta.num_classes, self.meta.in_chans)
                if p not in self.entries]

    def predict(self, arch: Arch) -> float:
        """Predicted latency of ``arch`` in milliseconds: the sum of its parts' entries (a repeated block's times its
        kind's repeat factor), times the working-set term ``exp(slope * (W - at))`` (``W``: the arch's weights in MiB;
        parts timed in context only), plus the per-network overhead (``meta.overhead_ms``)."""
        parts, constant = self.contributions(arch)
        return float(sum(v for _, v in parts)) + constant

    def _weight(self, part: Part) -> float:
        if not self.meta.context_slope_per_mib:
            return 0.0
        try:
            return self.weights[part]
        except KeyError:
            raise MissingEntryError(f"latency table has no weight size for {part}") from None

    def _context_factor(self, weights_mib: float | np.ndarray) -> float | np.ndarray:
        slope = self.meta.context_slope_per_mib
        return np.exp(slope * (weights_mib - self.meta.context_at_mib)) if slope else 1.0

    def breakdown(self, arch: Arch) -> list[tuple[Part, float]]:
        return [(p, self.entry(p)) for p in self.parts(arch)]

    def contributions(self, arch: Arch) -> tuple[list[tuple[Part, float]], float]:
        """What :meth:`predict` adds up for ``arch``: each part's entry as the prediction counts it (a repeated block's
        times its repeat factor; times the working-set term, or the calibration's coefficients of its group and of the
        part), in network order, and the constant (overhead, or the calibration's intercept); their sum is
        :meth:`predict`'s value up to rounding."""
        parts = self.parts(arch)
        values = [self.entry(p) * self._part_coef.get(p, 1.0) * (self._repeat_factor(p) if i and parts[i - 1] == p
                                                                 else 1.0) for i, p in enumerate(parts)]
        if self.meta.calibration:
            coef = self.meta.calibration["coef"]
            return ([(p, v * coef.get(self._family.group_of(p.kind), 1.0)) for p, v in zip(parts, values)],
                    float(self.meta.calibration["intercept"]))
        factor = float(self._context_factor(sum(self._weight(p) for p in parts)))
        return [(p, v * factor) for p, v in zip(parts, values)], float(self.meta.overhead_ms)

    def _repeat_factor(self, part: Part) -> float:
        return float(self.meta.repeat_factors.get(repeat_key(part), 1.0))

    # ------------------------------------------------------------------ vectorized prediction
    def _summer(self, weights: bool = False) -> Any:
        """The family's part sums over this table's values (entries at ``stat``, or weights), built once."""
        summer = self._summers.get(weights)
        if summer is None:
            values = dict(self.weights) if weights else {p: t.get(self.stat) * self._part_coef.get(p, 1.0)
                                                         for p, t in self.entries.items()}
            shape = (self._space, self.meta.num_classes, self.meta.in_chans)
            if weights or not self.meta.repeat_factors:  # a family's own part_summer may not take repeat values
                summer = self._family.part_summer(values, *shape)
            else:
                repeats = {p: v * self._repeat_factor(p) for p, v in values.items()}
                summer = self._family.part_summer(values, *shape, repeat_values=repeats)
            self._summers[weights] = summer
        return summer

    def predict_many(self, archs: Sequence[Arch] | Iterable[Arch]) -> np.ndarray:
        """Predicted latency (ms) of many archs at once, vectorized over archs (same values as :meth:`predict`)."""
        return self.predict_features(self._features(archs))

    def predict_by_kind(self, archs: Sequence[Arch] | Iterable[Arch]) -> dict[str, np.ndarray]:
        """Per part kind, the summed latency (ms) of each arch's parts of that kind (vectorized over archs), and the
        per-network ``overhead``."""
        return self.predict_features_by_kind(self._features(archs))

    def _features(self, archs: Sequence[Arch] | Iterable[Arch]) -> Any:
        archs = list(archs)
        for arch in archs:
            if arch.img_size != self.meta.img_size or arch.family != self._space.family:
                self.parts(arch)  # raises, naming the field
        return self._family.features(archs)

    def predict_features(self, feats: Any) -> np.ndarray:
        """:meth:`predict_many` from the family's :meth:`~slimnas.search_spaces.SpaceFamily.features` (what the Ray
        latency service receives)."""
        columns = self.predict_features_by_kind(feats)
        return sum(columns.values()) if columns else np.zeros(0)

    def predict_features_by_kind(self, feats: Any) -> dict[str, np.ndarray]:
        n = self._family.num_rows(feats)
        if n == 0:
            return {}
        out = self._summer()(feats)
        bad = np.flatnonzero(np.isnan(sum(out.values())))
        if bad.size:
            row = int(bad[0])
            part = self._first_missing(feats, row)
            what = "entry" if part not in self.entries else f"{self.stat} (an older table)"
            raise MissingEntryError(f"latency table has no {what} for {part} needed by arch #{row} "
                                    f"({self.meta.describe()})")
        if self.meta.context_slope_per_mib:
            weights = sum(self._summer(weights=True)(feats).values())
            if np.isnan(weights).any():
                raise MissingEntryError("latency table has no weight size for a part it predicts with")
            factor = self._context_factor(weights)
            out = {kind: values * factor for kind, values in out.items()}
        if self.meta.calibration:
            coef = self.meta.calibration["coef"]
            out = {kind: values * coef.get(self._family.group_of(kind), 1.0) for kind, values in out.items()}
            out["overhead"] = np.full(n, float(self.meta.calibration["intercept"]))
        else:
            out["overhead"] = np.full(n, float(self.meta.overhead_ms))
        return out

    def _first_missing(self, feats: Any, row: int) -> Part:
        """The first part (in network order) of arch ``row`` of ``feats`` that the table lacks."""
        wanted = self._family.parts_of_row(feats, row, self.meta.num_classes, self.meta.in_chans)
        return next(p for p in wanted if p not in self.entries or not np.isfinite(self.entries[p].get(self.stat)))

    # ------------------------------------------------------------------ storage
    def to_arrow(self) -> pa.Table:
        kinds = self._family.part_kinds
        rows = sorted(self.entries.items(), key=lambda kv: (kinds.index(kv[0].kind), kv[0]))
        columns: dict[str, list] = {name: [] for name in _SCHEMA.names}
        for part, t in rows:
            columns["kind"].append(part.kind)
            columns["stage"].append(part.stage)
            columns["c_in"].append(part.c_in)
            columns["c_out"].append(part.c_out)
            for stat in STATS:
                columns[f"{stat}_ms"].append(t.get(stat))
            columns["count"].append(t.count)
            accepted, disturbed = self.passes.get(part, (0, 0))
            columns["passes"].append(accepted)
            columns["disturbed"].append(disturbed)
            columns["weight_mib"].append(self.weights.get(part, float("nan")))
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, **self.meta.to_dict()}
        schema = _SCHEMA.with_metadata({_META_KEY: json.dumps(meta).encode()})
        return pa.Table.from_pydict(columns, schema=schema)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the table as Parquet, atomically (:func:`slimnas._io.atomic_write`)."""
        arrow = self.to_arrow()
        return atomic_write(path, lambda tmp: pq.write_table(arrow, tmp))

    def to_bytes(self) -> bytes:
        """The table as Parquet bytes (how it travels to the Ray latency service)."""
        sink = pa.BufferOutputStream()
        pq.write_table(self.to_arrow(), sink)
        return sink.getvalue().to_pybytes()

    @classmethod
    def from_bytes(cls, data: bytes, stat: str | None = None, source: str = "<bytes>") -> LatencyTable:
        try:
            table = pq.read_table(pa.BufferReader(data))
        except (pa.ArrowException, OSError) as exc:
            raise InputError(f"lut: {source} is not a readable Parquet file ({type(exc).__name__})") from None
        return cls._from_arrow(table, stat, source)

    @classmethod
    def load(cls, path: str | os.PathLike, stat: str | None = None) -> LatencyTable:
        """Read a table; a missing, corrupt or foreign file raises ``InputError`` naming the problem."""
        file = Path(path)
        if not file.is_file():
            raise InputError(f"lut: no such file {file}")
        try:
            table = pq.read_table(file)
        except (pa.ArrowException, OSError) as exc:
            raise InputError(f"lut: {file} is not a readable Parquet file ({type(exc).__name__})") from None
        return cls._from_arrow(table, stat, str(file))

    @classmethod
    def _from_arrow(cls, table: pa.Table, stat: str | None, file: str) -> LatencyTable:
        raw = (table.schema.metadata or {}).get(_META_KEY)
        if raw is None:
            raise InputError(f"lut: {file} is not a slimnas latency table (no '{_META_KEY.decode()}' metadata)")
        try:
            meta_dict = json.loads(raw)
        except json.JSONDecodeError:
            raise InputError(f"lut: {file} has corrupt slimnas metadata") from None
        if meta_dict.get("format") != FORMAT:
            raise InputError(f"lut: {file} is not a slimnas latency table (format {meta_dict.get('format')!r})")
        if int(meta_dict.get("format_version", 0)) > FORMAT_VERSION:
            raise InputError(f"lut: {file} has format version {meta_dict['format_version']}; this slimnas reads up to "
                             f"{FORMAT_VERSION}")
        required = _V1_COLUMNS if int(meta_dict.get("format_version", 0)) < 2 else _SCHEMA.names
        for name in required:
            if name not in table.column_names:
                raise InputError(f"lut: {file} lacks the column {name!r}")
        try:
            meta = TableMeta.from_dict(meta_dict)
            meta.search_space()
            meta.measurement_protocol()
            meta.part_coefficients()
        except (TypeError, ValueError) as exc:
            raise InputError(f"lut: {file} has invalid metadata ({exc})") from None
        if stat is not None and stat not in STATS:
            raise InputError(f"stat: expected one of {STATS}, got {stat!r}")
        entries, passes, weights = _entries_from_columns(table.to_pydict(), file,
                                                         meta.search_space().space_family.part_kinds)
        return cls(entries, meta, stat, passes, weights)

    # ------------------------------------------------------------------ merging
    def merged(self, other: LatencyTable) -> LatencyTable:
        """Entries of both tables (``other`` wins); both must have the same identity."""
        if self.meta.identity() != other.meta.identity():
            raise InputError("lut: cannot merge tables measured under different settings")
        return LatencyTable({**self.entries, **other.entries}, self.meta, self.stat,
                            {**self.passes, **other.passes}, {**self.weights, **other.weights})

    def with_meta(self, **changes: Any) -> LatencyTable:
        return LatencyTable(self.entries, replace(self.meta, **changes), self.stat, self.passes, self.weights)


def _entries_from_columns(columns: Mapping[str, list], file: Path | str, part_kinds: Sequence[str]
                          ) -> tuple[dict[Part, Timing], dict[Part, tuple[int, int]], dict[Part, float]]:
    entries: dict[Part, Timing] = {}
    passes: dict[Part, tuple[int, int]] = {}
    weights: dict[Part, float] = {}
    nan = [float("nan")] * len(columns["kind"])
    for i, kind in enumerate(columns["kind"]):
        try:
            if kind not in part_kinds:
                raise ValueError(f"part.kind: unknown part kind {kind!r} (expected one of {tuple(part_kinds)})")
            part = Part(kind, int(columns["stage"][i]), int(columns["c_in"][i]), int(columns["c_out"][i]))
            values = {stat: float(columns.get(f"{stat}_ms", nan)[i]) for stat in STATS}
            required = [v for stat, v in values.items() if f"{stat}_ms" in _V1_COLUMNS or f"{stat}_ms" in columns]
            if not all(np.isfinite(v) and v >= 0 for v in required):
                raise ValueError(f"non-finite or negative timing for {part}")
            timing = Timing(count=int(columns["count"][i]), **values)
            if "passes" in columns:
                passes[part] = (int(columns["passes"][i]), int(columns["disturbed"][i]))
            if "weight_mib" in columns and columns["weight_mib"][i] is not None \
                    and np.isfinite(float(columns["weight_mib"][i])):
                weights[part] = float(columns["weight_mib"][i])
        except (TypeError, ValueError) as exc:
            raise InputError(f"lut: {file} row {i}: {exc}") from None
        entries[part] = timing
    return entries, passes, weights
