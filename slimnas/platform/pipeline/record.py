"""``<output>/pipeline.json``: the pipeline job's record, an append-only history of its attempts.

Each run of ``slimnas run``/``quickstart`` that does any work is one :class:`Attempt`: its config, ``--force`` and
``--restore``, when it started and ended, its status (``running`` while it runs, and what a killed run leaves;
``finished``; ``failed``, with the error's line) and, per stage, what ran or was reused, its wall time and its
outputs. Attempts are only ever appended; an earlier attempt is never rewritten.

What holds *now* (the keys ``config``, ``finished``, ``mlflow_run_id`` and ``stages`` at the top of the file, which
the search stage's reuse check reads) is derived from the history: ``config``, ``finished`` and ``mlflow_run_id`` are
those of the last finished attempt; ``stages`` holds, per stage, the last record of an output made or confirmed: a
finished attempt's records, and the stages that ran to their end in a later failed or killed attempt (their outputs
are on disk; a stage that failed leaves none, see :mod:`slimnas.platform.pipeline.run`).

The file is rewritten atomically, and only when an attempt has something to record: a run rejected before any work
(``InputError`` while every stage so far was reused) leaves it byte-identical. Version-1 files (one flat record,
written before this history existed) are read as one attempt; a file that is not a record stops the job before any
work (one line naming it), it is never replaced silently.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Self, TypeVar

from slimnas._io import atomic_write_text
from slimnas.errors import InputError

__all__ = ["Attempt", "PipelineRecord", "TrainRecord", "TableRecord", "SearchInputs", "SearchRecord", "RetrainedModel",
           "RetrainRecord", "StageRecord", "STATE_FILE", "FORMAT_VERSION", "now"]

STATE_FILE = "pipeline.json"
FORMAT = "slimnas-pipeline"
FORMAT_VERSION = 2
STATUSES = ("running", "finished", "failed")


def now() -> str:
    """The local time as ISO 8601 with its UTC offset (the record's timestamps)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


R = TypeVar("R")


def _from_fields(cls: type[R], data: dict[str, Any], **nested: Any) -> R:
    """``cls`` from the keys of ``data`` that are its fields (``nested`` replaces some); ``ValueError`` when a field
    without a default is missing or ``data`` is not a mapping."""
    if not isinstance(data, dict):
        raise ValueError(f"a {cls.__name__} that is not a mapping")
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    try:
        return cls(**{**{k: v for k, v in data.items() if k in names}, **nested})
    except TypeError as exc:
        raise ValueError(f"a malformed {cls.__name__}: {exc}") from None


class _Record:
    """The JSON round trip of a frozen record: its fields, by name."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        return _from_fields(cls, data)


@dataclass(frozen=True)
class TrainRecord(_Record):
    """The train stage: ``status`` ran or reused, the final supernet checkpoint and its SHA-256."""

    status: str
    wall_s: float
    checkpoint: str
    sha256: str


@dataclass(frozen=True)
class TableRecord(_Record):
    """The table stage: ``status`` built, validated or reused; the table, its creation time and size, and the
    validation's summary (:func:`slimnas.latency.validate.validate_table`'s, ``None`` when not validated)."""

    status: str
    wall_s: float
    path: str
    created: str
    entries: int
    validation: dict[str, Any] | None = None


@dataclass(frozen=True)
class SearchInputs(_Record):
    """What a search job's results depend on: its config (targets resolved), the supernet's SHA-256 and the table's
    creation time."""

    config: dict[str, Any]
    supernet_sha256: str
    table_created: str

    def same_as(self, other: SearchInputs | None) -> bool:
        """Whether ``other`` are these inputs. The supernet is compared by its SHA-256, not by its path (a copied or
        moved output folder keeps its search)."""
        if other is None:
            return False
        return (self.supernet_sha256, self.table_created, {**self.config, "supernet": None}) == \
            (other.supernet_sha256, other.table_created, {**other.config, "supernet": None})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchInputs:
        inputs = super().from_dict(data)
        if not isinstance(inputs.config, dict):
            raise ValueError("search inputs whose config is not a mapping")
        return inputs


@dataclass(frozen=True)
class SearchRecord(_Record):
    """The search stage: ``status`` ran or reused, its inputs (the reuse check), the targets (ms), the job's folder
    and its MLflow parent run."""

    status: str
    wall_s: float
    inputs: SearchInputs
    targets: tuple[float, ...]
    job_dir: str
    mlflow_run_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "targets": list(self.targets)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchRecord:
        inputs = SearchInputs.from_dict(data.get("inputs") if isinstance(data, dict) else None)
        return _from_fields(cls, data, inputs=inputs, targets=tuple(float(t) for t in data.get("targets") or ()))


@dataclass(frozen=True)
class RetrainedModel(_Record):
    """One retrained winner: ``status`` ran or reused; its folder (``<job>/retrained/<method>@<target>ms``, loaded
    with :func:`slimnas.load_winner`); how it was trained (``init``, ``epochs``); ``top1`` with the supernet's weights
    (the search's) and ``retrained_top1``, both on the same ``images`` validation images; ``key``: the SHA-256 of
    its inputs (the winner's weights and the training settings, see :mod:`slimnas.platform.stages.retrain`)."""

    method: str
    target_ms: float
    status: str
    folder: str
    init: str
    epochs: int
    top1: float
    retrained_top1: float
    images: int
    wall_s: float
    key: str


@dataclass(frozen=True)
class RetrainRecord(_Record):
    """The retrain stage: ``status`` ran (some winner was trained) or reused (none was); the retrained winners;
    ``notes``: the chosen winners that were not retrained, and why (e.g. a target without an answer)."""

    status: str
    wall_s: float
    models: tuple[RetrainedModel, ...] = ()
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "models": [m.to_dict() for m in self.models], "notes": list(self.notes)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RetrainRecord:
        models = data.get("models") if isinstance(data, dict) else None
        if not isinstance(models, list):
            raise ValueError("a retrain record whose models are not a list")
        return _from_fields(cls, data, models=tuple(RetrainedModel.from_dict(m) for m in models),
                            notes=tuple(str(n) for n in data.get("notes") or ()))


StageRecord = TrainRecord | TableRecord | SearchRecord | RetrainRecord
#: The record type of each stage.
STAGE_RECORDS: dict[str, type[StageRecord]] = {"train": TrainRecord, "table": TableRecord, "search": SearchRecord,
                                               "retrain": RetrainRecord}


def stages_from_dict(data: Any) -> dict[str, StageRecord]:
    """Stage records from their JSON (``ValueError`` for an unknown stage or a malformed record)."""
    if not isinstance(data, dict):
        raise ValueError("stages that are not a mapping")
    unknown = set(data) - set(STAGE_RECORDS)
    if unknown:
        raise ValueError(f"unknown stage(s) {sorted(unknown)}")
    return {stage: STAGE_RECORDS[stage].from_dict(record) for stage, record in data.items()}


@dataclass
class Attempt:
    """One run of the pipeline job. ``stages`` maps a stage to its record (``status``: ran, built, validated or
    reused; ``wall_s``; the stage's outputs), in the order the stages ended."""

    started: str | None
    config: dict[str, Any]
    force: list[str] = field(default_factory=list)
    restore: bool = False
    status: str = "running"
    ended: str | None = None
    stages: dict[str, StageRecord] = field(default_factory=dict)
    error: str | None = None
    mlflow_run_id: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Attempt:
        attempt = _from_fields(cls, {"started": None, "config": {}, **data},
                               stages=stages_from_dict(data.get("stages", {})))
        if attempt.status not in STATUSES:
            raise ValueError("an attempt with an unknown status")
        return attempt

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "stages": {stage: record.to_dict() for stage, record in self.stages.items()}}

    def did_work(self) -> bool:
        """Whether a stage of this attempt produced an output (anything but a reuse)."""
        return any(record.status != "reused" for record in self.stages.values())


@dataclass
class PipelineRecord:
    """The history of a pipeline job's output folder (see the module docstring)."""

    name: str
    attempts: list[Attempt] = field(default_factory=list)

    # ------------------------------------------------------------------ what holds now
    def last_finished(self) -> Attempt | None:
        return next((a for a in reversed(self.attempts) if a.status == "finished"), None)

    def stages(self) -> dict[str, StageRecord]:
        """Per stage, the current record of its outputs (see the module docstring)."""
        current: dict[str, StageRecord] = {}
        for attempt in self.attempts:
            for stage, record in attempt.stages.items():
                if attempt.status == "finished" or record.status != "reused" or stage not in current:
                    current[stage] = record
        return current

    def current(self) -> dict[str, Any]:
        """The derived top-level keys: ``name``, ``config``, ``stages``, ``mlflow_run_id`` and ``finished``."""
        last = self.last_finished()
        logged = next((a.mlflow_run_id for a in reversed(self.attempts) if a.status == "finished" and a.mlflow_run_id),
                      None)  # a run that reused every stage logs no pipeline run: the last one logged stands
        out: dict[str, Any] = {"name": self.name, "config": last.config if last else None,
                               "stages": {stage: record.to_dict() for stage, record in self.stages().items()},
                               "mlflow_run_id": logged}
        if last is not None:
            out["finished"] = last.ended
        return out

    # ------------------------------------------------------------------ storage
    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, **self.current(),
                "attempts": [a.to_dict() for a in self.attempts]}

    def save(self, path: str | Path) -> Path:
        """Write the record to ``path`` atomically."""
        return atomic_write_text(path, json.dumps(self.to_dict(), indent=1, default=str))

    @classmethod
    def from_dict(cls, data: dict[str, Any], name: str) -> PipelineRecord:
        """A record from its JSON; a version-1 record (no ``attempts``) becomes one attempt."""
        if "attempts" in data:
            return cls(str(data.get("name") or name), [Attempt.from_dict(a) for a in data["attempts"]])
        if not data.get("stages"):
            return cls(str(data.get("name") or name))
        finished = data.get("finished")
        attempt = Attempt(None, data.get("config") or {}, status="finished" if finished else "failed",
                          ended=finished, stages=stages_from_dict(data.get("stages") or {}),
                          error=None if finished else "recorded by an earlier slimnas (no end recorded)",
                          mlflow_run_id=data.get("mlflow_run_id"))
        return cls(str(data.get("name") or name), [attempt])

    @classmethod
    def load(cls, path: str | Path, name: str) -> PipelineRecord:
        """The record at ``path`` (an empty one when there is no file); ``InputError`` naming the file when it is not
        a pipeline record (it is never replaced silently)."""
        file = Path(path)
        if not file.is_file():
            return cls(name)
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise TypeError(f"a JSON {type(data).__name__}")
            return cls.from_dict(data, name)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, TypeError, ValueError, AttributeError,
                KeyError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else type(exc).__name__ if not isinstance(
                exc, TypeError) else str(exc)[:80]
            raise InputError(f"output: {file} is not a readable pipeline record ({reason}); move it away to start "
                             f"a new history") from None
