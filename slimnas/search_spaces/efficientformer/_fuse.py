"""The deployment form of a standalone EfficientFormer: ``fuse_for_inference(model)``.

The paper attributes the speed of the 4D partition to CONV-BN, whose BatchNorm folds into the conv at inference
(Sec. 3, Observation 3). On a CPU, folding BN alone buys little (about 1.03x on timm's L1 here); a profile of timm's
L1 at batch 1 showed where the time goes instead (see ``docs/benchmarks.md``):

1. ``AvgPool2d(count_include_pad=False)`` on NCHW tensors runs a slow scalar kernel: ~19% of the time, 8-15x slower
   than the same pooling on channels-last memory.
2. The 1x1 convolutions (~55%) go through oneDNN with a layout reorder per call; on channels-last memory a 1x1 conv
   is a plain GEMM over ``(B*H*W, C)``, which MKL runs 1.4-2.4x faster at these sizes.
3. Small elementwise ops (sub, mul, add of the pool mixer and the layer scales) each make a pass over the activation.

So the fused network keeps the 4D partition in NHWC memory (``(B, H, W, C)`` contiguous) end to end:

- stem and downsample convs: BN folded into the conv, run on channels-last views;
- MB4D: the token mixer ``x + ls1 * (pool(x) - x)`` becomes one ``torch.lerp(x, pool(x), ls1)`` on a channels-last
  pool; the conv MLP becomes two ``F.linear`` GEMMs with BN1 folded into the first and BN2 and ``ls2`` into the
  second;
- MB3D: the attention scale folded into the query rows of ``qkv``, ``ls1`` into ``proj`` and ``ls2`` into ``fc2``;
  the gathered attention bias cached as a buffer (explicit ``softmax(QK^T + b)V`` beats ``scaled_dot_product_attention``
  with a float mask on CPU at these sizes);
- the 4D->3D and 3D->4D reshapes become free views (NHWC already is token-major);
- the two classifier heads (averaged at inference) merge into one linear layer.

The result is in eval mode, computes the same function as ``model.eval()`` within 1e-4 (float32), and has no
dropout, drop-path or BN left. It is meant for inference (latency measurement, export); it is not trainable.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ._blocks import MB3D, MB4D, Flat, Unflat
from ._model import EfficientFormer

__all__ = [
    "fuse_for_inference", "fuse_block", "FusedEfficientFormer", "FusedStem", "FusedDownsample", "FusedMB4D",
    "FusedMB3D", "FusedHead", "ToTokens", "ToGrid", "fold_bn",
]


@torch.no_grad()
def fold_bn(weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of ``bn(conv(x))`` as a single conv/linear (output channels on dim 0)."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    bias = torch.zeros_like(bn.running_mean) if bias is None else bias
    shape = (-1,) + (1,) * (weight.dim() - 1)
    return weight * scale.reshape(shape), (bias - bn.running_mean) * scale + bn.bias


def _conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=True)
    weight, bias = fold_bn(conv.weight, conv.bias, bn)
    fused.weight.data.copy_(weight)
    fused.bias.data.copy_(bias)
    return fused.to(memory_format=torch.channels_last)


class FusedStem(nn.Module):
    """The stem with BN folded: NCHW image in, NHWC activation out."""

    def __init__(self, stem: nn.Module) -> None:
        super().__init__()
        self.convs = nn.Sequential(_conv_bn(stem.conv1, stem.norm1), nn.ReLU(), _conv_bn(stem.conv2, stem.norm2),
                                   nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convs(x.contiguous(memory_format=torch.channels_last)).permute(0, 2, 3, 1)


class FusedDownsample(nn.Module):
    """The strided conv with BN folded, NHWC in and out (channels-last views on both sides: no copies)."""

    def __init__(self, downsample: nn.Module) -> None:
        super().__init__()
        self.conv = _conv_bn(downsample.conv, downsample.norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class FusedHead(nn.Module):
    """Final LayerNorm, token mean, and the two classifier heads merged into one linear layer."""

    def __init__(self, norm: nn.LayerNorm, head: nn.Module, head_dist: nn.Module) -> None:
        super().__init__()
        self.norm = copy.deepcopy(norm)
        self.head = None
        if isinstance(head, nn.Linear):
            # Inference averages the two heads: (W1 x + b1 + W2 x + b2) / 2 = ((W1 + W2) / 2) x + (b1 + b2) / 2.
            merged = nn.Linear(head.in_features, head.out_features)
            with torch.no_grad():
                merged.weight.copy_((head.weight + head_dist.weight) / 2)
                merged.bias.copy_((head.bias + head_dist.bias) / 2)
            self.head = merged

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x).mean(dim=1)
        return x if self.head is None else self.head(x)


class FusedMB4D(nn.Module):
    """MB4D on NHWC activations with BN and layer scales folded."""

    def __init__(self, block: MB4D) -> None:
        super().__init__()
        mlp = block.mlp
        with torch.no_grad():
            w1, b1 = fold_bn(mlp.fc1.weight.flatten(1), mlp.fc1.bias, mlp.norm1)
            w2, b2 = fold_bn(mlp.fc2.weight.flatten(1), mlp.fc2.bias, mlp.norm2)
            gamma = block.ls2.gamma
            self.register_buffer("ls1", block.ls1.gamma.detach().clone())
            self.register_buffer("w1", w1.contiguous())
            self.register_buffer("b1", b1.contiguous())
            self.register_buffer("w2", (w2 * gamma[:, None]).contiguous())
            self.register_buffer("b2", (b2 * gamma).contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.avg_pool2d(x.permute(0, 3, 1, 2), 3, 1, 1, count_include_pad=False).permute(0, 2, 3, 1)
        x = torch.lerp(x, pooled, self.ls1)
        return x + F.linear(F.gelu(F.linear(x, self.w1, self.b1)), self.w2, self.b2)


class FusedMB3D(nn.Module):
    """MB3D with the attention scale and both layer scales folded, and the attention bias cached."""

    def __init__(self, block: MB3D) -> None:
        super().__init__()
        attn = block.token_mixer
        self.num_heads, self.key_dim, self.val_dim = attn.num_heads, attn.key_dim, attn.val_dim
        self.val_attn_dim = attn.val_attn_dim
        self.norm1, self.norm2 = copy.deepcopy(block.norm1), copy.deepcopy(block.norm2)
        with torch.no_grad():
            # qkv output is laid out per head as [q (key_dim), k (key_dim), v (val_dim)].
            per_head = 2 * self.key_dim + self.val_dim
            scale = torch.ones(self.num_heads, per_head)
            scale[:, : self.key_dim] = attn.scale
            scale = scale.flatten().to(attn.qkv.weight)
            g1, g2 = block.ls1.gamma, block.ls2.gamma
            self.register_buffer("qkv_w", (attn.qkv.weight * scale[:, None]).contiguous())
            self.register_buffer("qkv_b", (attn.qkv.bias * scale).contiguous())
            self.register_buffer("bias", attn.attention_biases[:, attn.attention_bias_idxs].detach().clone())
            self.register_buffer("proj_w", (attn.proj.weight * g1[:, None]).contiguous())
            self.register_buffer("proj_b", (attn.proj.bias * g1).contiguous())
            self.register_buffer("fc1_w", block.mlp.fc1.weight.detach().clone())
            self.register_buffer("fc1_b", block.mlp.fc1.bias.detach().clone())
            self.register_buffer("fc2_w", (block.mlp.fc2.weight * g2[:, None]).contiguous())
            self.register_buffer("fc2_b", (block.mlp.fc2.bias * g2).contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        qkv = F.linear(self.norm1(x), self.qkv_w, self.qkv_b).reshape(b, n, self.num_heads, -1).permute(0, 2, 1, 3)
        q, k, v = qkv.split([self.key_dim, self.key_dim, self.val_dim], dim=3)
        attn = torch.baddbmm(self.bias.expand(b, -1, -1, -1).reshape(-1, n, n),
                             q.reshape(-1, n, self.key_dim), k.reshape(-1, n, self.key_dim).transpose(1, 2))
        out = (attn.softmax(dim=-1) @ v.reshape(-1, n, self.val_dim)).reshape(b, self.num_heads, n, self.val_dim)
        x = x + F.linear(out.transpose(1, 2).reshape(b, n, self.val_attn_dim), self.proj_w, self.proj_b)
        return x + F.linear(F.gelu(F.linear(self.norm2(x), self.fc1_w, self.fc1_b)), self.fc2_w, self.fc2_b)


class ToTokens(nn.Module):
    """NHWC ``(B, H, W, C)`` -> tokens ``(B, H*W, C)``: a view."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1, 2)


class ToGrid(nn.Module):
    """Tokens ``(B, N, C)`` -> NHWC ``(B, g, g, C)``: a view."""

    def __init__(self, grid: int) -> None:
        super().__init__()
        self.grid = grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], self.grid, self.grid, x.shape[-1])


class FusedEfficientFormer(nn.Module):
    """The inference-only form built by :func:`fuse_for_inference`."""

    def __init__(self, model: EfficientFormer) -> None:
        super().__init__()
        self.arch = model.arch
        self.stem = FusedStem(model.stem)
        self.downsamples = nn.ModuleList()
        self.stages = nn.ModuleList()
        for s, stage in enumerate(model.stages):
            self.downsamples.append(FusedDownsample(stage.downsample) if s else nn.Identity())
            self.stages.append(nn.Sequential(*(fuse_block(block) for block in stage.blocks)))
        self.head = FusedHead(model.norm, model.head, model.head_dist)
        self.eval()
        for param in self.parameters():
            param.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for downsample, blocks in zip(self.downsamples, self.stages):
            x = blocks(downsample(x))
        return self.head(x)


def fuse_block(block: nn.Module) -> nn.Module:
    """The fused counterpart of one module of a stage's ``blocks``."""
    if isinstance(block, MB4D):
        return FusedMB4D(block)
    if isinstance(block, MB3D):
        return FusedMB3D(block)
    if isinstance(block, Flat):
        return ToTokens()
    if isinstance(block, Unflat):
        return ToGrid(block.grid)
    raise TypeError(f"cannot fuse {type(block).__name__}")


@torch.no_grad()
def fuse_for_inference(model: EfficientFormer) -> FusedEfficientFormer:
    """The deployment form of a standalone model (the model itself is left unchanged). See the module docstring."""
    if not isinstance(model, EfficientFormer):
        raise ValueError(f"model: expected a slimnas EfficientFormer (build_model), got {type(model).__name__}")
    return FusedEfficientFormer(model)
