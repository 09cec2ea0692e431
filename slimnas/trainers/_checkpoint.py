"""Checkpoints: one ``torch.save`` dict per epoch, written atomically, loadable with ``weights_only=True``.

Layout: ``<dir>/epoch_NNNN/checkpoint.pt`` (NNNN = completed epochs). Keys: ``format`` (version), ``kind``
(``"supernet"`` or ``"arch"``), ``model`` (state_dict), ``optimizer``, ``alpha_optimizer`` (``None`` for an arch),
``scheduler``, ``epoch`` (completed epochs), ``global_step``, ``rng`` (one entry per rank: torch CPU state tensor,
CUDA state tensors, Python's ``random`` state and NumPy's as nested lists), ``config`` (the JSON-ready config),
``space`` (dict or ``None``), ``arch`` (dict or ``None``), ``history`` (per-epoch metrics) and ``channels_sorted``.
No pickled objects: everything is tensors and plain Python containers, so ``torch.load(..., weights_only=True)``
reads it. Each file is written to a temporary name in the same folder and renamed (``os.replace``), with the
user's umask (:mod:`slimnas._io`).
"""

from __future__ import annotations

import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from slimnas._io import atomic_write
from slimnas.errors import InputError

__all__ = ["CHECKPOINT_FILE", "FORMAT_VERSION", "capture_rng", "restore_rng", "save_checkpoint", "load_checkpoint",
           "latest_checkpoint", "prune_checkpoints", "epoch_dir_name"]

CHECKPOINT_FILE = "checkpoint.pt"
FORMAT_VERSION = 1
_EPOCH_DIR = re.compile(r"^epoch_(\d+)$")


def epoch_dir_name(epoch: int) -> str:
    return f"epoch_{epoch:04d}"


def capture_rng() -> dict[str, Any]:
    """This process's random states as tensors and lists of ints (no NumPy objects)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    cuda = [t for t in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else []
    return {
        "torch": torch.get_rng_state(),
        "cuda": cuda,
        "python": [version, list(internal), gauss_next],
        "numpy": [str(name), [int(k) for k in keys], int(pos), int(has_gauss), float(cached)],
    }


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


def save_checkpoint(payload: dict[str, Any], directory: str | os.PathLike) -> Path:
    """Write ``payload`` to ``directory/checkpoint.pt`` atomically (:func:`slimnas._io.atomic_write`); returns the
    file."""
    return atomic_write(Path(directory) / CHECKPOINT_FILE,
                        lambda tmp: torch.save({"format": FORMAT_VERSION, **payload}, tmp))


def load_checkpoint(path: str | os.PathLike, what: str = "checkpoint") -> dict[str, Any]:
    """Read a checkpoint file (or the ``checkpoint.pt`` in a folder) with ``weights_only=True``.

    A missing or unreadable file raises :class:`InputError` naming it (``what`` names the config field).
    """
    file = Path(path).expanduser()
    if file.is_dir():
        file = file / CHECKPOINT_FILE
    if not file.is_file():
        raise InputError(f"{what}: no such file {file}")
    try:
        data = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - one line naming the file, whatever went wrong
        raise InputError(f"{what}: cannot read {file} as a slimnas checkpoint ({type(exc).__name__})") from None
    if not isinstance(data, dict) or "model" not in data or data.get("format") != FORMAT_VERSION:
        raise InputError(f"{what}: {file} is not a slimnas checkpoint (format {FORMAT_VERSION})")
    return data


def _epoch_dirs(directory: Path) -> list[tuple[int, Path]]:
    if not directory.is_dir():
        return []
    found = []
    for child in directory.iterdir():
        match = _EPOCH_DIR.match(child.name)
        if match and (child / CHECKPOINT_FILE).is_file():
            found.append((int(match.group(1)), child))
    return sorted(found)


def latest_checkpoint(directory: str | os.PathLike) -> Path | None:
    """The checkpoint file of the highest completed epoch under ``directory``, or ``None``."""
    found = _epoch_dirs(Path(directory))
    return found[-1][1] / CHECKPOINT_FILE if found else None


def prune_checkpoints(directory: str | os.PathLike, keep: int) -> None:
    """Delete all but the ``keep`` most recent epoch folders."""
    for _, folder in _epoch_dirs(Path(directory))[:-keep]:
        shutil.rmtree(folder, ignore_errors=True)
