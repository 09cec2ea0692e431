"""A search job's winners as files, and loading one back: :func:`load_winner` ``(folder) -> (model, card)``.

A search job saves the answer of every (method, target) in ``<job>/winners/<method>@<target>ms/``
(:func:`winner_name`), three files:

- ``weights.pt``: the state_dict of exactly the network whose top-1 the job reports: the subnet extracted from the
  supernet with its BatchNorm statistics re-estimated on the calibration images
  (:meth:`slimnas.trainers.Evaluator.calibrated`); tensors only, read with ``torch.load(weights_only=True)``;
- ``arch.json``: the arch (:meth:`Arch.from_dict <slimnas.search_spaces.Arch.from_dict>` reads it);
- ``model.json``: the model card (:class:`ModelCard`): what rebuilds the network (family, space, arch, class count,
  input size and channels, widths) and where it comes from (method, target, the supernet checkpoint and its SHA-256,
  the latency table and its backend and device, predicted and measured latency, top-1 and the images it was measured
  on, the slimnas version). Written last: a folder with a card is complete.

The same files are the artifacts of the winner's MLflow child run. This module imports neither ray nor mlflow; torch
only when a winner is saved or loaded.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slimnas._io import atomic_write, atomic_write_text
from slimnas.errors import InputError, shorten
from slimnas.search_spaces import Arch

__all__ = ["ModelCard", "load_winner", "build_network", "save_winner", "read_state_dict", "winner_name",
           "winner_folder", "CARD_FORMAT",
           "WINNERS_DIR", "WEIGHTS_FILE", "ARCH_FILE", "CARD_FILE"]

#: The card's ``format`` field (bumped when a field changes meaning).
CARD_FORMAT = "slimnas.model-card/1"
#: A job's winners' folder, inside the job's folder.
WINNERS_DIR = "winners"
WEIGHTS_FILE, ARCH_FILE, CARD_FILE = "weights.pt", "arch.json", "model.json"


def winner_name(method: str, target_ms: float) -> str:
    """The folder (and MLflow child run) name of a (method, target) answer, e.g. ``slimming@1.64ms``."""
    return f"{method}@{target_ms:g}ms"


def winner_folder(job_dir: str | os.PathLike, method: str, target_ms: float) -> Path:
    """Where a search job in ``job_dir`` saves its (method, target) winner."""
    return Path(job_dir) / WINNERS_DIR / winner_name(method, target_ms)


@dataclass(frozen=True)
class ModelCard:
    """What a saved winner is and where it comes from (``model.json``).

    ``top1`` is the saved network's top-1 on ``eval_images`` validation images, its BatchNorm statistics estimated on
    ``calib_images`` calibration images: what the job reports. ``predicted_ms`` is the latency table's prediction,
    ``measured_ms``/``meets_target`` the job's end-to-end measurement (``None`` where it was not measured).

    A *retrained* winner (the pipeline's retrain stage, :mod:`slimnas.platform.stages.retrain`) has the same files
    and card, its ``weights.pt`` the retrained network's, plus ``retrained_top1`` (what those weights score on the
    same ``eval_images`` validation images, with their own BatchNorm statistics), ``retrain_init`` (``supernet``:
    fine-tuned from the winner's saved weights; ``scratch``) and ``retrain_epochs``; ``top1`` stays the winner's
    supernet-weight top-1. The three are ``None`` (and absent from ``model.json``) for a search job's winner.
    """

    arch: Arch
    space: str  # the search space's name
    num_classes: int
    in_chans: int
    method: str
    target_ms: float
    top1: float
    eval_images: int
    calib_images: int
    predicted_ms: float | None
    measured_ms: float | None
    meets_target: bool | None
    supernet_checkpoint: str
    supernet_sha256: str
    latency_table: str
    latency_backend: str
    latency_device: str
    latency_table_created: str
    slimnas_version: str
    retrained_top1: float | None = None
    retrain_init: str | None = None
    retrain_epochs: int | None = None

    #: What the arch says, read through the card: the family's name, the input size, each stage's channels.
    family = property(lambda self: self.arch.family)
    img_size = property(lambda self: self.arch.img_size)
    widths = property(lambda self: tuple(self.arch.widths))

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: the fields, with the arch as :meth:`Arch.to_dict` and the family, input size and widths
        written out (read back from the arch)."""
        out: dict[str, Any] = {"format": CARD_FORMAT, "family": self.family, "space": self.space,
                               "num_classes": self.num_classes, "in_chans": self.in_chans,
                               "img_size": self.img_size, "widths": list(self.widths), "arch": self.arch.to_dict()}
        for name in _FIELDS:
            if name not in out:
                out[name] = getattr(self, name)
        for name in _RETRAIN_FIELDS:
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out

    @classmethod
    def from_dict(cls, data: Any, source: str = CARD_FILE) -> ModelCard:
        """The card of :meth:`to_dict`'s form; anything else is an :class:`InputError` naming ``source`` and the
        field."""
        if not isinstance(data, dict):
            raise InputError(f"{source}: expected a JSON object, got {type(data).__name__}")
        if data.get("format") != CARD_FORMAT:
            raise InputError(f"{source}: format: expected {CARD_FORMAT!r}, got {data.get('format')!r}")
        missing = [name for name in _FIELDS if name not in data]
        if missing:
            raise InputError(f"{source}: {missing[0]}: missing")
        try:
            arch = Arch.from_dict(data["arch"])
        except (ValueError, TypeError, InputError) as exc:
            raise InputError(f"{source}: arch: {exc}") from None
        values: dict[str, Any] = {"arch": arch}
        for name, kind in {**_FIELDS, **_RETRAIN_FIELDS}.items():
            if name == "arch":
                continue
            value = data.get(name)
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            optional = name in _OPTIONAL or name in _RETRAIN_FIELDS
            if not (isinstance(value, kind) and not (kind is int and isinstance(value, bool))) and not (
                    optional and value is None):
                raise InputError(f"{source}: {name}: expected {kind.__name__}{' or null' if optional else ''}, "
                                 f"got {value!r}")
            values[name] = value
        return cls(**values)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the card as JSON, atomically."""
        return atomic_write_text(path, json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> ModelCard:
        """A card file (:class:`InputError` naming the file when it is missing or not a card)."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise InputError(f"{path}: no such file") from None
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise InputError(f"{path}: not a JSON model card ({exc})") from None
        return cls.from_dict(data, source=str(path))


#: The card's fields and their JSON types (``arch``: its own form).
_FIELDS: dict[str, type] = {"arch": dict, "space": str, "num_classes": int, "in_chans": int, "method": str,
                            "target_ms": float, "top1": float, "eval_images": int, "calib_images": int,
                            "predicted_ms": float, "measured_ms": float, "meets_target": bool,
                            "supernet_checkpoint": str, "supernet_sha256": str, "latency_table": str,
                            "latency_backend": str, "latency_device": str, "latency_table_created": str,
                            "slimnas_version": str}
_OPTIONAL = {"predicted_ms", "measured_ms", "meets_target"}
#: A retrained winner's fields (optional: written only when set).
_RETRAIN_FIELDS: dict[str, type] = {"retrained_top1": float, "retrain_init": str, "retrain_epochs": int}


def save_winner(folder: str | os.PathLike, state_dict: dict[str, Any], card: ModelCard) -> Path:
    """Write a winner's ``weights.pt`` (``torch.save`` of ``state_dict``'s tensors, on CPU), ``arch.json`` and,
    last, ``model.json`` into ``folder``, each atomically; returns the folder."""
    import torch

    folder = Path(folder)
    tensors = {key: value.detach().cpu() for key, value in state_dict.items()}
    atomic_write(folder / WEIGHTS_FILE, lambda tmp: torch.save(tensors, tmp))
    atomic_write_text(folder / ARCH_FILE, json.dumps(card.arch.to_dict(), indent=1) + "\n")
    card.save(folder / CARD_FILE)
    return folder


def read_state_dict(path: str | os.PathLike, device: str = "cpu", what: str | None = None) -> dict[str, Any]:
    """The state_dict in ``path``, read with ``torch.load(weights_only=True)`` (a pickled module is refused, never
    run); a missing, unreadable or non-state_dict file is an :class:`InputError` naming it (after ``what:``)."""
    import torch

    weights = Path(path)
    prefix = f"{what}: " if what else ""
    if not weights.is_file():
        raise InputError(f"{prefix}{weights}: no such file")
    try:
        state = torch.load(weights, map_location=device, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable or unsafe file is the same user error
        raise InputError(f"{prefix}{weights}: not a state_dict torch loads with weights_only=True "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"{prefix}{weights}: expected a state_dict (names to tensors), got {type(state).__name__}")
    return state


def load_winner(folder: str | os.PathLike, device: str = "cpu") -> tuple[Any, ModelCard]:
    """The network a search job saved in ``folder`` (``<job>/winners/<method>@<target>ms``, or the artifacts of its
    MLflow child run), in eval mode on ``device``, and its :class:`ModelCard`.

    The network is the family's ``build_model(arch, num_classes=card.num_classes, in_chans=card.in_chans)`` holding
    ``weights.pt`` (read with ``torch.load(weights_only=True)``): exactly the network whose top-1 the job reports.
    A missing or malformed file is an :class:`InputError` naming it.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such winner folder (a search job writes them to <job>/{WINNERS_DIR}/)")
    card = ModelCard.load(folder / CARD_FILE)
    weights = folder / WEIGHTS_FILE
    state = read_state_dict(weights, device)
    model = build_network(card.arch, state, num_classes=card.num_classes, in_chans=card.in_chans,
                          what=str(folder / CARD_FILE), weights=weights)
    return model.to(device), card


def build_network(arch: Arch, state: dict[str, Any], *, num_classes: int, in_chans: int, what: str,
                  weights: str | os.PathLike) -> Any:
    """``arch``'s network (its family's eager form) with the weights ``state`` (read from ``weights``), in eval mode.

    An arch the family cannot build, or weights that do not fit it, is an :class:`InputError` naming ``what`` (where
    the arch came from) or the weights file."""
    try:
        model = arch.space_family.build_model(arch, num_classes=num_classes, in_chans=in_chans)
    except InputError as exc:
        raise InputError(f"{what}: {exc}") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = next((line.strip() for line in str(exc).splitlines()[1:] if line.strip()), str(exc))
        raise InputError(f"{weights}: does not fit the network of {what} ({shorten(first, 200)})") from None
    return model.eval()
