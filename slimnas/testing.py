"""Helpers for slimnas's tests and for users testing code built on slimnas."""

from __future__ import annotations

import torch

__all__ = ["perturb"]


def perturb(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give norms, BN statistics, layer scales and attention biases non-trivial values, in place.

    Fresh inits make them near no-ops (layer scale 1e-5, unit BN statistics, zero attention bias), which would let a
    wrong fold or a wrong channel slice pass a comparison unnoticed.
    """
    gen = torch.Generator().manual_seed(seed)

    def uniform(t: torch.Tensor, lo: float, hi: float) -> None:
        t.copy_(torch.rand(t.shape, generator=gen) * (hi - lo) + lo)

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                uniform(module.running_mean, -0.5, 0.5)
                uniform(module.running_var, 0.5, 2.0)
                uniform(module.weight, 0.5, 1.5)
                uniform(module.bias, -0.2, 0.2)
            elif isinstance(module, torch.nn.LayerNorm):
                uniform(module.weight, 0.5, 1.5)
                uniform(module.bias, -0.2, 0.2)
        for name, param in model.named_parameters():
            if name.endswith("gamma"):
                uniform(param, 0.05, 0.3)
            elif name.endswith("attention_biases"):
                param.copy_(torch.randn(param.shape, generator=gen))
    return model
