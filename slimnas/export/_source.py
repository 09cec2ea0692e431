"""What is exported: :class:`ExportSource`, read from a saved winner, a search job, a pipeline output or an arch and a
state_dict. Every reader checks its input and raises :class:`~slimnas.errors.InputError` naming the field or file
(one line) before anything is exported."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slimnas.errors import InputError, shorten
from slimnas.search_spaces import Arch
from slimnas.winners import (
    CARD_FILE,
    WEIGHTS_FILE,
    WINNERS_DIR,
    ModelCard,
    build_network,
    read_state_dict,
    winner_name,
)

__all__ = ["ExportSource", "WinnerRef", "source_from_folder", "source_from_files", "job_winners", "find_winner",
           "job_dir_of"]

#: The state_dict entries the class count and input channels are read from (the family's classifier and first conv).
_HEAD_KEY, _STEM_KEY = "head.weight", "stem.conv1.weight"


@dataclass(frozen=True)
class ExportSource:
    """A network to export: ``model`` (the family's ``build_model`` network holding the weights, eval mode, CPU), its
    arch, class count and input channels, its model card (``None`` for an arch and weights given as files) and
    ``origin``, the folder or files it was read from."""

    model: Any
    arch: Arch
    num_classes: int
    in_chans: int
    card: ModelCard | None
    origin: str

    @property
    def img_size(self) -> int:
        return self.arch.img_size

    def input_shape(self, batch: int) -> tuple[int, int, int, int]:
        return batch, self.in_chans, self.arch.img_size, self.arch.img_size


@dataclass(frozen=True, order=True)
class WinnerRef:
    """One saved winner of a job: its method, target (ms) and folder."""

    method: str
    target_ms: float
    folder: Path

    @property
    def name(self) -> str:
        return winner_name(self.method, self.target_ms)


def source_from_folder(folder: str | os.PathLike) -> ExportSource:
    """A saved winner (``<job>/winners/<method>@<target>ms/``, or its MLflow child run's artifacts): its model card and
    weights (:func:`slimnas.load_winner`'s files)."""
    from slimnas.winners import load_winner

    model, card = load_winner(folder)
    return ExportSource(model, card.arch, card.num_classes, card.in_chans, card, str(Path(folder)))


def source_from_files(arch_path: str | os.PathLike, weights_path: str | os.PathLike,
                      num_classes: int | None = None) -> ExportSource:
    """An arch JSON file (:meth:`Arch.to_json`'s form, or a model card) and a state_dict file. The class count is
    ``num_classes`` when given, else read from the weights (the rows of ``head.weight``); the input channels from the
    first conv (``stem.conv1.weight``, 3 without it)."""
    from slimnas.config import read_text_file

    text = read_text_file(arch_path, "--arch", max_bytes=2**20)
    card = None
    try:
        data = json.loads(text)
        if isinstance(data, dict) and "format" in data and "arch" in data:  # a model card given as the arch
            card = ModelCard.from_dict(data, source=str(arch_path))
            arch = card.arch
        else:
            arch = Arch.from_dict(data)
    except (ValueError, TypeError, KeyError, RecursionError) as exc:
        message = " ".join(str(exc).split()).removeprefix("arch: ")
        raise InputError(f"--arch: {shorten(os.fspath(arch_path), 160)}: {shorten(message, 300)}") from None
    state = read_state_dict(weights_path, what="--weights")
    if num_classes is None:
        head = state.get(_HEAD_KEY)
        if head is None or head.dim() != 2:
            if card is None:
                raise InputError(f"--weights: {weights_path}: no {_HEAD_KEY} to read the class count from; give "
                                 f"--num-classes")
            num_classes = card.num_classes
        else:
            num_classes = int(head.shape[0])
    stem = state.get(_STEM_KEY)
    in_chans = int(stem.shape[1]) if stem is not None and stem.dim() == 4 else 3
    model = build_network(arch, state, num_classes=num_classes, in_chans=in_chans,
                          what=f"--arch {shorten(os.fspath(arch_path), 160)}", weights=Path(weights_path))
    return ExportSource(model, arch, num_classes, in_chans, card, f"{arch_path} + {weights_path}")


def job_dir_of(path: str | os.PathLike) -> Path:
    """The search job folder of ``path``: ``path`` itself when it holds ``winners/`` or ``results.json``; for a
    pipeline's output folder (``pipeline.json``), the search job it records."""
    folder = Path(path).expanduser()
    shown = shorten(os.fspath(path), 160)
    if not folder.is_dir():
        raise InputError(f"--job: {shown}: no such folder (a search job's or a pipeline's output folder)")
    if (folder / WINNERS_DIR).is_dir() or (folder / "results.json").is_file():
        return folder
    record = folder / "pipeline.json"
    if record.is_file():
        try:
            data = json.loads(record.read_text(encoding="utf-8"))
            job = data["stages"]["search"]["job_dir"]
        except (OSError, UnicodeDecodeError, ValueError, TypeError, KeyError):
            raise InputError(f"--job: {shown}: its pipeline.json records no finished search stage") from None
        recorded = Path(job)
        for candidate in (recorded, folder / recorded.name):  # the output folder may have moved
            if (candidate / WINNERS_DIR).is_dir() or (candidate / "results.json").is_file():
                return candidate
        raise InputError(f"--job: {shown}: the search job its pipeline.json records ({shorten(job, 160)}) is gone")
    raise InputError(f"--job: {shown}: not a search job's folder (no {WINNERS_DIR}/ or results.json) nor a "
                     f"pipeline's output folder (no pipeline.json)")


def _parse_name(name: str) -> tuple[str, float] | None:
    method, sep, rest = name.rpartition("@")
    if not sep or not method or not rest.endswith("ms"):
        return None
    try:
        target = float(rest[:-2])
    except ValueError:
        return None
    return (method, target) if math.isfinite(target) else None


def job_winners(job_dir: Path) -> list[WinnerRef]:
    """The complete winners (a folder with its model card) a job saved, sorted by method and target."""
    winners = job_dir / WINNERS_DIR
    found = []
    if winners.is_dir():
        for folder in winners.iterdir():
            parsed = _parse_name(folder.name)
            if parsed and (folder / CARD_FILE).is_file() and (folder / WEIGHTS_FILE).is_file():
                found.append(WinnerRef(parsed[0], parsed[1], folder))
    return sorted(found)


def find_winner(job_dir: Path, method: str, target_ms: float) -> WinnerRef:
    """The job's winner of ``method`` at ``target_ms`` (matched as its folder name writes it, ``%g``); an unknown
    method or target is an :class:`InputError` listing the known ones."""
    winners = job_winners(job_dir)
    if not winners:
        raise InputError(f"--job: {job_dir}: no saved winners in {WINNERS_DIR}/ (did the search job finish?)")
    methods = sorted({w.method for w in winners})
    if method not in methods:
        raise InputError(f"--method: {shorten(repr(method))} has no winner in {job_dir} (its methods: "
                         f"{', '.join(methods)})")
    mine = [w for w in winners if w.method == method]
    wanted = winner_name(method, target_ms)
    for ref in mine:
        if ref.name == wanted or math.isclose(ref.target_ms, target_ms, rel_tol=1e-6):
            return ref
    raise InputError(f"--target: {method} has no winner at {target_ms:g} ms in {job_dir} (its targets: "
                     f"{', '.join(f'{w.target_ms:g}' for w in mine)} ms)")
