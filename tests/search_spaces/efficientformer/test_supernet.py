import math
import random

import pytest
import timm
import torch

from slimnas.search_spaces.efficientformer import MB3D, MB4D, Arch, SearchSpace, SuperNet, build_model
from slimnas.testing import perturb

TINY = SearchSpace.preset("tiny")
L7_SMALL = SearchSpace(name="l7@64", img_size=64, max_widths=(96, 192, 384, 768), slots=(6, 6, 18, 8))


def _net(space=TINY, **kw) -> SuperNet:
    torch.manual_seed(0)
    return perturb(SuperNet(space, num_classes=10, **kw))


@pytest.mark.parametrize("mode", ["soft", "hard"])
def test_forward_backward_and_alpha_gradients(mode):
    net = _net(mode=mode).train()
    out = net(torch.randn(4, 3, 64, 64))
    assert out.shape == (4, 10)
    torch.nn.functional.cross_entropy(out, torch.arange(4)).backward()
    for alpha in net.arch_parameters():
        assert alpha.grad is not None and alpha.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.weight_parameters())


def test_arch_and_weight_parameters_are_disjoint_groups():
    net = _net()
    alphas, weights = net.arch_parameters(), net.weight_parameters()
    assert len(alphas) == sum(TINY.slots)
    assert {id(p) for p in alphas}.isdisjoint({id(p) for p in weights})
    assert len(alphas) + len(weights) == len(list(net.parameters()))
    assert [a.numel() for a in alphas[:2]] == [2, 2] and alphas[-1].numel() == 3


def test_hard_mode_runs_only_the_sampled_path():
    net = _net(mode="hard").train()
    calls = []
    for stage in net.stages:
        for path in stage.paths:
            for kind, block in path.choices.items():
                block.register_forward_hook(lambda m, i, o, k=kind: calls.append(k))
    for seed in range(5):
        net.seed_sampling(seed)
        calls.clear()
        net(torch.randn(2, 3, 64, 64)).sum().backward()
        sampled = [k for stage in net.last_sample for k in stage]
        assert len(sampled) == sum(TINY.slots)
        assert calls == [k for k in sampled if k != "id"]


def test_soft_mode_runs_every_path_and_seeded_sampling_repeats():
    net = _net(mode="soft").train()
    calls = []
    for block in net.modules():
        if isinstance(block, (MB4D, MB3D)):
            block.register_forward_hook(lambda m, i, o: calls.append(1))
    x = torch.randn(2, 3, 64, 64)
    net.seed_sampling(7)
    first = net(x)
    assert len(calls) == sum(len(p.choices) for p in net.paths())
    net.seed_sampling(7)
    assert torch.equal(first, net(x))
    net.seed_sampling(8)
    assert not torch.equal(first, net(x))


def test_eval_mode_without_arch_is_deterministic():
    net = _net(mode="soft").eval()
    x = torch.randn(2, 3, 64, 64)
    assert torch.equal(net(x), net(x))


def test_noise_option_and_bad_sampling_settings():
    net = _net(noise="uniform").train()
    net(torch.randn(1, 3, 64, 64))
    for kwargs, field in [({"mode": "mixed"}, "mode"), ({"tau": 0}, "tau"), ({"noise": "normal"}, "noise")]:
        with pytest.raises(ValueError, match=field):
            net.set_sampling(**kwargs)


def test_extract_matches_the_fixed_arch_forward_on_20_random_tiny_archs():
    net = _net().eval()
    x = torch.randn(3, 3, 64, 64)
    rng = random.Random(0)
    archs = [TINY.sample(rng) for _ in range(18)] + [TINY.max_arch(), TINY.max_arch().with_width(0, 16)]
    for arch in archs:
        model = net.extract(arch).eval()
        assert model.arch == arch
        with torch.no_grad():
            assert (net(x, arch=arch) - model(x)).abs().max().item() <= 1e-5, arch


def test_extract_matches_on_l7_at_a_small_input():
    net = _net(L7_SMALL).eval()
    x = torch.randn(2, 3, 64, 64)
    rng = random.Random(1)
    archs = [Arch.preset("l7", img_size=64), Arch.preset("l1", img_size=64)] + [L7_SMALL.sample(rng) for _ in range(3)]
    for arch in archs:
        with torch.no_grad():
            assert (net(x, arch=arch) - net.extract(arch).eval()(x)).abs().max().item() <= 1e-5, arch


def test_fixed_arch_forward_trains_and_updates_only_that_subnets_bn_slice():
    net = _net().train()
    arch = TINY.max_arch().with_width(1, 32).with_kind(1, 1, "id")
    bn = net.stages[1].downsample.norm
    before = bn.running_mean.clone()
    net(torch.randn(4, 3, 64, 64), arch=arch).sum().backward()
    assert not torch.equal(bn.running_mean[:32], before[:32])
    assert torch.equal(bn.running_mean[32:], before[32:])
    assert net.stages[1].paths[1].choices["4d"].mlp.fc1.weight.grad is None  # identity slot: untouched
    with pytest.raises(ValueError, match="widths"):
        net(torch.randn(1, 3, 64, 64), arch=TINY.max_arch().with_width(0, 48))


def test_importance_follows_the_paper_formula():
    net = _net()
    with torch.no_grad():
        net.stages[0].paths[0].alpha.copy_(torch.tensor([1.0, 0.0]))  # (4d, id)
        net.stages[2].paths[1].alpha.copy_(torch.tensor([0.5, -0.5, 0.2]))  # (4d, 3d, id)
    imp = net.importance()
    assert imp.metapaths[0][0] == pytest.approx(math.e)  # p4d / pI = e^(1 - 0)
    expected = (math.exp(0.5) + math.exp(-0.5)) / math.exp(0.2)
    assert imp.metapaths[2][1] == pytest.approx(expected)
    assert imp.metapaths[1][0] == pytest.approx(1.0) and imp.metapaths[3][0] == pytest.approx(2.0)  # uniform alpha
    assert imp.stages[2] == pytest.approx(2.0 * 3 + expected)
    assert imp.to_dict()["stages"][0] == pytest.approx(math.e + 1.0)


@pytest.mark.parametrize("space, preset", [(SearchSpace.preset("l1"), "l1"), (SearchSpace.preset("l7"), "l3")])
def test_load_timm_weights_into_the_supernet(space, preset, tmp_path):
    torch.manual_seed(0)
    reference = perturb(timm.create_model(f"efficientformer_{preset}", num_classes=10)).eval()
    path = tmp_path / "weights.pth"
    torch.save(reference.state_dict(), path)
    net = SuperNet(space, num_classes=10).eval()
    arch = net.load_timm(path)
    assert arch.same_structure(Arch.preset(preset)) and space.contains(arch)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert (net(x, arch=arch) - reference(x)).abs().max().item() <= 1e-5


def test_load_timm_rejects_foreign_input(tmp_path):
    net = SuperNet(TINY, num_classes=10)
    with pytest.raises(ValueError, match="no such file"):
        net.load_timm(tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read"):
        net.load_timm(tmp_path / "junk.pth")
    with pytest.raises(ValueError, match="stem.conv2.weight"):
        net.load_timm({"foo": torch.zeros(1)})
    state = build_model(Arch.preset("l1"), num_classes=10).state_dict()
    with pytest.raises(ValueError, match="state_dict"):  # L1 does not fit the tiny space
        net.load_timm(state)
