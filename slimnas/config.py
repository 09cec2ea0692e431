"""Configuration models and YAML loading with one-line errors that name the field.

Every config in slimnas is a :class:`ConfigModel` (pydantic, unknown keys rejected). :func:`load_config` reads a YAML
file with ``yaml.safe_load`` (or takes a mapping), validates it, and raises :class:`~slimnas.errors.ConfigError`
whose message names the offending field as a dotted path, e.g. ``train.lr: Input should be a valid number (got
'fast')``. The CLI prints that line and exits with status 2.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

from slimnas._io import atomic_write_bytes, atomic_write_text  # re-exported: the one atomic writer
from slimnas.errors import ConfigError, InputError, path_error, shorten

__all__ = ["ConfigModel", "load_config", "load_yaml", "parse_yaml", "read_text_file", "read_json_file",
           "format_validation_error", "plain_dir_name", "DirName",
           "atomic_write_bytes", "atomic_write_text", "MAX_CONFIG_BYTES", "MAX_YAML_NODES"]

#: A config (YAML, JSON) larger than this is refused unread.
MAX_CONFIG_BYTES = 16 * 2**20
#: A YAML document that expands (aliases counted each time they are used) to more nodes than this is refused.
MAX_YAML_NODES = 200_000

M = TypeVar("M", bound="ConfigModel")


class ConfigModel(BaseModel):
    """Base of every slimnas config: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False, allow_inf_nan=False)


def format_validation_error(exc: ValidationError, prefix: str = "") -> str:
    """The first error of a pydantic ``ValidationError`` as ``field.path: message (got value)``."""
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in ((prefix,) if prefix else ()) + tuple(err.get("loc", ())))
    msg = err.get("msg", "invalid value")
    if err.get("type") == "extra_forbidden":
        msg = "unknown field"
    value = err.get("input")
    hide = err.get("type") in ("missing", "extra_forbidden") or isinstance(value, Mapping)
    shown = "" if hide else f" (got {shorten(repr(value))})"
    return f"{shorten(loc or prefix or 'config')}: {shorten(msg, 300)}{shown}"


def read_text_file(path: str | os.PathLike, what: str, max_bytes: int = MAX_CONFIG_BYTES) -> str:
    """The UTF-8 text of a small input file; anything else raises ``InputError`` naming ``what`` and the file.

    Refused with one line each: a missing file, a folder, a device or pipe (which could block or never end), a file
    over ``max_bytes``, a binary file (NUL bytes), text that is not UTF-8, and any ``OSError`` (a name too long, a
    path under a file, no permission).
    """
    file = Path(path).expanduser()
    shown = shorten(os.fspath(file), 160)
    try:
        info = file.stat()
        if stat.S_ISDIR(info.st_mode):
            raise InputError(f"{what}: {shown} is a folder, not a file")
        if not stat.S_ISREG(info.st_mode):
            raise InputError(f"{what}: {shown} is not a regular file")
        if info.st_size > max_bytes:
            raise InputError(f"{what}: {shown} is {info.st_size / 2**20:.1f} MiB; expected a text file of at most "
                             f"{max_bytes / 2**20:.0f} MiB")
        data = file.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{what}: no such file {shown}") from None
    except OSError as exc:
        raise path_error(what, file, exc) from None
    if b"\0" in data[:65536]:
        raise InputError(f"{what}: {shown} is a binary file, not text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{what}: {shown} is not UTF-8 text (byte {exc.start})") from None


def read_json_file(path: str | os.PathLike, what: str, fmt: str | None = None, kind: str = "") -> Any:
    """The JSON document of a small input file (:func:`read_text_file`'s checks); ``InputError`` naming ``what`` and
    the file when it is not valid JSON or, given ``fmt``, not a mapping whose ``format`` is ``fmt`` (``kind`` says
    what it should be, e.g. "slimnas calibration file")."""
    text = read_text_file(path, what)
    shown = shorten(os.fspath(Path(path).expanduser()), 160)
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        raise InputError(f"{what}: {shown} is not valid JSON") from None
    if fmt is not None and (not isinstance(data, dict) or data.get("format") != fmt):
        raise InputError(f"{what}: {shown} is not a {kind or fmt}")
    return data


def _expanded_nodes(data: Any, limit: int) -> int:
    """How many nodes ``data`` has when every shared (aliased) part is counted each time it is used; stops past
    ``limit``. Raises ``ValueError`` for a structure that contains itself (a recursive alias)."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: Any) -> int:
        if not isinstance(node, (dict, list)):
            return 1
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise ValueError("recursive alias")
        active.add(key)
        children = list(node.keys()) + list(node.values()) if isinstance(node, dict) else node
        total = 1
        for child in children:
            total += size(child)
            if total > limit:
                break
        active.discard(key)
        sizes[key] = total
        return total

    return size(data)


def parse_yaml(text: str, what: str, source: str = "the value") -> Any:
    """``yaml.safe_load(text)``; bad YAML, nesting too deep and alias bombs (a document expanding to more than
    :data:`MAX_YAML_NODES` values, or one that contains itself) raise ``InputError`` naming ``what`` and ``source``."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise InputError(f"{what}: {source} is not valid YAML{where}") from None
    except RecursionError:
        raise InputError(f"{what}: {source} is nested too deeply") from None
    except (ValueError, OverflowError) as exc:  # e.g. an integer of more digits than Python converts
        raise InputError(f"{what}: {source}: {shorten(exc)}") from None
    try:
        nodes = _expanded_nodes(data, MAX_YAML_NODES)
    except ValueError:
        raise InputError(f"{what}: {source} has a YAML alias that contains itself") from None
    except RecursionError:
        raise InputError(f"{what}: {source} is nested too deeply") from None
    if nodes > MAX_YAML_NODES:
        raise InputError(f"{what}: {source} expands to more than {MAX_YAML_NODES} values through YAML aliases "
                         f"(an alias bomb?)")
    return data


def load_yaml(path: str | os.PathLike, what: str = "config") -> Any:
    """Parse a YAML file safely (:func:`parse_yaml`); anything :func:`read_text_file` refuses raises ``InputError``
    naming ``what`` and the file."""
    return parse_yaml(read_text_file(path, what), what, shorten(os.fspath(path), 160))


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


def plain_dir_name(value: str) -> str:
    """A config ``name`` that becomes a folder: not empty, no ``/`` or NUL, not ``.`` or ``..``, at most 255 bytes."""
    if not value or "/" in value or "\0" in value or value in (".", ".."):
        raise ValueError("must be a plain directory name")
    if len(value.encode("utf-8", "surrogateescape")) > 255:
        raise ValueError("must be a plain directory name of at most 255 bytes")
    return value


#: A config field that becomes a folder name (:func:`plain_dir_name`).
DirName = Annotated[str, AfterValidator(plain_dir_name)]
