"""The standalone EfficientFormer network built from an :class:`Arch` (Li et al., NeurIPS 2022, Fig. 3).

``build_model(arch)`` returns a plain ``nn.Module`` with no supernet machinery. Its module tree mirrors timm's
``EfficientFormer`` (``stem``, ``stages.{i}.downsample``, ``stages.{i}.blocks.{j}``, ``norm``, ``head``, ``head_dist``)
so that the three presets at 224 load timm's ``efficientformer_l1/l3/l7`` state_dicts with a strict
``load_state_dict`` and compute the same outputs.

Reshapes: a :class:`Flat` (4D -> 3D) goes right before the first MB3D of a stage; a stage other than the last that
ends in MB3D blocks ends with an :class:`Unflat` (3D -> 4D) so the next stage's strided conv sees a 4D tensor; a last
stage that ends in MB4D ends with a ``Flat`` because the classifier works on tokens. Each reshape is a real
transpose-and-copy of the activation; the latency tables time them as ``reshape`` entries.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from timm.layers import calculate_drop_path_rates, trunc_normal_
from torch import nn

from .._arch import Arch, BlockRef
from ._blocks import MB3D, MB4D, Downsample, Flat, Stem, Unflat, blocked_layout_export
from ._constants import KIND_3D, KIND_4D

__all__ = ["EfficientFormer", "Stage", "build_model"]


class Stage(nn.Module):
    """One stage: an optional strided-conv downsample, then the blocks (with the reshapes they need)."""

    def __init__(
        self,
        in_dim: int,
        dim: int,
        refs: Sequence[BlockRef],
        grid: int,
        downsample: bool,
        last: bool,
        drop_path: Sequence[float],
        layer_scale_init_value: float = 1e-5,
    ) -> None:
        super().__init__()
        self.downsample = Downsample(in_dim, dim) if downsample else nn.Identity()
        blocks: list[nn.Module] = []
        tokens = False  # is the running activation 3D?
        for ref, dpr in zip(refs, drop_path):
            if ref.kind == KIND_4D:
                blocks.append(MB4D(dim, drop_path=dpr, layer_scale_init_value=layer_scale_init_value))
            elif ref.kind == KIND_3D:
                if not tokens:
                    blocks.append(Flat())
                    tokens = True
                blocks.append(MB3D(dim, grid, drop_path=dpr, layer_scale_init_value=layer_scale_init_value))
        if last and not tokens:
            blocks.append(Flat())
        elif not last and tokens:
            blocks.append(Unflat(grid))
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


class EfficientFormer(nn.Module):
    """A standalone EfficientFormer for one :class:`Arch`.

    Args:
        arch: the architecture.
        num_classes: classifier outputs (0 for a feature extractor).
        in_chans: input channels.
        img_size: input size; defaults to ``arch.img_size`` (it sizes the attention bias grids).
        drop_rate: dropout before the classifier.
        drop_path_rate: stochastic depth, rising linearly over the blocks (timm's stage-wise rule).
        layer_scale_init_value: initial layer-scale multiplier (1e-5 in the paper).
    """

    def __init__(
        self,
        arch: Arch,
        num_classes: int = 1000,
        in_chans: int = 3,
        img_size: int | None = None,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        layer_scale_init_value: float = 1e-5,
    ) -> None:
        super().__init__()
        if img_size is not None and img_size != arch.img_size:
            arch = Arch(img_size, arch.widths, arch.blocks)
        self.arch = arch
        self.num_classes = num_classes
        widths = arch.widths
        self.stem = Stem(in_chans, widths[0])
        dpr = calculate_drop_path_rates(drop_path_rate, list(arch.depths), stagewise=True)
        stages = []
        for s in range(arch.num_stages):
            stages.append(
                Stage(
                    widths[s - 1] if s else widths[0],
                    widths[s],
                    arch.active_blocks(s),
                    arch.grids[s],
                    downsample=s > 0,
                    last=s == arch.num_stages - 1,
                    drop_path=dpr[s],
                    layer_scale_init_value=layer_scale_init_value,
                )
            )
        self.stages = nn.Sequential(*stages)
        self.num_features = widths[-1]
        self.norm = nn.LayerNorm(self.num_features)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.head_dist = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        #: When True (and training) the forward returns ``(logits, distillation_logits)`` for hard distillation.
        self.distilled_training = False
        self.apply(_init_weights)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens ``(B, N, C)`` after the final LayerNorm."""
        return self.norm(self.stages(self.stem(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False):
        x = self.head_drop(x.mean(dim=1))
        if pre_logits:
            return x
        if not self.training and blocked_layout_export() and isinstance(self.head, nn.Linear):
            # One Gemm in the exported graph: the mean of two linear heads is the linear head of their mean.
            head, dist = self.head, self.head_dist
            return nn.functional.linear(x, (head.weight + dist.weight) / 2, (head.bias + dist.bias) / 2)
        x, x_dist = self.head(x), self.head_dist(x)
        if self.distilled_training and self.training:
            return x, x_dist
        return (x + x_dist) / 2

    def forward(self, x: torch.Tensor):
        return self.forward_head(self.forward_features(x))

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {name for name, _ in self.named_parameters() if "attention_biases" in name}


def _init_weights(module: nn.Module) -> None:
    # timm's init for EfficientFormer: truncated normal (std 0.02) for linear layers, zero biases.
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def build_model(
    arch: Arch,
    num_classes: int = 1000,
    img_size: int | None = None,
    **kwargs,
) -> EfficientFormer:
    """Build the standalone network of ``arch`` (a plain ``nn.Module``).

    For ``Arch.preset("l1" | "l3" | "l7")`` at 224 its state_dict has timm's key names and shapes.
    ``kwargs`` go to :class:`EfficientFormer` (``in_chans``, ``drop_rate``, ``drop_path_rate``, ...).
    """
    if not isinstance(arch, Arch):
        raise ValueError(f"arch: expected an Arch, got {type(arch).__name__}")
    return EfficientFormer(arch, num_classes=num_classes, img_size=img_size, **kwargs)
