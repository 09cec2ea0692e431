"""The module and example input that a backend times for each table entry, and for whole networks.

Two forms, recorded in the table's metadata:

- ``fused`` (default for the torch backends): the deployment form of :func:`fuse_for_inference`, each part being the
  very module the fused network runs (NHWC activations in the 4D partition, so its reshapes are views).
- ``eager``: the standalone ``build_model`` modules (NCHW), for backends whose compiler fuses on its own (ONNX
  Runtime, Core ML). The eager 4D->3D reshape returns a strided view whose copy the next op pays; its part module makes
  the copy explicit (``.contiguous()``) so the table attributes that cost to the reshape.

Weights are random (timing does not depend on their values). Parts run at the table's batch size and at the
resolution of their stage (``img_size / stride``).

*Weight rotation* (``rotation_mb``): timed alone in a loop, a part keeps its weights in the core's cache, while inside a
network they were evicted by every other layer since the last inference. With ``rotation_mb > 0`` the part is built
``k`` times with independent weights, ``k`` the smallest count whose weights total at least ``rotation_mb`` MiB (at most
32), and successive calls rotate through the copies on the same input: weights come from farther caches or memory, as in
the network, while the input stays warm, as in the network. Measured on EfficientFormer at 224 px on a 2-core Xeon,
rotation through 32 MiB took the plain sum's mean error from -14% to -6%; on ``tiny`` at 64 px, from -19% to -3%
(``docs/benchmarks.md``). ``rotation_mb="auto"`` (the default of ``slimnas lut build``) rotates through the weights of
the space's largest network (:func:`auto_rotation_mb`): what passes through the caches between two calls of a part
inside that network; capped at ``AUTO_ROTATION_CAP_MB`` (32 MiB, far beyond the 2 MiB per-core L2 here), which bounds
the build's memory and time on large spaces (``l7``'s largest network has 311 MiB of weights). The copies are deep
copies of one built module (timing does not depend on weight values), cheaper than building and fusing it again.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from slimnas.errors import InputError
from slimnas.search_spaces.efficientformer import STAGE_STRIDES, Arch, SearchSpace, build_model, fuse_for_inference
from slimnas.search_spaces.efficientformer._blocks import MB3D, MB4D, Downsample, Flat, Stem, Unflat
from slimnas.search_spaces.efficientformer._fuse import (
    FusedDownsample,
    FusedHead,
    FusedMB3D,
    FusedMB4D,
    FusedStem,
    ToGrid,
    ToTokens,
)

from ._parts import Part

__all__ = ["FORMS", "part_module", "network_module", "network_parts", "DTYPES", "Rotation", "MAX_ROTATION",
           "auto_rotation_mb", "resolve_rotation_mb", "part_weight_mib"]

MAX_ROTATION = 32
AUTO_ROTATION_CAP_MB = 32.0

FORMS = ("fused", "eager")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


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


def _check_form(form: str) -> None:
    if form not in FORMS:
        raise ValueError(f"form: expected one of {FORMS}, got {form!r}")


class Rotation(nn.Module):
    """Calls its copies in turn, one per forward (see ``rotation_mb`` in the module docstring)."""

    def __init__(self, copies: list[nn.Module]) -> None:
        super().__init__()
        self.copies = nn.ModuleList(copies)
        self.turn = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        module = self.copies[self.turn]
        self.turn = (self.turn + 1) % len(self.copies)
        return module(x)


def _nbytes(module: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers()))


def part_module(part: Part, img_size: int, batch: int = 1, form: str = "fused",
                rotation_mb: float = 0.0) -> tuple[nn.Module, torch.Tensor]:
    """``(module, example input)`` for one table entry, in eval mode, float32, on CPU."""
    module, example = _part_module(part, img_size, batch, form)
    size = _nbytes(module)
    if rotation_mb <= 0 or size == 0:
        return module, example
    count = min(MAX_ROTATION, max(1, -(-int(rotation_mb * 2**20) // size)))
    if count == 1:
        return module, example
    return Rotation([module] + [copy.deepcopy(module) for _ in range(count - 1)]), example


def part_weight_mib(part: Part, img_size: int, form: str = "fused") -> float:
    """MiB of weights (parameters and buffers) of one part's module: its share of a network's working set."""
    return _nbytes(_part_module(part, img_size, 1, form)[0]) / 2**20


def auto_rotation_mb(space: SearchSpace, form: str = "fused", num_classes: int = 1000, in_chans: int = 3) -> float:
    """MiB of weights of the space's largest network (its max arch) in ``form``, rounded up to 0.5 MiB, at most
    ``AUTO_ROTATION_CAP_MB``."""
    model, _ = network_module(space.max_arch(), 1, form, num_classes, in_chans)
    return min(AUTO_ROTATION_CAP_MB, math.ceil(_nbytes(model) / 2**20 * 2) / 2)


def resolve_rotation_mb(rotation_mb: float | str, space: SearchSpace, form: str = "fused", num_classes: int = 1000,
                        in_chans: int = 3) -> float:
    """``rotation_mb`` as a number: ``"auto"`` resolved by :func:`auto_rotation_mb`; bad values raise naming it."""
    if rotation_mb == "auto":
        return auto_rotation_mb(space, form, num_classes, in_chans)
    try:
        value = float(rotation_mb)
    except (TypeError, ValueError):
        raise InputError(f"rotation_mb: expected 'auto' or MiB >= 0, got {rotation_mb!r}") from None
    if not math.isfinite(value) or not 0 <= value <= 65536:
        raise InputError(f"rotation_mb: expected 'auto' or MiB from 0 to 65536, got {rotation_mb!r}")
    return value


def _part_module(part: Part, img_size: int, batch: int, form: str) -> tuple[nn.Module, torch.Tensor]:
    _check_form(form)
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
    _check_form(form)
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
