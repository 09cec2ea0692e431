"""Atomic file writes: the one writer every slimnas output goes through (configs' JSON, tables, checkpoints, plots,
``pipeline.json``, search results), and the one file digest (:func:`file_sha256`: checkpoints' identities).

A file is written under a unique temporary name in its own folder and renamed over the target (``os.replace``), so a
reader sees the old file or the new one, never a part of one, and a process killed mid-write leaves the old file as
it was (plus at most a hidden ``.<name>.<hex>.tmp`` beside it). The temporary file is created with mode ``0o666``
filtered by the process's umask, as ``open()`` would create it (``tempfile.mkstemp`` makes every file ``0o600``,
which breaks sharing outputs on a team's file system). Standard library only.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_text", "file_sha256"]

#: Room left in a file name for the temporary name's dot, hex token and suffix (names are limited to 255 bytes).
_NAME_ROOM = 200


def _temporary_beside(target: Path) -> Path:
    """A new empty file next to ``target``, created with mode ``0o666 & ~umask``."""
    stem = target.name[:_NAME_ROOM]
    for _ in range(16):
        tmp = target.with_name(f".{stem}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"no free temporary name beside {target}")


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Make ``path`` by calling ``write(tmp)`` on a temporary path in the same folder, then renaming it over
    ``path``; the folder is created if needed. ``write`` may open ``tmp`` itself (``torch.save``,
    ``pyarrow.parquet.write_table``, ``Figure.savefig``): the file already exists with the umask's mode, and an
    existing file keeps its mode when reopened. On any error the temporary file is removed and ``path`` is
    untouched."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_beside(target)
    try:
        write(tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (:func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (:func:`atomic_write`)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes (hex), read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
