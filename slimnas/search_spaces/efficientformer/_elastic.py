"""Width-sliced forwards of the blocks: run a block of the single-width supernet at a smaller width.

A block built at width ``C`` runs at width ``c <= C`` on the first ``c`` channels of its residual stream and the first
``4c`` channels of its MLP hidden layer: every weight, bias, norm and layer-scale tensor is sliced to its leading
``c`` (or ``4c``) entries along each channel dimension. Which channels come first is decided by
:func:`~slimnas.search_spaces.efficientformer._channels.sort_channels`, which orders each stage's channels by
importance; slicing a prefix is then "keep the most important channels". Attention keeps its 8 heads and key/value
dims (they do not depend on the width); only its input and output projections are sliced.

Each function computes exactly what the standalone block of width ``c`` computes, in the same order of operations,
so ``SuperNet.extract(arch)`` (which copies the same prefixes) gives the same outputs. In training mode BatchNorm
updates the running statistics of the slice in place.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._blocks import MB3D, MB4D, MLP_RATIO, Attention, Downsample, Stem

__all__ = ["batch_norm", "stem", "downsample", "mb4d", "mb3d", "attention", "head_features"]


def batch_norm(bn: nn.BatchNorm2d, x: torch.Tensor, c: int) -> torch.Tensor:
    """``bn`` on the first ``c`` channels (updates that slice of the running statistics when training)."""
    training = bn.training or bn.running_mean is None
    momentum = 0.0 if bn.momentum is None else bn.momentum
    if bn.training and bn.track_running_stats:
        bn.num_batches_tracked.add_(1)
        if bn.momentum is None:
            momentum = 1.0 / float(bn.num_batches_tracked)
    running_mean = None if bn.running_mean is None else bn.running_mean[:c]
    running_var = None if bn.running_var is None else bn.running_var[:c]
    return F.batch_norm(x, running_mean, running_var, bn.weight[:c], bn.bias[:c], training, momentum, bn.eps)


def _conv(conv: nn.Conv2d, x: torch.Tensor, c_out: int, c_in: int) -> torch.Tensor:
    bias = None if conv.bias is None else conv.bias[:c_out]
    return F.conv2d(x, conv.weight[:c_out, :c_in], bias, conv.stride, conv.padding)


def _linear(linear: nn.Linear, x: torch.Tensor, c_out: int | None, c_in: int | None) -> torch.Tensor:
    weight = linear.weight[slice(c_out), slice(c_in)]
    bias = None if linear.bias is None else linear.bias[slice(c_out)]
    return F.linear(x, weight, bias)


def _layer_norm(ln: nn.LayerNorm, x: torch.Tensor, c: int) -> torch.Tensor:
    return F.layer_norm(x, (c,), ln.weight[:c], ln.bias[:c], ln.eps)


def stem(module: Stem, x: torch.Tensor, c: int) -> torch.Tensor:
    mid = c // 2
    x = module.act1(batch_norm(module.norm1, _conv(module.conv1, x, mid, x.shape[1]), mid))
    return module.act2(batch_norm(module.norm2, _conv(module.conv2, x, c, mid), c))


def downsample(module: Downsample, x: torch.Tensor, c_out: int) -> torch.Tensor:
    return batch_norm(module.norm, _conv(module.conv, x, c_out, x.shape[1]), c_out)


def mb4d(block: MB4D, x: torch.Tensor) -> torch.Tensor:
    c = x.shape[1]
    hidden = c * MLP_RATIO
    x = x + block.drop_path1(block.token_mixer(x) * block.ls1.gamma[:c].view(1, -1, 1, 1))
    mlp = block.mlp
    y = mlp.drop(mlp.act(batch_norm(mlp.norm1, _conv(mlp.fc1, x, hidden, c), hidden)))
    y = mlp.drop(batch_norm(mlp.norm2, _conv(mlp.fc2, y, c, hidden), c))
    return x + block.drop_path2(y * block.ls2.gamma[:c].view(1, -1, 1, 1))


def attention(attn: Attention, x: torch.Tensor) -> torch.Tensor:
    """timm's EfficientFormer attention on a ``(B, N, c)`` input with ``c`` below the module's width."""
    b, n, c = x.shape
    qkv = _linear(attn.qkv, x, None, c).reshape(b, n, attn.num_heads, -1).permute(0, 2, 1, 3)
    q, k, v = qkv.split([attn.key_dim, attn.key_dim, attn.val_dim], dim=3)
    scores = (q @ k.transpose(-2, -1)) * attn.scale
    scores = scores + attn.get_attention_biases(x.device)
    out = (scores.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, n, attn.val_attn_dim)
    return _linear(attn.proj, out, c, None)


def mb3d(block: MB3D, x: torch.Tensor) -> torch.Tensor:
    c = x.shape[-1]
    hidden = c * MLP_RATIO
    x = x + block.drop_path1(attention(block.token_mixer, _layer_norm(block.norm1, x, c)) * block.ls1.gamma[:c])
    mlp = block.mlp
    y = mlp.norm(mlp.drop1(mlp.act(_linear(mlp.fc1, _layer_norm(block.norm2, x, c), hidden, c))))
    y = mlp.drop2(_linear(mlp.fc2, y, c, hidden))
    return x + block.drop_path2(y * block.ls2.gamma[:c])


def head_features(norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    """Final LayerNorm on tokens ``(B, N, c)``."""
    return _layer_norm(norm, x, x.shape[-1])
