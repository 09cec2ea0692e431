"""Fakes for training tests (torch): callbacks that fail once or record per-rank state, and a tiny config."""

from __future__ import annotations

import torch

from slimnas.trainers import Callback

__all__ = ["FailOnce", "RankRecorder", "tiny_train_config"]


class FailOnce(Callback):
    """A training callback that fails once: at the end of epoch ``epoch`` on rank ``rank``, unless ``marker`` exists.

    It creates ``marker`` first, so the restarted run passes. ``hard=True`` kills the process (``os._exit``), as a
    crashed worker would; otherwise it raises. Runs on every rank (``rank0_only = False``).
    """

    rank0_only = False

    def __init__(self, epoch: int, marker: str, rank: int = 0, hard: bool = False) -> None:
        self.epoch, self.marker, self.rank, self.hard = epoch, marker, rank, hard

    def on_epoch_end(self, state, metrics) -> None:
        import os
        from pathlib import Path

        if state.epoch == self.epoch and state.rank == self.rank and not Path(self.marker).exists():
            Path(self.marker).touch()
            if self.hard:
                os._exit(1)
            raise RuntimeError(f"injected failure after epoch {self.epoch} on rank {self.rank}")


class RankRecorder(Callback):
    """A training callback for cross-rank checks. Every process appends its start epoch to
    ``folder/starts-rank<r>.txt``; at the end it saves the hard-mode paths sampled at every logged step and the
    final alpha and weights to ``folder/rank<r>-<pid>.pt``."""

    rank0_only = False

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.samples: list = []
        self.start_epoch = 0

    def on_train_start(self, state) -> None:
        from pathlib import Path

        self.start_epoch = state.start_epoch
        Path(self.folder).mkdir(parents=True, exist_ok=True)
        with open(Path(self.folder) / f"starts-rank{state.rank}.txt", "a") as handle:
            handle.write(f"{state.start_epoch}\n")

    def on_step_end(self, state, metrics) -> None:
        self.samples.append([state.global_step, getattr(state.model, "last_sample", None)])

    def on_train_end(self, state, result) -> None:
        import os
        from pathlib import Path

        alpha = [a.detach().cpu().clone() for a in state.model.arch_parameters()]
        payload = {"start_epoch": self.start_epoch, "samples": self.samples, "alpha": alpha,
                   "stored_checkpoint": state.stored_checkpoint,
                   "weights": {k: v.detach().cpu().clone() for k, v in state.model.state_dict().items()}}
        Path(self.folder).mkdir(parents=True, exist_ok=True)
        torch.save(payload, Path(self.folder) / f"rank{state.rank}-{os.getpid()}.pt")


def tiny_train_config(out_dir, name: str = "run", **sections) -> dict:
    """A fast supernet training config on the digits (3 steps of 16 images, no lr warm-up) writing under
    ``out_dir``; each keyword updates one section (one level deep), e.g. ``gumbel={"mode": "hard"}``."""
    import copy

    cfg = {
        "space": "tiny",
        "data": {"kind": "digits", "batch_size": 16},
        "optim": {"lr": 0.05, "warmup_epochs": 0},
        "run": {"name": name, "out_dir": str(out_dir), "epochs": 1, "max_steps_per_epoch": 3},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return copy.deepcopy(cfg)
