"""The distributed context of a training loop: rank, world size, device and the collectives the loop needs.

Plain ``torch.distributed``; whoever starts the processes (Ray Train's ``TorchTrainer`` in
:mod:`slimnas.trainers.ray_train`, ``torchrun``, or nobody for a single process) initialises the process group.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as torch_dist

__all__ = ["DistContext", "resolve_device"]


def resolve_device(name: str) -> torch.device:
    """``auto``: the GPU when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("run.device: 'cuda' asked for but no GPU is visible")
    return torch.device(name)


@dataclass
class DistContext:
    """Where this process sits. ``DistContext()`` is a single process on the CPU."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @classmethod
    def current(cls, device: torch.device) -> DistContext:
        """From an initialised default process group, else a single process."""
        if torch_dist.is_available() and torch_dist.is_initialized():
            return cls(torch_dist.get_rank(), torch_dist.get_world_size(), device)
        return cls(0, 1, device)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def all_reduce_sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over ranks (float64)."""
        if not self.distributed:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self._comm_device())
        torch_dist.all_reduce(t)
        return t.cpu().tolist()

    def all_reduce_max(self, value: float) -> float:
        if not self.distributed:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self._comm_device())
        torch_dist.all_reduce(t, op=torch_dist.ReduceOp.MAX)
        return float(t.item())

    def all_gather_object(self, obj: Any) -> list[Any]:
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.world_size
        torch_dist.all_gather_object(out, obj)
        return out

    def broadcast_buffers(self, module: torch.nn.Module) -> None:
        """Copy rank 0's buffers (BatchNorm running statistics) to every rank.

        DDP broadcasts buffers at the start of each forward, so after the last step of an epoch each rank holds the
        statistics of its own last batch; this makes the ranks identical again before evaluation and checkpoints.
        """
        if self.distributed:
            for buffer in module.buffers():
                torch_dist.broadcast(buffer, src=0)

    def barrier(self) -> None:
        if self.distributed:
            torch_dist.barrier()

    def _comm_device(self) -> torch.device:
        return self.device if torch_dist.get_backend() == "nccl" else torch.device("cpu")
