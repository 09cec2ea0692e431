"""Training callbacks: the events a training run emits, for progress output, tracking and tests.

The loop calls, in order: :meth:`Callback.on_train_start` once (after a resume, with the restored state),
:meth:`Callback.on_step_end` every ``run.log_every`` steps, :meth:`Callback.on_epoch_end` after each epoch's
checkpoint is written, and :meth:`Callback.on_train_end` once with the :class:`Result`. Callbacks run on rank 0 only
unless ``rank0_only`` is False. A callback that raises stops the run (a crash, from which a restart resumes at the
last checkpoint). Tracking callbacks live in :mod:`slimnas.platform` and are handed in by the caller; this package
never imports a tracking backend.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

if TYPE_CHECKING:
    from slimnas.search_spaces import Arch, SearchSpace

__all__ = ["Callback", "CallbackList", "TrainState", "Result"]


@dataclass
class TrainState:
    """What callbacks may read (and must not modify) during a run."""

    kind: str  # "supernet" or "arch"
    config: Any  # the validated SupernetTrainConfig / ArchTrainConfig
    model: nn.Module  # the unwrapped SuperNet or EfficientFormer
    space: SearchSpace | None
    arch: Arch | None  # the arch being trained (train_arch) or evaluated each epoch (the supernet's max arch)
    rank: int = 0
    world_size: int = 1
    epoch: int = 0  # completed epochs
    epochs: int = 0
    global_step: int = 0
    steps_per_epoch: int = 0
    start_epoch: int = 0  # where this process started (> 0 after a resume)
    history: list[dict[str, float]] = field(default_factory=list)
    checkpoint: Path | None = None  # the last checkpoint file written by this process (rank 0)
    stored_checkpoint: str | None = None  # where that checkpoint is kept (Ray: in the run's storage), rank 0


@dataclass
class Result:
    """What a training run returns."""

    model: nn.Module
    history: list[dict[str, float]]
    checkpoint: Path | None
    epochs: int
    resumed_from: int = 0  # the epoch this process started from (0: a fresh run)

    @property
    def metrics(self) -> dict[str, float]:
        return self.history[-1] if self.history else {}


class Callback:
    """Base class: override the events you need. See the module docstring for when each is called."""

    #: Run only on the rank-0 process (tracking, progress). Set False for per-rank callbacks.
    rank0_only: bool = True

    def on_train_start(self, state: TrainState) -> None:
        """Before the first step (of this process; ``state.start_epoch`` > 0 after a resume)."""

    def on_step_end(self, state: TrainState, metrics: dict[str, float]) -> None:
        """Every ``run.log_every`` steps: ``loss``, ``lr``, ``tau`` (supernet), ``epoch`` (fractional)."""

    def on_epoch_end(self, state: TrainState, metrics: dict[str, float]) -> None:
        """After the epoch's checkpoint is written (``state.checkpoint``); ``metrics`` is ``state.history[-1]``."""

    def on_train_end(self, state: TrainState, result: Result) -> None:
        """After the final checkpoint (the supernet's channels are sorted by then)."""


class CallbackList:
    """Dispatches events to the callbacks that run on this rank."""

    def __init__(self, callbacks: Iterable[Callback] | None, rank: int = 0) -> None:
        self.callbacks = [cb for cb in (callbacks or ()) if rank == 0 or not cb.rank0_only]

    def __getattr__(self, name: str):
        if not name.startswith("on_"):
            raise AttributeError(name)

        def dispatch(*args: Any) -> None:
            for cb in self.callbacks:
                getattr(cb, name)(*args)

        return dispatch
