"""BN recalibration: the supernet's statistics describe the path mixture, not a pruned subnet (Once-for-All)."""

import pytest
import torch
from torch import nn

from slimnas.trainers import DataConfig, Evaluator, build_data, evaluate_arch, evaluate_archs, recalibrate_bn
from slimnas.trainers._config import AugmentConfig


@pytest.fixture(scope="module")
def digits():
    return build_data(DataConfig(batch_size=64), AugmentConfig().resolve("digits"), 64)


def _pruned(space):
    """Narrower in every stage, with slots of stages 2-3 turned into identities."""
    arch = space.max_arch()
    for stage, width in enumerate((16, 32, 48, 64)):
        arch = arch.with_width(stage, width)
    return arch.with_kind(1, 1, "id").with_kind(2, 0, "id").with_kind(2, 1, "id")


def test_recalibration_changes_and_improves_a_pruned_subnet(trained_supernet, digits):
    result, _ = trained_supernet
    net = result.model.eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    arch = _pruned(net.space)
    stale = evaluate_arch(net, arch, digits.val, None)  # the supernet's BN statistics
    calibrated = evaluate_arch(net, arch, digits.val, digits.calib)
    assert calibrated > stale + 0.1, (stale, calibrated)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # the supernet is not modified
    model = net.extract(arch).eval()
    bn = model.stem.norm1
    old_mean = bn.running_mean.clone()
    assert recalibrate_bn(model, digits.calib) == 180
    assert not torch.allclose(bn.running_mean, old_mean)  # statistics changed
    assert not model.training and bn.momentum == 0.1  # restored


def test_evaluator_batched_form_matches_single_calls(trained_supernet, digits):
    net = trained_supernet[0].model.eval()
    archs = [net.space.max_arch(), _pruned(net.space)]
    singles = [evaluate_arch(net, arch, digits.val, digits.calib) for arch in archs]
    state = torch.get_rng_state()
    evaluator = Evaluator(net, digits.val, digits.calib, cache=True)
    assert evaluator.evaluate_many(archs) == singles
    assert evaluate_archs(net, archs, digits.val, digits.calib) == singles
    assert torch.equal(torch.get_rng_state(), state)  # evaluating does not consume the caller's random stream
    assert isinstance(evaluator._data, list)  # cached after the first pass


def test_recalibration_is_the_cumulative_average_of_batch_statistics():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    batches = [torch.randn(5, 3, 4, 4) * (i + 1) + i for i in range(3)]
    recalibrate_bn(model, batches)
    with torch.no_grad():
        means = torch.stack([model[0](x).mean(dim=(0, 2, 3)) for x in batches])
    assert torch.allclose(model[1].running_mean, means.mean(0), atol=1e-5)
    with pytest.raises(ValueError, match="calib_batches: no calibration images"):
        recalibrate_bn(model, [])
