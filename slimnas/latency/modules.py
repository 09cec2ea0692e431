"""The module and example input that a backend times for each table entry, and for whole networks.

Two forms, recorded in the table's metadata:

- ``fused`` (default for the torch backends): the family's deployment form (EfficientFormer:
  :func:`~slimnas.search_spaces.efficientformer.fuse_for_inference`), each part being the very module the deployed
  network runs.
- ``eager``: the standalone ``build_model`` modules, for backends whose compiler fuses on its own (ONNX Runtime,
  Core ML).

The modules themselves are the family's (:meth:`~slimnas.search_spaces.SpaceFamily.part_module`; EfficientFormer's in
:mod:`slimnas.search_spaces.efficientformer._part_modules`).

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
from slimnas.search_spaces import DEFAULT_FAMILY, Arch, Part, SearchSpace, get_family

__all__ = ["FORMS", "part_module", "network_module", "network_parts", "DTYPES", "Rotation", "MAX_ROTATION",
           "auto_rotation_mb", "resolve_rotation_mb", "part_weight_mib"]

MAX_ROTATION = 32
AUTO_ROTATION_CAP_MB = 32.0

FORMS = ("fused", "eager")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


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
                rotation_mb: float = 0.0, family: str = DEFAULT_FAMILY) -> tuple[nn.Module, torch.Tensor]:
    """``(module, example input)`` for one table entry of ``family``, in eval mode, float32, on CPU."""
    module, example = _part_module(part, img_size, batch, form, family)
    size = _nbytes(module)
    if rotation_mb <= 0 or size == 0:
        return module, example
    count = min(MAX_ROTATION, max(1, -(-int(rotation_mb * 2**20) // size)))
    if count == 1:
        return module, example
    return Rotation([module] + [copy.deepcopy(module) for _ in range(count - 1)]), example


def part_weight_mib(part: Part, img_size: int, form: str = "fused", family: str = DEFAULT_FAMILY) -> float:
    """MiB of weights (parameters and buffers) of one part's module: its share of a network's working set."""
    return _nbytes(_part_module(part, img_size, 1, form, family)[0]) / 2**20


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


def _part_module(part: Part, img_size: int, batch: int, form: str, family: str) -> tuple[nn.Module, torch.Tensor]:
    _check_form(form)
    kinds = get_family(family).part_kinds
    if part.kind not in kinds:
        raise ValueError(f"part.kind: unknown part kind {part.kind!r} (expected one of {kinds})")
    return get_family(family).part_module(part, img_size, batch, form)


def network_module(arch: Arch, batch: int = 1, form: str = "fused", num_classes: int = 1000,
                   in_chans: int = 3) -> tuple[nn.Module, torch.Tensor]:
    """``(module, example input)`` for a whole network of ``arch``: its family's ``build_model`` in eval mode, in
    the deployment form (``deploy``) when ``form`` is ``"fused"``."""
    _check_form(form)
    family = get_family(arch.family)
    model = family.build_model(arch, num_classes=num_classes, in_chans=in_chans).eval()
    if form == "fused":
        model = family.deploy(model)
    return model, torch.randn(batch, in_chans, arch.img_size, arch.img_size)


def network_parts(arch: Arch, batch: int = 1, form: str = "fused", num_classes: int = 1000,
                  in_chans: int = 3) -> tuple[nn.Module, list[nn.Module], torch.Tensor]:
    """``(network, modules, example)``: the network of :func:`network_module` and the modules it runs, in order, one
    per part of :func:`~slimnas.latency._parts.parts_of` (``modules[i]`` is part ``i``; calling them in turn computes
    the network). What :mod:`slimnas.latency.context` times inside running networks."""
    _check_form(form)
    return get_family(arch.family).network_parts(arch, batch, form, num_classes, in_chans)
