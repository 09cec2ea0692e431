"""Building blocks of the EfficientFormer family (Li et al., NeurIPS 2022, Sec. 4.1, Fig. 3).

The blocks keep timm's module and parameter names (``timm/models/efficientformer.py``) so that models built from the
paper's presets load timm's ``efficientformer_l1/l3/l7`` state_dicts unchanged. Where timm's class already is the
paper's block it is used as is (stem, downsample, the pool mixer, the conv MLP); MB3D is re-declared because timm
fixes its attention grid to 7x7 (224 input) while the search space needs any input size and MB3D in stage 3.

Shapes: 4D blocks take ``(B, C, H, W)``; 3D blocks take ``(B, N, C)`` with ``N = H * W`` tokens.
"""

from __future__ import annotations

import torch
from timm.layers import DropPath, LayerScale, Mlp
from timm.models.efficientformer import Attention as _TimmAttention
from timm.models.efficientformer import Downsample, Flat, MetaBlock2d, Stem4
from torch import nn

from .._export_hints import blocked_layout_export, onnx_blocked_layout

__all__ = ["Stem", "Downsample", "MB4D", "MB3D", "Flat", "Unflat", "Attention", "MLP_RATIO", "onnx_blocked_layout",
           "blocked_layout_export"]

#: MLP hidden width / block width, for both MB4D and MB3D (paper Sec. 4.1).
MLP_RATIO = 4


class Attention(_TimmAttention):
    """timm's EfficientFormer attention (paper Eq. 6) at any token grid (``resolution``).

    timm caches the gathered attention bias per device in eval mode; this subclass also drops that cache when
    weights are loaded, so a model that ran in eval mode before ``load_state_dict`` does not use stale biases.
    """

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        self.attention_bias_cache = {}
        super()._load_from_state_dict(*args, **kwargs)

    def get_attention_biases(self, device: torch.device) -> torch.Tensor:
        """The gathered bias; not cached while ``torch.export`` traces (an attribute assigned during export is
        neither kept by the program nor allowed without a warning)."""
        if torch.compiler.is_exporting():
            return self.attention_biases[:, self.attention_bias_idxs]
        return super().get_attention_biases(device)


class Stem(Stem4):
    """Conv stem: two 3x3 stride-2 convs, each followed by BN and ReLU; stride 4 (paper Fig. 3).

    The first conv has ``out_chs // 2`` channels, as in timm.
    """


class MB4D(MetaBlock2d):
    """MB4D (paper Eq. 3-4): ``x = x + ls1 * (AvgPool3x3(x) - x)``; ``x = x + ls2 * Conv1x1-BN-GELU-Conv1x1-BN(x)``.

    No normalization before the pool mixer; MLP hidden width ``4 * dim``; layer scale initialised to 1e-5.

    **In an ONNX export under** :func:`onnx_blocked_layout` (eval mode) the mixer is written as
    ``(1 - ls1) * x + ls1 * AvgPool3x3(x)``, its two per-channel scalings as ``BatchNormalization`` nodes (zero mean,
    unit variance, epsilon 0): the same function, in the form ONNX Runtime's CPU provider keeps in its blocked NCHWc
    layout (it turns a ``BatchNormalization`` on an NCHWc tensor into a depthwise 1x1 convolution and folds the
    residual sums into the convolutions). Written as timm writes it (``Sub``, ``Mul`` by a constant, ``Add``), the
    default, the mixer leaves that layout, and every MB4D block pays two reorders out of it and two back (figures:
    ``docs/benchmarks.md``, "Export").
    """

    def __init__(self, dim: int, drop_path: float = 0.0, layer_scale_init_value: float = 1e-5) -> None:
        super().__init__(dim, mlp_ratio=MLP_RATIO, drop_path=drop_path,
                         layer_scale_init_value=layer_scale_init_value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training and blocked_layout_export():
            gamma = self.ls1.gamma
            x = _channel_scale(self.token_mixer.pool(x), gamma) + _channel_scale(x, 1.0 - gamma)
            return x + self.ls2(self.mlp(x))
        return super().forward(x)


def _channel_scale(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``x * scale`` per channel of ``(B, C, H, W)``, as one ``batch_norm`` (zero mean, unit variance, eps 0)."""
    zeros = torch.zeros_like(scale)
    return nn.functional.batch_norm(x, zeros, torch.ones_like(scale), scale, zeros, False, 0.0, 0.0)


class MB3D(nn.Module):
    """MB3D (paper Eq. 5-6): ``x = x + ls1 * MHSA(LN(x))``; ``x = x + ls2 * Linear-GELU-Linear(LN(x))``.

    MHSA has 8 heads, key dim 32, value dim 4 x 32, and a learned attention bias indexed by the relative offset
    ``(|dy|, |dx|)`` of two tokens on the ``grid x grid`` token grid of the block's stage, so the block works at any
    input size (``grid = img_size / stride``).
    """

    def __init__(self, dim: int, grid: int, drop_path: float = 0.0, layer_scale_init_value: float = 1e-5) -> None:
        super().__init__()
        self.grid = grid
        self.norm1 = nn.LayerNorm(dim)
        self.token_mixer = Attention(dim, key_dim=32, num_heads=8, attn_ratio=4, resolution=grid)
        self.ls1 = LayerScale(dim, layer_scale_init_value)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(in_features=dim, hidden_features=dim * MLP_RATIO, act_layer=nn.GELU)
        self.ls2 = LayerScale(dim, layer_scale_init_value)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.ls1(self.token_mixer(self.norm1(x))))
        x = x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
        return x


class Unflat(nn.Module):
    """The reshape 3D -> 4D: ``(B, N, C) -> (B, C, grid, grid)``.

    Needed only when a stage other than the last ends in MB3D blocks (the paper's space allows MB3D in stage 3): the
    next stage's strided-conv downsample works on 4D tensors. Its cost is a transpose plus a copy of the activation,
    which the latency tables measure as their own ``reshape`` entries.
    """

    def __init__(self, grid: int) -> None:
        super().__init__()
        self.grid = grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.onnx.is_in_onnx_export():
            # batch and channels read from x.shape, as the fused form's ToGrid does: the ONNX graph keeps its batch
            # dimension dynamic (unflatten's ONNX conversion computes the dimension index, the exporter loses the
            # symbolic batch there and folds the next attention's reshape to the traced batch)
            return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], self.grid, self.grid)
        # unflatten elsewhere: no shape arithmetic, so a traced module converts to Core ML (its int() cast of a traced
        # size fails); the same values either way
        return x.transpose(1, 2).unflatten(2, (self.grid, self.grid))

    def extra_repr(self) -> str:
        return f"grid={self.grid}"
