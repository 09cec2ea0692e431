import torch

from slimnas.search_spaces.efficientformer import SearchSpace, SuperNet
from slimnas.search_spaces.efficientformer._channels import channel_groups, channel_importance
from slimnas.testing import perturb

TINY = SearchSpace.preset("tiny")


def _net() -> SuperNet:
    torch.manual_seed(0)
    return perturb(SuperNet(TINY, num_classes=10)).eval()


def test_every_weight_belongs_to_the_expected_groups():
    net = _net()
    groups = {g.name: g for g in channel_groups(net)}
    assert groups["stages.3"].size == 128 and groups["stem.mid"].size == 16
    assert groups["stages.2.paths.0.3d.hidden"].size == 4 * 96
    # every residual-stream tensor of stage 1 votes or is permuted along with it
    names = {(type(m).__name__, n, d) for m, n, d, _ in groups["stages.1"].entries}
    assert ("Conv2d", "weight", 1) in names  # the next downsample's input channels
    assert ("BatchNorm2d", "running_var", 0) in names
    last = {(type(m).__name__, n, d) for m, n, d, _ in groups["stages.3"].entries}
    assert ("Linear", "weight", 1) in last and ("LayerNorm", "weight", 0) in last


def test_sort_is_function_preserving_in_every_mode():
    net = _net()
    x = torch.randn(2, 3, 64, 64)
    arch = TINY.max_arch()
    with torch.no_grad():
        before_arch, before_mix = net(x, arch=arch), net(x)
    perms = net.sort_channels()
    assert any(not torch.equal(p, torch.arange(len(p))) for p in perms.values())
    with torch.no_grad():
        assert (net(x, arch=arch) - before_arch).abs().max() <= 1e-5
        assert (net(x) - before_mix).abs().max() <= 1e-5
    for group in channel_groups(net):  # sorted: importance is non-increasing
        score = channel_importance(group)
        assert torch.all(score[:-1] >= score[1:] - 1e-9), group.name


def test_a_narrow_subnet_keeps_the_most_important_channels():
    net = _net()
    stage = 3
    with torch.no_grad():  # make channels 100..115 of stage 4 clearly the most used ones
        for path in net.stages[stage].paths:
            for block in path.choices.values():
                block.ls1.gamma[100:116] *= 50
                block.ls2.gamma[100:116] *= 50
                block.mlp.fc1.weight[:, 100:116] *= 50
    group = next(g for g in channel_groups(net) if g.name == f"stages.{stage}")
    top = set(torch.argsort(channel_importance(group), descending=True)[:16].tolist())
    assert top == set(range(100, 116))
    marker = net.stages[stage].paths[0].choices["3d"].ls1.gamma.detach().clone()
    net.sort_channels()
    kept = net.stages[stage].paths[0].choices["3d"].ls1.gamma.detach()[:16]
    assert torch.equal(torch.sort(kept).values, torch.sort(marker[100:116]).values)
    # and a 16-wide stage 4 built from the supernet uses exactly those channels (blocks[0] is the 4D->3D reshape)
    arch = TINY.max_arch().with_width(stage, 16)
    model = net.extract(arch)
    assert torch.equal(model.stages[stage].blocks[1].ls1.gamma.detach(), kept)


def test_alpha_weights_the_vote():
    net = _net()
    group = next(g for g in channel_groups(net) if g.name == "stages.2")
    base = channel_importance(group)
    with torch.no_grad():
        net.stages[2].paths[0].alpha.copy_(torch.tensor([-20.0, -20.0, 20.0]))  # slot 0: almost surely identity
        net.stages[2].paths[0].choices["4d"].ls1.gamma[5] *= 1000
    group = next(g for g in channel_groups(net) if g.name == "stages.2")
    assert channel_importance(group)[5] - base[5] < 1e-3
