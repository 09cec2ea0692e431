"""The module and example input a latency backend times for each EfficientFormer part, and for whole networks.

Two forms (see :mod:`slimnas.latency.modules`): ``fused``, the deployment form of :func:`fuse_for_inference` (NHWC
activations in the 4D partition, so its reshapes are views), each part being the very module the fused network runs;
and ``eager``, the standalone ``build_model`` modules (NCHW). The eager 4D->3D reshape returns a strided view whose
copy the next op pays; its part module makes the copy explicit (``.contiguous()``) so the table attributes that cost to
the reshape. Weights are random (timing does not depend on their values). Parts run at the table's batch size and at
the resolution of their stage (``img_size / stride``).
"""

from __future__ import annotations

import torch
from torch import nn

from .._arch import Arch
from .._family import Part
from ._blocks import MB3D, MB4D, Downsample, Flat, Stem, Unflat
from ._constants import STAGE_STRIDES
from ._fuse import FusedDownsample, FusedHead, FusedMB3D, FusedMB4D, FusedStem, ToGrid, ToTokens, fuse_for_inference
from ._model import build_model

__all__ = ["part_module", "network_module", "network_parts"]


class _EagerHead(nn.Module):
    def __init__(self, width: int, num_classes: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_classes) if num_classes else nn.Identity()
        self.head_dist = nn.Linear(width, num_classes) if num_classes else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x).mean(dim=1)
        return (self.head(x) + self.head_dist(x)) / 2


class _EagerToTokens(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.flat = Flat()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.flat(x).contiguous()


def part_module(part: Part, img_size: int, batch: int, form: str) -> tuple[nn.Module, torch.Tensor]:
    fused = form == "fused"
    grid = img_size // STAGE_STRIDES[part.stage]
    c_in, c_out, kind = part.c_in, part.c_out, part.kind
    if kind == "stem":
        stem = Stem(c_in, c_out).eval()
        return (FusedStem(stem) if fused else stem), torch.randn(batch, c_in, img_size, img_size)
    if kind == "downsample":
        g_in = img_size // STAGE_STRIDES[part.stage - 1]
        ds = Downsample(c_in, c_out).eval()
        if fused:
            return FusedDownsample(ds), torch.randn(batch, g_in, g_in, c_in)
        return ds, torch.randn(batch, c_in, g_in, g_in)
    if kind == "mb4d":
        block = MB4D(c_out).eval()
        if fused:
            return FusedMB4D(block), torch.randn(batch, grid, grid, c_out)
        return block, torch.randn(batch, c_out, grid, grid)
    if kind == "mb3d":
        block = MB3D(c_out, grid).eval()
        return (FusedMB3D(block) if fused else block), torch.randn(batch, grid * grid, c_out)
    if kind == "to_tokens":
        if fused:
            return ToTokens(), torch.randn(batch, grid, grid, c_out)
        return _EagerToTokens(), torch.randn(batch, c_out, grid, grid)
    if kind == "to_grid":
        return (ToGrid(grid) if fused else Unflat(grid)), torch.randn(batch, grid * grid, c_out)
    if kind == "head":
        head = _EagerHead(c_in, c_out).eval()
        if fused:
            return FusedHead(head.norm, head.head, head.head_dist), torch.randn(batch, grid * grid, c_in)
        return head, torch.randn(batch, grid * grid, c_in)
    raise ValueError(f"part.kind: unknown part kind {kind!r}")  # pragma: no cover - Part validates kinds


def network_module(arch: Arch, batch: int = 1, form: str = "fused", num_classes: int = 1000,
                   in_chans: int = 3) -> tuple[nn.Module, torch.Tensor]:
    """``(module, example input)`` for a whole network of ``arch``."""
    model = build_model(arch, num_classes=num_classes, in_chans=in_chans).eval()
    if form == "fused":
        model = fuse_for_inference(model)
    return model, torch.randn(batch, in_chans, arch.img_size, arch.img_size)


class _HeadOf(nn.Module):
    """The eager network's head as one module: its final LayerNorm, token mean and averaged classifiers."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.norm(x))


def network_parts(arch: Arch, batch: int = 1, form: str = "fused", num_classes: int = 1000,
                  in_chans: int = 3) -> tuple[nn.Module, list[nn.Module], torch.Tensor]:
    """``(network, modules, example)``: the network of :func:`network_module` and the modules it runs, in order, one
    per part of :func:`~slimnas.latency._parts.parts_of` (``modules[i]`` is part ``i``; calling them in turn computes
    the network). What :mod:`slimnas.latency.context` times inside running networks."""
    network, example = network_module(arch, batch, form, num_classes, in_chans)
    if form == "fused":
        modules = [network.stem]
        for downsample, blocks in zip(network.downsamples, network.stages):
            if not isinstance(downsample, nn.Identity):
                modules.append(downsample)
            modules += list(blocks)
        modules.append(network.head)
    else:
        modules = [network.stem]
        for stage in network.stages:
            if not isinstance(stage.downsample, nn.Identity):
                modules.append(stage.downsample)
            modules += list(stage.blocks)
        modules.append(_HeadOf(network))
    return network, modules, example
