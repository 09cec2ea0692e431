import warnings

import pytest
import timm
import torch

from slimnas.search_spaces.efficientformer import Arch, SearchSpace, build_model
from slimnas.search_spaces.efficientformer._blocks import Flat, Unflat


@pytest.mark.parametrize("name, params_m", [("l1", 12.29), ("l3", 31.41), ("l7", 82.23)])
def test_presets_load_timm_state_dict_and_match_its_outputs(name, params_m):
    torch.manual_seed(0)
    reference = timm.create_model(f"efficientformer_{name}").eval()  # random init: no downloads
    model = build_model(Arch.preset(name)).eval()
    assert abs(sum(p.numel() for p in model.parameters()) / 1e6 - params_m) < 0.01
    model.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        expected, got = reference(x), model(x)
    assert (expected - got).abs().max().item() <= 1e-5
    assert expected.abs().max().item() > 0  # a meaningful comparison


def test_distilled_training_returns_both_heads():
    model = build_model(Arch.preset("l1", img_size=64), num_classes=10).train()
    model.distilled_training = True
    out, out_dist = model(torch.randn(2, 3, 64, 64))
    assert out.shape == out_dist.shape == (2, 10)
    model.eval()
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 10)


def test_mb3d_in_stage_3_gets_the_reshapes_it_needs():
    arch = Arch(64, (32, 32, 48, 64), (("4d",), ("4d",), ("4d", "3d", "3d"), ("4d", "4d")))
    model = build_model(arch, num_classes=5)
    kinds3 = [type(b).__name__ for b in model.stages[2].blocks]
    kinds4 = [type(b).__name__ for b in model.stages[3].blocks]
    assert kinds3 == ["MB4D", "Flat", "MB3D", "MB3D", "Unflat"]
    assert kinds4 == ["MB4D", "MB4D", "Flat"]  # the classifier works on tokens
    assert model.stages[2].blocks[2].token_mixer.attention_biases.shape == (8, 4 * 4)  # 64 / 16 = 4
    out = model(torch.randn(2, 3, 64, 64))
    out.sum().backward()
    assert out.shape == (2, 5)
    assert isinstance(model.stages[2].blocks[1], Flat) and isinstance(model.stages[2].blocks[-1], Unflat)


def test_identity_positions_do_not_change_the_model():
    a = Arch(64, (32,) * 4, (("4d", "id"), ("4d",), ("id", "4d", "3d"), ("3d", "id")))
    b = Arch(64, (32,) * 4, (("id", "4d"), ("4d",), ("4d", "id", "3d"), ("id", "3d")))
    sa, sb = build_model(a).state_dict(), build_model(b).state_dict()
    assert {k: v.shape for k, v in sa.items()} == {k: v.shape for k, v in sb.items()}


@pytest.mark.parametrize("seed", range(3))
def test_random_archs_run_forward_and_backward(seed):
    space = SearchSpace.preset("tiny")
    arch = space.sample(seed)
    model = build_model(arch, num_classes=10, drop_path_rate=0.1)
    model(torch.randn(2, 3, 64, 64)).sum().backward()
    assert all(p.grad is not None for n, p in model.named_parameters())


def test_build_model_validates_and_can_override_img_size():
    with pytest.raises(ValueError, match="arch"):
        build_model({"img_size": 224})
    model = build_model(Arch.preset("l1"), num_classes=0, img_size=96)
    assert model.arch.img_size == 96
    assert model(torch.randn(1, 3, 96, 96)).shape == (1, 448)


def test_torch_export_traces_attention_without_caching_its_bias():
    model = build_model(Arch.preset("l1", img_size=64), num_classes=10).eval()
    x = torch.randn(2, 3, 64, 64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "attribute ... was assigned during export" was a UserWarning
        program = torch.export.export(model, (x,))
    attention = [m for m in model.modules() if hasattr(m, "attention_bias_cache")]
    assert attention and all(m.attention_bias_cache == {} for m in attention)
    with torch.no_grad():
        assert torch.allclose(program.module()(x), model(x), atol=1e-5)
