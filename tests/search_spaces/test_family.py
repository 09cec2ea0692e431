"""The space-family interface, through an outside family (the toy plug-in: two stages, kinds ``conv``/``mix``)."""

from __future__ import annotations

import itertools
import json
import math
import random

import pytest

from slimnas.search_spaces import IDENTITY, Arch, SearchSpace, SpaceFamily, get_family
from slimnas.search_spaces.efficientformer import FAMILY


def _valid(stage: tuple[str, ...]) -> bool:
    active = [k for k in stage if k != IDENTITY]
    return bool(active) and active == sorted(active, key=("conv", "mix").index)


def test_efficientformer_is_the_default_family():
    assert isinstance(FAMILY, SpaceFamily) and get_family("efficientformer") is FAMILY
    arch = Arch.preset("l1")
    assert arch.family == "efficientformer" and "family" not in arch.to_dict()
    assert FAMILY.kinds == ("4d", "3d", "id")


def test_toy_space_counts_samples_and_round_trips(toy_plugin):
    space = SearchSpace.preset("toy-digits")
    assert space.family == "toynet" and space.kinds == (("conv", "id"), ("conv", "mix", "id"))
    # counting by brute force over every kind sequence agrees with the closed form the encoding uses
    per_stage = [sum(1 for seq in itertools.product(space.kinds[s], repeat=space.slots[s]) if _valid(seq))
                 * len(space.width_choices(s)) for s in range(2)]
    assert space.num_archs() == math.prod(per_stage) == 342
    rng = random.Random(0)
    seen = {space.sample(rng) for _ in range(3000)}
    assert all(space.contains(a) for a in seen)
    assert len(seen) > 0.9 * space.num_archs()
    arch = next(iter(seen))
    data = json.loads(arch.to_json())
    assert data["family"] == "toynet" and Arch.from_dict(data) == arch
    assert SearchSpace.from_dict(space.to_dict()) == space


def test_toy_validation_names_the_field(toy_plugin):
    with pytest.raises(ValueError, match=r"blocks\[1\]: mix blocks must be a contiguous run"):
        Arch(16, (8, 16), (("conv",), ("mix", "conv", "id")), family="toynet")
    with pytest.raises(ValueError, match=r"widths\[0\]: must be a positive multiple of 8"):
        Arch(16, (12, 16), (("conv",), ("conv",)), family="toynet")
    with pytest.raises(ValueError, match=r"blocks\[0\]\[0\]: unknown kind '4d'"):
        Arch(16, (8, 16), (("4d",), ("conv",)), family="toynet")
    space = SearchSpace.preset("l7")
    with pytest.raises(ValueError, match="family: the arch is a 'toynet' network, the space is 'efficientformer'"):
        space.check(Arch(16, (8, 16), (("conv",), ("conv",)), family="toynet"))


def test_unknown_family_is_one_line():
    with pytest.raises(ValueError, match=r"space family: unknown name 'nope'"):
        Arch.from_dict({"img_size": 64, "widths": [16], "blocks": [["x"]], "family": "nope"})


def test_toy_supernet_extract_matches_its_arch_forward(toy_plugin):
    import torch

    space = SearchSpace.preset("toy-digits")
    net = space.space_family.supernet(space, num_classes=10).eval()
    x = torch.randn(2, 3, 16, 16)
    for arch in (space.max_arch(), space.sample(3), Arch.preset("toy-small", img_size=16, family="toynet")):
        torch.testing.assert_close(net.extract(arch).eval()(x), net(x, arch=arch))
    assert net.importance().stages == (2.0, 6.0)  # uniform alpha: p_active / p_I per slot, summed
