import random

import pytest
import torch
from torch import nn

from slimnas.search_spaces.efficientformer import Arch, SearchSpace, build_model, fuse_for_inference
from slimnas.testing import perturb


def _check(arch: Arch, batch: int = 2, num_classes: int = 1000) -> float:
    model = perturb(build_model(arch, num_classes=num_classes)).eval()
    fused = fuse_for_inference(model)
    x = torch.randn(batch, 3, arch.img_size, arch.img_size)
    with torch.no_grad():
        expected, got = model(x), fused(x)
    assert got.shape == expected.shape
    return (expected - got).abs().max().item()


@pytest.mark.parametrize("name", ["l1", "l3"])
def test_fused_presets_match_within_1e4(name):
    assert _check(Arch.preset(name)) <= 1e-4


def test_fused_random_archs_including_mb3d_in_stage_3():
    space = SearchSpace.preset("tiny")
    rng = random.Random(3)
    archs = [space.sample(rng) for _ in range(6)]
    archs.append(Arch(64, (32, 32, 48, 64), (("4d",), ("4d",), ("4d", "3d", "3d"), ("4d", "4d"))))
    archs.append(Arch(64, (32, 32, 48, 64), (("4d",), ("4d",), ("3d",), ("3d",))))
    for arch in archs:
        assert _check(arch, num_classes=10) <= 1e-4, arch


def test_fused_model_has_no_bn_and_one_head_and_is_frozen():
    model = build_model(Arch.preset("l1", img_size=64), num_classes=10).eval()
    fused = fuse_for_inference(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert sum(isinstance(m, nn.Linear) for m in fused.modules()) == 1
    assert not fused.training and not any(p.requires_grad for p in fused.parameters())
    # the source model is unchanged
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_feature_extractor_and_batch_sizes():
    arch = Arch.preset("l1", img_size=96)
    assert _check(arch, batch=1, num_classes=0) <= 1e-4
    assert _check(arch, batch=3, num_classes=0) <= 1e-4


def test_fuse_rejects_other_models():
    with pytest.raises(ValueError, match="model"):
        fuse_for_inference(nn.Linear(2, 2))
