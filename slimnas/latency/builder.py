"""Building a latency table: time every part of a space on one backend, resumably, then write it atomically.

Parts are timed one at a time in one process (parallel timing on one device corrupts itself). With ``passes > 1``
every part is timed in each of several passes over all parts and its entry pools the samples of all passes: on a
machine whose speed wanders (a shared VM: here the same network measured twice minutes apart differed by up to 25%),
each entry then samples the whole build period instead of one moment of it. Every measurement is appended to a
journal next to the output (``<out>.partial.jsonl``, one JSON line per part and pass, flushed and fsynced) whose
first line records the table's identity. An interrupted build run again with the same settings resumes from the
journal; a journal made under other settings is refused (never mixed). At the end the table is written atomically and
the journal removed.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from slimnas.errors import InputError
from slimnas.search_spaces.efficientformer import SearchSpace

from ._parts import Part, parts_of_space
from ._timing import Timing
from .backends import Backend
from .modules import FORMS, part_module
from .table import LatencyTable, TableMeta

__all__ = ["build_table", "Progress", "journal_path", "table_meta"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Progress:
    """Where a long measurement stands (passed to progress callbacks)."""

    done: int
    total: int
    item: str
    elapsed_s: float
    eta_s: float | None

    def line(self, what: str = "parts") -> str:
        eta = "?" if self.eta_s is None else _clock(self.eta_s)
        pct = 100.0 * self.done / max(self.total, 1)
        return (f"{self.done}/{self.total} {what} ({pct:4.1f}%)  elapsed {_clock(self.elapsed_s)}  ETA {eta}  "
                f"{self.item}")


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


def journal_path(out: str | os.PathLike) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".partial.jsonl")


def table_meta(space: SearchSpace, backend: Backend, batch: int, form: str, num_classes: int = 1000,
               in_chans: int = 3, rotation_mb: float = 0.0, passes: int = 1) -> TableMeta:
    info = backend.describe()
    options = dict(info["options"])
    if rotation_mb:
        options["rotation_mb"] = rotation_mb
    return TableMeta(
        backend=backend.name, device=info["device"], batch=batch, dtype=backend.dtype, img_size=space.img_size,
        threads=backend.threads, space=space.to_dict(), form=form, num_classes=num_classes, in_chans=in_chans,
        options=options, versions=info["versions"],
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        notes={"warmup_ms": backend.warmup_ms, "repeats": backend.repeats, "min_sample_ms": backend.min_sample_ms,
               "passes": passes},
    )


def _read_journal(path: Path, identity: dict) -> dict[tuple[Part, int], list[float]]:
    lines = path.read_text().splitlines()
    try:
        header = json.loads(lines[0]) if lines else {}
    except json.JSONDecodeError:
        header = {}
    if header.get("identity") != json.loads(json.dumps(identity)):
        raise InputError(f"lut: {path} holds measurements made under other settings; remove it or build with "
                         f"--no-resume")
    done: dict[tuple[Part, int], list[float]] = {}
    for number, line in enumerate(lines[1:], start=2):
        try:
            record = json.loads(line)
            done[(Part(*record["part"]), int(record["pass"]))] = [float(v) for v in record["samples"]]
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            # A line cut short by the interruption: everything before it is intact.
            log.warning("lut: ignoring unreadable line %d of %s", number, path)
    return done


def build_table(
    space: SearchSpace,
    backend: Backend,
    out: str | os.PathLike,
    batch: int = 1,
    form: str | None = None,
    num_classes: int = 1000,
    in_chans: int = 3,
    parts: Sequence[Part] | None = None,
    passes: int = 1,
    rotation_mb: float = 0.0,
    resume: bool = True,
    overwrite: bool = False,
    on_progress: Callable[[Progress], None] | None = None,
) -> LatencyTable:
    """Time every part of ``space`` (or ``parts``) on ``backend`` and write the table to ``out`` (Parquet).

    ``form`` defaults to the backend's (``fused`` for torch, ``eager`` for ONNX Runtime and Core ML); ``passes``
    spreads each part's samples over the build (see the module docstring); ``rotation_mb`` rotates weight copies
    (:mod:`slimnas.latency.modules`). ``on_progress`` is called after each measurement; raising from it (e.g.
    ``KeyboardInterrupt``) stops the build, and the next call with ``resume=True`` continues from the journal.
    """
    form = form or backend.default_form
    if form not in FORMS:
        raise ValueError(f"form: expected one of {FORMS}, got {form!r}")
    if batch < 1:
        raise ValueError(f"batch: must be at least 1, got {batch}")
    if passes < 1:
        raise ValueError(f"passes: must be at least 1, got {passes}")
    if rotation_mb < 0:
        raise ValueError(f"rotation_mb: must be zero or positive, got {rotation_mb}")
    out = Path(out)
    if out.exists() and not overwrite:
        raise InputError(f"lut: {out} exists; choose another --out or pass --force to replace it")
    backend.check()
    meta = table_meta(space, backend, batch, form, num_classes, in_chans, rotation_mb, passes)
    todo = list(parts) if parts is not None else parts_of_space(space, num_classes, in_chans)
    wanted = {(p, i) for i in range(passes) for p in todo}
    journal = journal_path(out)
    done: dict[tuple[Part, int], list[float]] = {}
    if journal.exists() and resume:
        done = {k: v for k, v in _read_journal(journal, meta.identity()).items() if k in wanted}
        log.info("lut: resuming from %s (%d of %d measurements done)", journal, len(done), len(wanted))
    else:
        journal.parent.mkdir(parents=True, exist_ok=True)
        journal.write_text(json.dumps({"identity": meta.identity()}) + "\n")
    remaining = [(p, i) for i in range(passes) for p in todo if (p, i) not in done]
    start = time.perf_counter()
    with journal.open("a") as handle:
        for n, (part, pass_index) in enumerate(remaining, start=1):
            module, example = part_module(part, space.img_size, batch, form, rotation_mb)
            samples = backend.measure_samples(module, example)
            del module
            done[(part, pass_index)] = samples
            handle.write(json.dumps({"part": [part.kind, part.stage, part.c_in, part.c_out], "pass": pass_index,
                                     "samples": samples}) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
            if on_progress is not None:
                elapsed = time.perf_counter() - start
                label = f"{part}" if passes == 1 else f"pass {pass_index + 1}/{passes}: {part}"
                on_progress(Progress(len(done), len(wanted), label, elapsed, elapsed / n * (len(remaining) - n)))
    meta = replace(meta, created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    entries = {p: Timing.from_samples([v for i in range(passes) for v in done[(p, i)]]) for p in todo}
    table = LatencyTable(entries, meta)
    table.save(out)
    journal.unlink(missing_ok=True)
    return table
