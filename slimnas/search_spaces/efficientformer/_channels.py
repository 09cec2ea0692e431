"""Which channels a narrower subnet keeps: channel importance and the function-preserving channel sort.

The paper slims a single-width supernet and reduces a stage's width "by multiples of 16" (Sec. 4.2) without saying
which channels go. slimnas decides:

- **Groups.** A *channel group* is a set of tensor dimensions that index the same channels and must be cut together:
  the residual stream of each stage (stem or downsample output and its BN, every block's layer scales, MLP and
  attention input/output projections, LayerNorms, the next stage's downsample input, and for the last stage the final
  LayerNorm and both classifier heads), the hidden layer of each block's MLP, and the stem's middle layer.
- **Importance.** For each weight tensor of a group (conv/linear weights, norm weights, layer scales; not biases or
  running statistics), take the L1 norm of each channel's slice and divide by the tensor's mean slice norm, so that
  big tensors do not drown small ones. A channel's importance is the sum over the group's tensors, each block's
  tensors weighted by the supernet's probability of that block's kind in its MetaPath (``softmax(alpha)``): channels
  only a rarely chosen path relies on matter less. Stem, downsample and head tensors have weight 1.
- **Sort.** :func:`sort_channels` permutes every tensor of every group (buffers included) so that channels are in
  decreasing importance (stable, ties by index). The permutation is function-preserving: the supernet computes the
  same outputs before and after. A subnet of width ``c`` then takes the first ``c`` channels: the ``c`` most
  important ones (see :mod:`._elastic`).

The trainer sorts once after supernet training (and it can be called at any time: outputs do not change, but an
optimizer's per-parameter state would then be out of order, so re-create or permute it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ._blocks import MB3D, MB4D

__all__ = ["ChannelGroup", "channel_groups", "channel_importance", "sort_channels"]

_NORM_TENSORS = ("weight", "bias", "running_mean", "running_var")


@dataclass
class ChannelGroup:
    """Tensor dimensions that index the same channels. Each entry: ``(module, tensor_name, dim, weight)``.

    ``weight`` is the entry's weight in the importance sum, or ``None`` for tensors that are permuted but do not vote
    (biases, running statistics).
    """

    name: str
    size: int
    entries: list[tuple[nn.Module, str, int, float | None]] = field(default_factory=list)

    def add(self, module: nn.Module, name: str, dim: int, weight: float | None) -> None:
        tensor = getattr(module, name)
        if tensor is None:
            return
        if tensor.shape[dim] != self.size:
            raise RuntimeError(f"{self.name}: {type(module).__name__}.{name} has {tensor.shape[dim]} channels "
                               f"on dim {dim}, expected {self.size}")
        self.entries.append((module, name, dim, weight))

    def add_norm(self, norm: nn.Module, weight: float) -> None:
        for name in _NORM_TENSORS:
            if hasattr(norm, name):
                self.add(norm, name, 0, weight if name == "weight" else None)

    def add_linear(self, layer: nn.Module, dim: int, weight: float) -> None:
        """A conv or linear layer indexed on ``dim`` (0: output channels, with the bias; 1: input channels)."""
        self.add(layer, "weight", dim, weight)
        if dim == 0:
            self.add(layer, "bias", 0, None)


def _block_entries(block: nn.Module, group: ChannelGroup, hidden: ChannelGroup, w: float) -> None:
    mlp = block.mlp
    group.add(block.ls1, "gamma", 0, w)
    group.add(block.ls2, "gamma", 0, w)
    group.add_linear(mlp.fc1, 1, w)
    group.add_linear(mlp.fc2, 0, w)
    hidden.add_linear(mlp.fc1, 0, w)
    hidden.add_linear(mlp.fc2, 1, w)
    if isinstance(block, MB4D):
        group.add_norm(mlp.norm2, w)
        hidden.add_norm(mlp.norm1, w)
    elif isinstance(block, MB3D):
        group.add_norm(block.norm1, w)
        group.add_norm(block.norm2, w)
        group.add_linear(block.token_mixer.qkv, 1, w)
        group.add_linear(block.token_mixer.proj, 0, w)
    else:  # pragma: no cover - the supernet only holds MB4D and MB3D
        raise TypeError(f"unexpected block {type(block).__name__}")


def channel_groups(supernet: nn.Module) -> list[ChannelGroup]:
    """All channel groups of a :class:`~slimnas.search_spaces.efficientformer.SuperNet`."""
    stem, stages = supernet.stem, supernet.stages
    widths = supernet.space.max_widths
    mid = ChannelGroup("stem.mid", widths[0] // 2)
    mid.add_linear(stem.conv1, 0, 1.0)
    mid.add_norm(stem.norm1, 1.0)
    mid.add_linear(stem.conv2, 1, 1.0)
    groups = [mid]
    for s, stage in enumerate(stages):
        group = ChannelGroup(f"stages.{s}", widths[s])
        if s == 0:
            group.add_linear(stem.conv2, 0, 1.0)
            group.add_norm(stem.norm2, 1.0)
        else:
            group.add_linear(stage.downsample.conv, 0, 1.0)
            group.add_norm(stage.downsample.norm, 1.0)
        hiddens = []
        for slot, path in enumerate(stage.paths):
            probs = torch.softmax(path.alpha.detach().float(), dim=0).tolist()
            for kind, block in path.choices.items():
                hidden = ChannelGroup(f"stages.{s}.paths.{slot}.{kind}.hidden", block.mlp.fc1.weight.shape[0])
                _block_entries(block, group, hidden, probs[path.kinds.index(kind)])
                hiddens.append(hidden)
        if s + 1 < len(stages):
            group.add_linear(stages[s + 1].downsample.conv, 1, 1.0)
        else:
            group.add_norm(supernet.norm, 1.0)
            for head in (supernet.head, supernet.head_dist):
                if isinstance(head, nn.Linear):
                    group.add_linear(head, 1, 1.0)
        groups.append(group)
        groups.extend(hiddens)
    return groups


@torch.no_grad()
def channel_importance(group: ChannelGroup) -> torch.Tensor:
    """Importance of each channel of ``group`` (float64, higher is more important)."""
    score = torch.zeros(group.size, dtype=torch.float64)
    for module, name, dim, weight in group.entries:
        if weight is None:
            continue
        tensor = getattr(module, name).detach().double().abs()
        per_channel = tensor.transpose(0, dim).reshape(group.size, -1).sum(dim=1).cpu()
        mean = per_channel.mean()
        if mean > 0:
            score += weight * per_channel / mean
    return score


@torch.no_grad()
def sort_channels(supernet: nn.Module) -> dict[str, torch.Tensor]:
    """Permute every channel group into decreasing importance; returns each group's permutation (new -> old)."""
    perms = {}
    for group in channel_groups(supernet):
        order = torch.argsort(channel_importance(group), descending=True, stable=True)
        perms[group.name] = order
        if torch.equal(order, torch.arange(group.size)):
            continue
        for module, name, dim, _ in group.entries:
            tensor = getattr(module, name)
            tensor.copy_(tensor.index_select(dim, order.to(tensor.device)))
    supernet.invalidate_caches()
    return perms
