"""The single-width EfficientFormer supernet of MetaPaths (Li et al., NeurIPS 2022, Sec. 4.2, Eq. 7-8).

Every slot of the search space is a :class:`MetaPath` holding one MB4D and (in stages 3-4) one MB3D block at the
stage's maximum width, plus the identity path, and its own architecture parameters ``alpha`` (one logit per kind, in
the order of :data:`KINDS`, initialised to zero: all kinds equally likely). The supernet runs in three modes:

- ``mode="soft"`` (the paper's Eq. 8): ``X_{i+1} = sum_n softmax((alpha_n + eps_n) / tau) * MP_n(X_i)``: every path
  runs, alpha gets gradients through the mixture weights.
- ``mode="hard"`` (the fast option): one path per MetaPath is sampled, ``argmax(alpha + eps)``, and only that path
  runs; its output is multiplied by the straight-through weight ``onehot - sg(softmax) + softmax`` (value 1), so alpha
  still gets gradients (as in GDAS, Dong & Yang 2019).
- ``supernet(x, arch=arch)``: exactly ``arch`` with the supernet's weights, widths below the maximum on the first
  channels of each group (see :mod:`._channels` for how channels are ranked and :mod:`._elastic` for the slicing).

Noise ``eps``: the paper writes ``eps ~ U(0, 1)`` but cites Gumbel-softmax; slimnas defaults to Gumbel noise
``-log(-log U)`` (``noise="gumbel"``) and offers the literal reading (``noise="uniform"``). In eval mode (no ``arch``)
no noise is added: soft mode mixes with ``softmax(alpha / tau)``, hard mode takes ``argmax(alpha)``.

Between slots the supernet keeps activations 4D; an MB3D path flattens to tokens and back around its block, which is
exactly equivalent to the standalone network's single reshape at the 4D/3D boundary. Noise comes from
:attr:`SuperNet.generator` when set (:meth:`SuperNet.seed_sampling`), so that data-parallel ranks sharing a seed sample
the same paths at every step.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import calculate_drop_path_rates
from torch import nn

from .._arch import Arch
from .._importance import Importance, importance_from_alphas
from .._space import SearchSpace
from . import _elastic as elastic
from ._blocks import MB3D, MB4D, Attention, Downsample, Stem
from ._channels import channel_groups, sort_channels
from ._constants import KIND_3D, KIND_4D, KIND_ID
from ._model import EfficientFormer, _init_weights, build_model

__all__ = ["MetaPath", "SuperNet", "MODES", "NOISES"]

log = logging.getLogger(__name__)

MODES = ("soft", "hard")
NOISES = ("gumbel", "uniform")


class MetaPath(nn.Module):
    """One supernet slot: MB4D, MB3D (stages 3-4) and the identity, with architecture parameters ``alpha``."""

    def __init__(self, kinds: tuple[str, ...], dim: int, grid: int, drop_path: float = 0.0,
                 layer_scale_init_value: float = 1e-5) -> None:
        super().__init__()
        self.kinds = tuple(kinds)
        choices: dict[str, nn.Module] = {}
        if KIND_4D in kinds:
            choices[KIND_4D] = MB4D(dim, drop_path=drop_path, layer_scale_init_value=layer_scale_init_value)
        if KIND_3D in kinds:
            choices[KIND_3D] = MB3D(dim, grid, drop_path=drop_path, layer_scale_init_value=layer_scale_init_value)
        self.choices = nn.ModuleDict(choices)
        self.alpha = nn.Parameter(torch.zeros(len(self.kinds)))

    def run(self, kind: str, x: torch.Tensor) -> torch.Tensor:
        """One path on a 4D activation."""
        if kind == KIND_ID:
            return x
        if kind == KIND_4D:
            return self.choices[KIND_4D](x)
        b, c, h, w = x.shape
        y = self.choices[KIND_3D](x.flatten(2).transpose(1, 2))
        return y.transpose(1, 2).reshape(b, c, h, w)

    def forward(self, x: torch.Tensor, weights: torch.Tensor, index: int | None) -> torch.Tensor:
        """Soft mixture (``index is None``) or only path ``index`` scaled by its (straight-through) weight."""
        if index is not None:
            return weights[index] * self.run(self.kinds[index], x)
        out = None
        for k, kind in enumerate(self.kinds):
            term = weights[k] * self.run(kind, x)
            out = term if out is None else out + term
        return out


class SuperStage(nn.Module):
    def __init__(self, downsample: nn.Module, paths: list[MetaPath]) -> None:
        super().__init__()
        self.downsample = downsample
        self.paths = nn.ModuleList(paths)


class SuperNet(nn.Module):
    """The EfficientFormer supernet over ``space`` (a :class:`SearchSpace`, a preset name or a dict).

    Args:
        space: the search space; every stage is built at its maximum width.
        num_classes: classifier outputs.
        in_chans: input channels.
        mode: ``"soft"`` (Eq. 8) or ``"hard"`` (straight-through, only the sampled path runs).
        tau: Gumbel-softmax temperature.
        noise: ``"gumbel"`` or ``"uniform"`` (see the module docstring).
        drop_rate: dropout before the classifier.
        drop_path_rate: stochastic depth over the slots, rising linearly (timm's stage-wise rule).
        layer_scale_init_value: initial layer scale (1e-5 in the paper).
    """

    def __init__(
        self,
        space: SearchSpace | str | Mapping[str, Any],
        num_classes: int = 1000,
        in_chans: int = 3,
        mode: str = "soft",
        tau: float = 1.0,
        noise: str = "gumbel",
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        layer_scale_init_value: float = 1e-5,
    ) -> None:
        super().__init__()
        self.space = SearchSpace.resolve(space)
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.mode, self.tau, self.noise = "soft", 1.0, "gumbel"
        self.set_sampling(mode=mode, tau=tau, noise=noise)
        widths, grids = self.space.max_widths, self.space.grids
        self.stem = Stem(in_chans, widths[0])
        dpr = calculate_drop_path_rates(drop_path_rate, list(self.space.slots), stagewise=True)
        stages = []
        for s, (width, n_slots) in enumerate(zip(widths, self.space.slots)):
            downsample = Downsample(widths[s - 1], width) if s else nn.Identity()
            paths = [MetaPath(self.space.kinds[s], width, grids[s], dpr[s][i], layer_scale_init_value)
                     for i in range(n_slots)]
            stages.append(SuperStage(downsample, paths))
        self.stages = nn.ModuleList(stages)
        self.norm = nn.LayerNorm(widths[-1])
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(widths[-1], num_classes) if num_classes > 0 else nn.Identity()
        self.head_dist = nn.Linear(widths[-1], num_classes) if num_classes > 0 else nn.Identity()
        self.distilled_training = False
        self.apply(_init_weights)
        #: Source of sampling noise (``None``: torch's global generator).
        self.generator: torch.Generator | None = None
        #: The kinds sampled by the last hard-mode forward, per stage and slot.
        self.last_sample: tuple[tuple[str, ...], ...] | None = None

    # ------------------------------------------------------------------ parameters
    def paths(self) -> Iterator[MetaPath]:
        for stage in self.stages:
            yield from stage.paths

    def arch_parameters(self) -> list[nn.Parameter]:
        """The architecture parameters alpha, one tensor per MetaPath (their own optimizer group)."""
        return [path.alpha for path in self.paths()]

    def weight_parameters(self) -> list[nn.Parameter]:
        """Every parameter except alpha."""
        alpha_ids = {id(a) for a in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in alpha_ids]

    def named_weight_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        for name, param in self.named_parameters():
            if not name.endswith(".alpha"):
                yield name, param

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {name for name, _ in self.named_parameters() if "attention_biases" in name or name.endswith(".alpha")}

    def alphas(self) -> list[torch.Tensor]:
        """Per stage, a ``(slots, kinds)`` tensor of alpha (detached, on CPU)."""
        return [torch.stack([p.alpha.detach().cpu() for p in stage.paths]) for stage in self.stages]

    def importance(self) -> Importance:
        """The paper's MetaPath and stage importance scores from alpha (see :mod:`._importance`)."""
        alphas = [[p.alpha.detach().float().cpu().tolist() for p in stage.paths] for stage in self.stages]
        return importance_from_alphas(self.space.kinds, alphas)

    # ------------------------------------------------------------------ sampling
    def set_sampling(self, mode: str | None = None, tau: float | None = None, noise: str | None = None) -> None:
        if mode is not None:
            if mode not in MODES:
                raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
            self.mode = mode
        if tau is not None:
            if not float(tau) > 0:
                raise ValueError(f"tau: must be positive, got {tau}")
            self.tau = float(tau)
        if noise is not None:
            if noise not in NOISES:
                raise ValueError(f"noise: expected one of {NOISES}, got {noise!r}")
            self.noise = noise

    def seed_sampling(self, seed: int) -> None:
        """Draw sampling noise from a generator seeded with ``seed`` (same seed on every rank: same paths)."""
        self.generator = torch.Generator().manual_seed(int(seed))

    def _noise(self, n: int) -> torch.Tensor:
        u = torch.rand(n, generator=self.generator, dtype=torch.float64)
        if self.noise == "uniform":
            return u
        u = u.clamp(1e-20, 1.0 - 1e-12)
        return -torch.log(-torch.log(u))

    def _path_weights(self) -> list[tuple[torch.Tensor, int | None]]:
        """Per MetaPath: the mixture weights and, in hard mode, the sampled index."""
        alphas = self.arch_parameters()
        flat = torch.cat(alphas)
        logits = flat
        if self.training:
            noise = self._noise(flat.numel()).to(device=flat.device, dtype=flat.dtype)
            logits = flat + noise
        out = []
        for seg in torch.split(logits, [a.numel() for a in alphas]):
            soft = torch.softmax(seg / self.tau, dim=0)
            if self.mode == "soft":
                out.append((soft, None))
                continue
            index = int(torch.argmax(seg.detach()))
            hard = F.one_hot(torch.tensor(index, device=seg.device), seg.numel()).to(soft.dtype)
            out.append((hard - soft.detach() + soft, index))
        return out

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor, arch: Arch | None = None):
        if arch is not None:
            return self.forward_arch(x, arch)
        weights = iter(self._path_weights())
        sample = []
        x = self.stem(x)
        for stage in self.stages:
            x = stage.downsample(x)
            kinds = []
            for path in stage.paths:
                w, index = next(weights)
                x = path(x, w, index)
                if index is not None:
                    kinds.append(path.kinds[index])
            sample.append(tuple(kinds))
        if self.mode == "hard":
            self.last_sample = tuple(sample)
        return self._classify(self.norm(x.flatten(2).transpose(1, 2)), self.head, self.head_dist)

    def forward_arch(self, x: torch.Tensor, arch: Arch):
        """Run exactly ``arch`` with the supernet's weights (the first ``width`` channels of each group)."""
        self.space.check(arch)
        widths = arch.widths
        last = len(self.stages) - 1
        x = elastic.stem(self.stem, x, widths[0])
        for s, stage in enumerate(self.stages):
            if s:
                x = elastic.downsample(stage.downsample, x, widths[s])
            tokens = False
            for ref in arch.active_blocks(s):
                block = stage.paths[ref.slot].choices[ref.kind]
                if ref.kind == KIND_4D:
                    x = elastic.mb4d(block, x)
                    continue
                if not tokens:
                    x, tokens = x.flatten(2).transpose(1, 2), True
                x = elastic.mb3d(block, x)
            if tokens and s < last:
                b, n, c = x.shape
                x = x.transpose(1, 2).reshape(b, c, arch.grids[s], arch.grids[s])
            elif not tokens and s == last:
                x = x.flatten(2).transpose(1, 2)
        x = elastic.head_features(self.norm, x)
        c = x.shape[-1]
        head = _sliced_linear(self.head, c)
        head_dist = _sliced_linear(self.head_dist, c)
        return self._classify(x, head, head_dist)

    def _classify(self, tokens: torch.Tensor, head, head_dist):
        x = self.head_drop(tokens.mean(dim=1))
        x, x_dist = head(x), head_dist(x)
        if self.distilled_training and self.training:
            return x, x_dist
        return (x + x_dist) / 2

    # ------------------------------------------------------------------ subnets
    def extract(self, arch: Arch) -> EfficientFormer:
        """A standalone ``build_model(arch)`` carrying the supernet's weights for ``arch``.

        Its outputs equal ``supernet(x, arch=arch)``. It is returned in the supernet's train/eval mode.
        """
        self.space.check(arch)
        model = build_model(arch, num_classes=self.num_classes, in_chans=self.in_chans)
        model.to(next(self.parameters()).device)
        for standalone, own in self._module_pairs(model, arch):
            _copy_into(standalone, own)
        return model.train(self.training)

    def absorb(self, model: EfficientFormer, arch: Arch | None = None, heads: bool = True) -> None:
        """Write a standalone model's weights into this supernet (the first channels of each group).

        ``arch`` places the model's blocks in slots (default: ``model.arch``, which must lie in the space).
        """
        arch = model.arch if arch is None else arch
        self.space.check(arch)
        if not model.arch.same_structure(arch):
            raise ValueError("arch: does not have the model's structure")
        for standalone, own in self._module_pairs(model, arch, heads=heads):
            _copy_into(own, standalone)
        self.invalidate_caches()

    def _module_pairs(self, model: EfficientFormer, arch: Arch,
                      heads: bool = True) -> Iterator[tuple[nn.Module, nn.Module]]:
        """``(standalone module, supernet module)`` pairs that share weights for ``arch``."""
        yield model.stem, self.stem
        for s, (dst, src) in enumerate(zip(model.stages, self.stages)):
            if s:
                yield dst.downsample, src.downsample
            blocks = [b for b in dst.blocks if isinstance(b, (MB4D, MB3D))]
            for ref, block in zip(arch.active_blocks(s), blocks, strict=True):
                yield block, src.paths[ref.slot].choices[ref.kind]
        yield model.norm, self.norm
        if heads and isinstance(self.head, nn.Linear) and isinstance(model.head, nn.Linear):
            yield model.head, self.head
            yield model.head_dist, self.head_dist

    def channel_groups(self) -> list:
        """The supernet's channel groups (:mod:`._channels`): what :meth:`sort_channels` permutes together."""
        return channel_groups(self)

    def sort_channels(self) -> dict[str, torch.Tensor]:
        """Order every channel group by importance (function-preserving); see :mod:`._channels`."""
        return sort_channels(self)

    def invalidate_caches(self) -> None:
        """Drop cached attention biases (after weights changed outside the optimizer)."""
        for module in self.modules():
            if isinstance(module, Attention):
                module.attention_bias_cache = {}

    # ------------------------------------------------------------------ timm weights
    def load_timm(self, source: str | Path | Mapping[str, torch.Tensor]) -> Arch:
        """Initialise from a timm EfficientFormer state_dict (a mapping or a local ``.pth``/``.safetensors`` path).

        The model's blocks go to the first slots of each stage and its channels to the first channels of each group;
        the rest of the supernet (wider channels, unused slots, the other kind of each used slot, alpha) keeps its
        initialisation. The classifier is loaded only when its class count matches. Returns the placed arch.
        """
        state = _load_state_dict(source)
        arch = arch_from_timm_state_dict(state, self.space)
        num_classes = state["head.weight"].shape[0] if "head.weight" in state else 0
        model = build_model(arch, num_classes=num_classes, in_chans=state["stem.conv1.weight"].shape[1])
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()
            raise ValueError(f"state_dict: not a timm EfficientFormer state_dict ({first[-1].strip()})") from None
        heads = num_classes == self.num_classes
        if not heads:
            log.info("load_timm: classifier has %d classes, the supernet %d: heads not loaded",
                     num_classes, self.num_classes)
        self.absorb(model, arch, heads=heads)
        return arch


def _sliced_linear(layer: nn.Module, c: int):
    if not isinstance(layer, nn.Linear):
        return layer
    return lambda x: F.linear(x, layer.weight[:, :c], layer.bias)


@torch.no_grad()
def _copy_into(target: nn.Module, source: nn.Module) -> None:
    """Copy ``source``'s tensors into ``target`` (same structure), over the leading slice of the larger of the two.

    Supernet -> standalone (``extract``) copies the first channels of each supernet tensor; standalone -> supernet
    (``absorb``) writes the standalone tensor over the first channels of the supernet's.
    """
    source_state = source.state_dict()
    for name, dst in target.state_dict().items():
        src = source_state[name]
        if dst.shape == src.shape:
            dst.copy_(src)
        elif all(d <= s for d, s in zip(dst.shape, src.shape)):
            dst.copy_(src[tuple(slice(0, n) for n in dst.shape)])
        elif all(d >= s for d, s in zip(dst.shape, src.shape)):
            dst[tuple(slice(0, n) for n in src.shape)].copy_(src)
        else:
            raise ValueError(f"{name}: shapes {tuple(src.shape)} and {tuple(dst.shape)} do not nest")


def _load_state_dict(source: str | Path | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    from timm.models.efficientformer import checkpoint_filter_fn

    if isinstance(source, Mapping):
        state = dict(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise ValueError(f"state_dict: no such file {path}")
        try:
            if path.suffix == ".safetensors":
                from safetensors.torch import load_file

                state = load_file(str(path))
            else:
                state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable file gets one line
            raise ValueError(f"state_dict: cannot read {path} ({type(exc).__name__})") from None
    for wrapper in ("state_dict", "model", "state_dict_ema"):
        if isinstance(state.get(wrapper), Mapping):
            state = dict(state[wrapper])
            break
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError("state_dict: values must be tensors")
    return checkpoint_filter_fn(state, None)


def arch_from_timm_state_dict(state: Mapping[str, torch.Tensor], space: SearchSpace) -> Arch:
    """The arch of a timm EfficientFormer state_dict, its blocks placed in the first slots of ``space``."""
    if "stem.conv2.weight" not in state:
        raise ValueError("state_dict: no 'stem.conv2.weight': not a timm EfficientFormer state_dict")
    widths = [state["stem.conv2.weight"].shape[0]]
    blocks = []
    for s in range(len(space.slots)):
        if s:
            key = f"stages.{s}.downsample.conv.weight"
            if key not in state:
                raise ValueError(f"state_dict: missing {key!r}")
            widths.append(state[key].shape[0])
        found: dict[int, str] = {}
        prefix = f"stages.{s}.blocks."
        for key in state:
            if key.startswith(prefix):
                index = int(key[len(prefix):].split(".", 1)[0])
                if key.endswith("token_mixer.qkv.weight"):
                    found[index] = KIND_3D
                elif key.endswith("mlp.fc1.weight") and index not in found:
                    found[index] = KIND_3D if state[key].dim() == 2 else KIND_4D
        kinds = [found[i] for i in sorted(found)]
        if len(kinds) > space.slots[s]:
            raise ValueError(f"state_dict: stage {s + 1} has {len(kinds)} blocks, "
                             f"the space only {space.slots[s]} slots")
        blocks.append(tuple(kinds) + (KIND_ID,) * (space.slots[s] - len(kinds)))
        grid = space.grids[s]
        for key, value in state.items():
            if key.startswith(prefix) and key.endswith("attention_biases") and value.shape[1] != grid * grid:
                raise ValueError(f"state_dict: {key} is for a {int(value.shape[1] ** 0.5)}x"
                                 f"{int(value.shape[1] ** 0.5)} token grid, the space's stage {s + 1} has "
                                 f"{grid}x{grid} (img_size {space.img_size})")
    arch = Arch(space.img_size, tuple(widths), tuple(blocks))
    space.check(arch)
    return arch
