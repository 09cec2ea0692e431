"""The toy family's networks: standalone, supernet, and one module per part (torch)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from slimnas.search_spaces import IDENTITY, Arch, Part, SearchSpace, importance_from_alphas

from .space import CONV


class Conv(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(width, width, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + F.gelu(self.conv(x))


class Mix(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.fc = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc(x.mean(dim=(2, 3)))[:, :, None, None]


class Head(nn.Module):
    def __init__(self, width: int, num_classes: int) -> None:
        super().__init__()
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x.mean(dim=(2, 3)))


def _block(kind: str, width: int) -> nn.Module:
    return Conv(width) if kind == CONV else Mix(width)


class ToyNet(nn.Module):
    """The standalone network of an arch (its ``head`` is the classifier: the class count comes from it)."""

    def __init__(self, arch: Arch, num_classes: int, in_chans: int = 3) -> None:
        super().__init__()
        self.arch = arch
        w = arch.widths
        self.stem = nn.Conv2d(in_chans, w[0], 3, stride=2, padding=1)
        self.stage1 = nn.Sequential(*[_block(r.kind, w[0]) for r in arch.active_blocks(0)])
        self.down = nn.Conv2d(w[0], w[1], 3, stride=2, padding=1)
        self.stage2 = nn.Sequential(*[_block(r.kind, w[1]) for r in arch.active_blocks(1)])
        self.classifier = Head(w[1], num_classes)

    @property
    def head(self) -> nn.Linear:
        return self.classifier.head

    def modules_in_order(self) -> list[nn.Module]:
        return [self.stem, *self.stage1, self.down, *self.stage2, self.classifier]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for module in self.modules_in_order():
            x = module(x)
        return x


def part_module(part: Part, img_size: int, batch: int) -> tuple[nn.Module, torch.Tensor]:
    grid = img_size // (2 if part.stage == 0 else 4)
    if part.kind == "stem":
        return nn.Conv2d(part.c_in, part.c_out, 3, stride=2, padding=1).eval(), torch.randn(batch, part.c_in,
                                                                                            img_size, img_size)
    if part.kind == "down":
        return nn.Conv2d(part.c_in, part.c_out, 3, stride=2, padding=1).eval(), torch.randn(batch, part.c_in,
                                                                                            grid * 2, grid * 2)
    if part.kind == "head":
        return Head(part.c_in, part.c_out).eval(), torch.randn(batch, part.c_in, grid, grid)
    return _block(part.kind, part.c_out).eval(), torch.randn(batch, part.c_out, grid, grid)


class ToySuperNet(nn.Module):
    """Every kind in every slot at full width; soft Gumbel-softmax mixing in training, exactly an arch with ``arch``."""

    def __init__(self, space: SearchSpace, num_classes: int, in_chans: int = 3, mode: str = "soft",
                 tau: float = 1.0) -> None:
        super().__init__()
        self.space, self.num_classes, self.in_chans, self.mode, self.tau = space, num_classes, in_chans, mode, tau
        self.full = ToyNet(space.max_arch(), num_classes, in_chans)  # stem, down, head at full width
        w = space.max_widths
        self.paths = nn.ModuleList()
        for s in range(2):
            for _ in range(space.slots[s]):
                self.paths.append(nn.ModuleDict({k: _block(k, w[s]) for k in space.kinds[s] if k != IDENTITY}))
        self.alpha = nn.ParameterList([nn.Parameter(torch.zeros(len(space.kinds[s])))
                                       for s in range(2) for _ in range(space.slots[s])])
        self.generator: torch.Generator | None = None
        self.distilled_training = False

    @property
    def head(self) -> nn.Linear:
        return self.full.head

    def arch_parameters(self) -> list[nn.Parameter]:
        return list(self.alpha)

    def weight_parameters(self) -> list[nn.Parameter]:
        ids = {id(a) for a in self.alpha}
        return [p for p in self.parameters() if id(p) not in ids]

    def alphas(self) -> list[torch.Tensor]:
        out, i = [], 0
        for s in range(2):
            n = self.space.slots[s]
            out.append(torch.stack([a.detach().cpu() for a in list(self.alpha)[i:i + n]]))
            i += n
        return out

    def importance(self):
        return importance_from_alphas(self.space.kinds, [a.tolist() for a in self.alphas()])

    def set_sampling(self, mode: str | None = None, tau: float | None = None, noise: str | None = None) -> None:
        self.mode = mode or self.mode
        self.tau = float(tau) if tau is not None else self.tau

    def seed_sampling(self, seed: int) -> None:
        self.generator = torch.Generator().manual_seed(int(seed))

    def _slots(self, stage: int) -> range:
        start = sum(self.space.slots[:stage])
        return range(start, start + self.space.slots[stage])

    def forward(self, x: torch.Tensor, arch: Arch | None = None) -> torch.Tensor:
        if arch is not None:
            return self.extract(arch)(x)
        x = self.full.stem(x)
        for s in range(2):
            if s:
                x = self.full.down(x)
            kinds = self.space.kinds[s]
            for i in self._slots(s):
                logits = self.alpha[i]
                if self.training:
                    u = torch.rand(logits.shape, generator=self.generator).clamp(1e-9, 1 - 1e-9)
                    logits = logits - torch.log(-torch.log(u))
                weights = torch.softmax(logits / self.tau, dim=0)
                x = sum(wk * (x if k == IDENTITY else self.paths[i][k](x)) for wk, k in zip(weights, kinds))
        return self.full.classifier(x)

    @torch.no_grad()
    def extract(self, arch: Arch) -> ToyNet:
        self.space.check(arch)
        net = ToyNet(arch, self.num_classes, self.in_chans)
        w = arch.widths
        _copy(net.stem, self.full.stem, w[0], None)
        _copy(net.down, self.full.down, w[1], w[0])
        _copy(net.classifier.head, self.full.classifier.head, None, w[1])
        for s, stage in ((0, net.stage1), (1, net.stage2)):
            slots = list(self._slots(s))
            for ref, block in zip(arch.active_blocks(s), stage):
                source = self.paths[slots[ref.slot]][ref.kind]
                layer = block.conv if ref.kind == CONV else block.fc
                _copy(layer, source.conv if ref.kind == CONV else source.fc, w[s], w[s])
        return net.train(self.training)


def _copy(target: nn.Module, source: nn.Module, c_out: int | None, c_in: int | None) -> None:
    weight = source.weight[:c_out] if c_out else source.weight
    weight = weight[:, :c_in] if c_in else weight
    target.weight.copy_(weight)
    target.bias.copy_(source.bias[:c_out] if c_out else source.bias)
