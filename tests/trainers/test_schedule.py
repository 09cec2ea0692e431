import math

import pytest
import torch

from slimnas.trainers._schedule import alpha_entropy, gumbel_tau, scaled_lr


def test_scaled_lr_is_the_linear_rule():
    assert scaled_lr(1e-3, 1024) == pytest.approx(1e-3)
    assert scaled_lr(1e-3, 256) == pytest.approx(2.5e-4)
    assert scaled_lr(0.05, 16, 1024) == pytest.approx(7.8125e-4)


@pytest.mark.parametrize("schedule", ["exponential", "linear", "cosine"])
def test_tau_anneals_from_max_to_min(schedule):
    values = [gumbel_tau(p / 10, 5.0, 0.5, schedule) for p in range(11)]
    assert values[0] == pytest.approx(5.0) and values[-1] == pytest.approx(0.5)
    assert all(a > b for a, b in zip(values, values[1:]))
    assert gumbel_tau(2.0, 5.0, 0.5, schedule) == pytest.approx(0.5)  # clamped


def test_exponential_tau_halfway_is_the_geometric_mean():
    assert gumbel_tau(0.5, 5.0, 0.5) == pytest.approx(math.sqrt(5.0 * 0.5))
    assert gumbel_tau(0.7, 5.0, 0.5, "constant") == 5.0
    with pytest.raises(ValueError, match="gumbel.schedule"):
        gumbel_tau(0.5, 5.0, 0.5, "step")


def test_alpha_entropy():
    uniform = [torch.zeros(2), torch.zeros(3)]
    assert alpha_entropy(uniform) == pytest.approx((math.log(2) + math.log(3)) / 2)
    assert alpha_entropy([torch.tensor([50.0, 0.0, 0.0])]) == pytest.approx(0.0, abs=1e-12)
