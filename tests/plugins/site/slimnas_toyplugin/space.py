"""A toy space family, written the way an outside package would: two stages, two block kinds, its own parts and
supernet. Nothing in slimnas knows it; it is found through the ``slimnas.spaces`` entry point of this folder's
``slimnas_toyplugin-0.1.dist-info``.

Networks: a stride-2 stem conv, stage 1 (``conv`` blocks), a stride-2 ``down`` conv, stage 2 (``conv`` blocks then
``mix`` blocks), a ``head`` (token mean + linear). ``conv``: ``x + gelu(conv3x3(x))``; ``mix``: ``x + linear(mean(x))``
broadcast over the grid (a global token mixer). No BatchNorm. The supernet keeps every kind in every slot at full
width with Gumbel-softmax weights; a subnet uses the first ``width`` channels of each weight.
"""

from __future__ import annotations

from typing import Any

from slimnas.search_spaces import IDENTITY, Arch, Part, SearchSpace, SpaceFamily, importance_from_alphas

CONV, MIX = "conv", "mix"


class ToyFamily(SpaceFamily):
    name = "toynet"
    lead = CONV
    tail = MIX
    num_stages = 2
    strides = (2, 4)
    width_step = 8
    img_step = 8
    default_kinds = ((CONV, IDENTITY), (CONV, MIX, IDENTITY))
    kind_codes = {CONV: "c", MIX: "m"}
    space_presets = {"toy-digits": {"img_size": 16, "max_widths": (16, 24), "slots": (2, 3)}}
    arch_presets = {"toy-small": {"widths": (8, 16), "depths": (1, 2), "num_3d": 1, "slots": (2, 3)}}
    part_kinds = ("stem", "conv", "down", "mix", "head")

    def parts(self, arch: Arch, num_classes: int = 1000, in_chans: int = 3) -> list[Part]:
        w = arch.widths
        out = [Part("stem", 0, in_chans, w[0])]
        for s in range(2):
            if s:
                out.append(Part("down", 1, w[0], w[1]))
            out += [Part(ref.kind, s, w[s], w[s]) for ref in arch.active_blocks(s)]
        out.append(Part("head", 1, w[1], num_classes))
        return out

    def parts_of_space(self, space: SearchSpace, num_classes: int = 1000, in_chans: int = 3) -> list[Part]:
        c0, c1 = space.width_choices(0), space.width_choices(1)
        out = [Part("stem", 0, in_chans, w) for w in c0]
        out += [Part(k, s, w, w) for s, choices in enumerate((c0, c1)) for k in space.kinds[s] if k != IDENTITY
                for w in choices]
        out += [Part("down", 1, a, b) for a in c0 for b in c1]
        out += [Part("head", 1, w, num_classes) for w in c1]
        return out

    # ------------------------------------------------------------------ torch
    def build_model(self, arch: Arch, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> Any:
        from ._nets import ToyNet

        return ToyNet(arch, num_classes, in_chans)

    def supernet(self, space: SearchSpace, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> Any:
        from ._nets import ToySuperNet

        return ToySuperNet(space, num_classes, in_chans, mode=kwargs.get("mode", "soft"), tau=kwargs.get("tau", 1.0))

    def part_module(self, part: Part, img_size: int, batch: int = 1, form: str = "fused") -> tuple[Any, Any]:
        from ._nets import part_module

        return part_module(part, img_size, batch)

    def network_parts(self, arch: Arch, batch: int = 1, form: str = "fused", num_classes: int = 1000,
                      in_chans: int = 3) -> tuple[Any, list[Any], Any]:
        import torch

        net = self.build_model(arch, num_classes, in_chans).eval()
        return net, net.modules_in_order(), torch.randn(batch, in_chans, arch.img_size, arch.img_size)


FAMILY = ToyFamily()
__all__ = ["FAMILY", "ToyFamily", "importance_from_alphas"]
