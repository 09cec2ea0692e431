"""Configuration models and YAML loading with one-line errors that name the field.

Every config in slimnas is a :class:`ConfigModel` (pydantic, unknown keys rejected). :func:`load_config` reads a YAML
file with ``yaml.safe_load`` (or takes a mapping), validates it, and raises :class:`~slimnas.errors.ConfigError`
whose message names the offending field as a dotted path, e.g. ``train.lr: Input should be a valid number (got
'fast')``. The CLI prints that line and exits with status 2.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from slimnas.errors import ConfigError, InputError

__all__ = ["ConfigModel", "load_config", "load_yaml", "format_validation_error", "atomic_write_text"]

M = TypeVar("M", bound="ConfigModel")


class ConfigModel(BaseModel):
    """Base of every slimnas config: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


def format_validation_error(exc: ValidationError, prefix: str = "") -> str:
    """The first error of a pydantic ``ValidationError`` as ``field.path: message (got value)``."""
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in ((prefix,) if prefix else ()) + tuple(err.get("loc", ())))
    msg = err.get("msg", "invalid value")
    if err.get("type") == "extra_forbidden":
        msg = "unknown field"
    value = err.get("input")
    hide = err.get("type") in ("missing", "extra_forbidden") or isinstance(value, Mapping)
    shown = "" if hide else f" (got {value!r})"
    return f"{loc or prefix or 'config'}: {msg}{shown}"


def load_yaml(path: str | os.PathLike) -> Any:
    """Parse a YAML file safely; a missing file or bad YAML raises ``InputError`` naming the file."""
    file = Path(path)
    if not file.is_file():
        raise InputError(f"config: no such file {file}")
    try:
        return yaml.safe_load(file.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise InputError(f"config: {file} is not valid YAML{where}") from None


def load_config(cls: type[M], source: str | os.PathLike | Mapping[str, Any] | M, section: str | None = None) -> M:
    """Validate ``source`` (a YAML path, a mapping or an instance) as ``cls``; ``section`` picks a top-level key."""
    if isinstance(source, cls):
        return source
    data = source if isinstance(source, Mapping) else load_yaml(source)
    if data is None:
        data = {}
    if section is not None:
        if not isinstance(data, Mapping) or section not in data:
            raise ConfigError(f"{section}: missing section")
        data = data[section]
    if not isinstance(data, Mapping):
        raise ConfigError(f"{section or 'config'}: expected a mapping, got {type(data).__name__}")
    try:
        return cls.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, section or "")) from None


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (:func:`atomic_write_bytes`)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def plain_dir_name(value: str) -> str:
    """A config ``name`` that becomes a folder: not empty, no ``/``, not ``.`` or ``..``."""
    if not value or "/" in value or value in (".", ".."):
        raise ValueError("must be a plain directory name")
    return value
