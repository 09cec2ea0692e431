"""Project exceptions. The CLI turns every one of them (and ``ValueError`` from validation) into one line, exit 2.

Helpers for those lines: :func:`shorten` caps how much of a bad value a message echoes, and :func:`path_error` turns an
``OSError`` about a path into an :class:`InputError` that names the field and the path in plain words.
"""

from __future__ import annotations

import errno
import os

__all__ = ["SlimnasError", "ConfigError", "InputError", "ExportError", "shorten", "os_error_reason", "path_error",
           "ECHO_LIMIT"]

#: At most this many characters of a bad value are echoed in an error message.
ECHO_LIMIT = 80


class SlimnasError(Exception):
    """Base class of slimnas's own errors."""


class ConfigError(SlimnasError, ValueError):
    """A configuration field is wrong; the message names the field."""


class InputError(SlimnasError, ValueError):
    """An input (a path, a file, an address) is missing or malformed; the message names it."""


class ExportError(SlimnasError):
    """An exporter (ONNX, ``torch.export``, Core ML, timm) failed or wrote a model that does not compute the network;
    the message names the exporter (never followed by a silent fallback to another one)."""


def shorten(value: object, limit: int = ECHO_LIMIT) -> str:
    """``str(value)`` on one line, at most ``limit`` characters (the middle elided, so both ends stay readable)."""
    text = " ".join(str(value).split()) if not isinstance(value, str) else value.replace("\n", "\\n")
    if len(text) <= limit:
        return text
    head = max(1, (limit - 5) * 2 // 3)
    tail = max(1, limit - 5 - head)
    return f"{text[:head]}[...]{text[-tail:]}"


_REASONS = {
    errno.ENAMETOOLONG: "a name in the path is longer than the file system allows",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "is a folder, not a file",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.ELOOP: "too many levels of symbolic links",
    errno.ENOENT: "no such file or folder",
    errno.EEXIST: "exists already",
}


def os_error_reason(exc: OSError) -> str:
    """What an ``OSError`` means, in a few plain words."""
    return _REASONS.get(exc.errno or 0) or exc.strerror or type(exc).__name__


def path_error(what: str, path: str | os.PathLike, exc: OSError) -> InputError:
    """``InputError`` ``"<what>: <path>: <reason>"`` for an ``OSError`` raised while using ``path``."""
    return InputError(f"{what}: {shorten(os.fspath(path), 160)}: {os_error_reason(exc)}")
