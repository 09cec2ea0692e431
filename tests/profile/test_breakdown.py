"""Latency breakdowns (slimnas.profile) of the paper's five models: every operator has a category (unknown ones are
listed, none dropped), shares sum to 100%, per-block rows are the models' blocks, and on torch-cpu the categories'
sum, framework (the time between operators) included, agrees with the whole network's measured latency."""

import os
import time

import pytest
import torch

from slimnas._threads import torch_threads
from slimnas.latency.backends import ONNXRuntimeBackend, TorchCPUBackend
from slimnas.latency.protocol import Protocol
from slimnas.profile.categories import CATEGORIES, torch_category
from slimnas.profile.run import profile_model
from slimnas.profile.sources import ModelSource

#: A protocol for tests: real timings, few of them.
QUICK = Protocol(passes=1, samples=2, pass_ms=0.0, warmup_ms=0.0, extra_passes=0)

#: The paper's Fig. 2 models (timm names) and the blocks of each stage (depths; EfficientFormer's last stage also
#: holds its 4D->3D Flat, PoolFormer's and LeViT's later stages a downsample each).
FIVE = {
    "deit_small_patch16_224": [12],
    "poolformer_s12": [2, 2, 6, 2],
    "levit_256": [4, 4, 4],
    "efficientformer_l1": [3, 2, 6, 5],
    "mobilenetv2_100": [1, 2, 3, 4, 3, 3, 1],
}

#: Small inputs keep the test fast; timm's EfficientFormer runs only at 224 (its attention biases are 7x7).
SIZES = {"deit_small_patch16_224": 64, "poolformer_s12": 64, "levit_256": 64, "mobilenetv2_100": 64}


@pytest.fixture(scope="module")
def five():
    backend = TorchCPUBackend(threads=1)
    return {name: profile_model(ModelSource(name, "timm"), backend, runs=2, protocol=QUICK, img_size=SIZES.get(name))
            for name in FIVE}


@pytest.mark.parametrize("name", list(FIVE))
def test_every_operator_of_the_five_models_has_a_category(five, name):
    p = five[name]
    assert p.unknown_ops == (), f"{name}: operators without a category: {p.unknown_ops}"
    assert {r.category for r in p.categories} == set(CATEGORIES)
    assert sum(r.share for r in p.categories) == pytest.approx(1.0)
    assert sum(r.ms for r in p.categories) == pytest.approx(p.profiled_ms)
    assert sum(r.ms for r in p.blocks) == pytest.approx(p.profiled_ms)  # the same operators, by block
    assert sum(r.ms for r in p.ops) == pytest.approx(p.profiled_ms)
    ms = p.category_ms()
    assert ms["stem"] > 0 and ms["normalization"] > 0 and ms["activation"] > 0 and ms["framework"] > 0
    assert (ms["attention"] > 0) == (name in ("deit_small_patch16_224", "levit_256", "efficientformer_l1"))


@pytest.mark.parametrize("name", list(FIVE))
def test_per_block_rows_are_the_models_blocks(five, name):
    rows = five[name].blocks
    blocks = [(r.stage, r.block) for r in rows if r.block.isdigit()]
    expected = [(s, str(i)) for s, depth in enumerate(FIVE[name]) for i in range(depth)]
    assert blocks == expected
    assert [r.block for r in rows][0].startswith("stem")
    assert all(r.ms > 0 for r in rows if r.block.isdigit() and r.type_name != "Flat")


def test_an_unknown_operator_lands_in_other_and_is_listed():
    class Odd(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = torch.nn.Conv2d(3, 8, 3)
            self.blocks = torch.nn.Sequential(torch.nn.Conv2d(8, 8, 3), torch.nn.ReLU())

        def forward(self, x):
            return torch.cumsum(self.blocks(self.stem(x)), dim=1)

    from slimnas.profile.records import aggregate
    from slimnas.profile.torch_profiler import profile_calls

    model = Odd().eval()
    x = torch.randn(1, 3, 16, 16)

    def run():
        with torch.inference_mode():
            return model(x)

    p = aggregate(profile_calls(model, run, 2, QUICK), model="odd", source="test", backend="torch-cpu", device="cpu",
                  threads=1, batch=1, img_size=16, form="eager", measured_ms=1.0, measured_spread=0.0,
                  statistic="median")
    assert p.unknown_ops == ("aten::cumsum",)
    assert p.category_ms()["other"] > 0 and p.category_ms()["stem"] > 0
    assert [(r.block, r.module) for r in p.blocks] == [("stem", "stem"), ("0", "blocks.0"), ("1", "blocks.1"),
                                                       ("top", "")]
    assert torch_category("aten::cumsum") == "other" and torch_category("aten::conv2d", in_stem=True) == "stem"


class _Busy(torch.nn.Module):
    """Python that runs between operators: a 2 ms busy loop, then one multiplication."""

    def forward(self, x):
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 0.002:
            pass
        return x * 2


def test_python_between_operators_is_the_framework_row_of_its_block():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = torch.nn.Conv2d(3, 8, 3)
            self.blocks = torch.nn.Sequential(torch.nn.Conv2d(8, 8, 3), _Busy(), torch.nn.ReLU())

        def forward(self, x):
            return self.blocks(self.stem(x))

    from slimnas.profile.records import aggregate
    from slimnas.profile.torch_profiler import profile_calls, profiler_cost

    model, x = Net().eval(), torch.randn(1, 3, 32, 32)

    def run():
        with torch.inference_mode():
            return model(x)

    with torch_threads(1):
        cost = profiler_cost()
        p = aggregate(profile_calls(model, run, 5, QUICK), model="busy", source="test", backend="torch-cpu",
                      device="cpu", threads=1, batch=1, img_size=32, form="eager", measured_ms=1.0,
                      measured_spread=0.0, statistic="median")
    assert 0.0 < cost.per_event_us < 20.0 and 0.0 < cost.per_scope_us < 200.0, cost
    assert p.cost == cost and p.overhead_removed_ms > 0 and p.events_per_call > 0 and p.scopes_per_call == 4
    busy = next(r for r in p.blocks if r.type_name == "_Busy")
    assert 1.9 < busy.ms < 2.6, busy  # the busy loop, read off the profiled call's timeline
    assert 1.9 < p.category_ms()["framework"] < 2.8
    assert p.category_ms()["elementwise"] < 0.5  # the multiplication after the loop is an operator, not the loop
    assert abs(p.agreement) < 0.10, (p.profiled_ms, p.unprofiled_ms)


@pytest.mark.skipif(os.getloadavg()[0] > 2 * (os.cpu_count() or 1), reason="the machine is oversubscribed twice over: "
                    "single calls vary by 2x between neighbours (load 6-10 on 2 cores: -38% to +114%, "
                    "docs/latency-analysis.md), no timing comparison means anything")
def test_the_categories_sum_agrees_with_the_measured_latency_on_torch_cpu():
    """The categories, framework (the time between operators, from the profiled calls' own timelines) included and
    the profiler's calibrated cost removed, add up to the unprofiled calls between the profiled ones within 10%
    (+1.9% at load 2.9 on 2 cores); without the framework row the operators alone fall 11-16% short (deit_tiny,
    2026-11-30)."""
    backend = TorchCPUBackend(threads=1)
    protocol = Protocol(passes=3, samples=5, pass_ms=0.0, warmup_ms=20.0, extra_passes=2)
    p = profile_model(ModelSource("deit_tiny_patch16_224", "timm"), backend, runs=12, protocol=protocol)
    assert abs(p.agreement) < 0.10, (p.profiled_ms, p.unprofiled_ms, p.measured_ms)
    # the protocol's measurement ran seconds before the profiled calls and a shared machine's speed drifts in between
    # (a CI run on the Xeon VM, 2026-12-01, read 1.54x: 42.0 ms profiled, 27.3 ms measured, agreement within 10%), so
    # this is a scale check (the same unit, the same call), not a comparison of timings
    assert 0.5 < p.profiled_ms / p.measured_ms < 2.0, (p.profiled_ms, p.measured_ms)
    assert p.runs + p.dropped_runs == 12 and p.runs >= 4
    framework = p.category_ms()["framework"]
    assert 0.03 < framework / p.profiled_ms < 0.5, (framework, p.profiled_ms)
    assert 0 < p.overhead_removed_ms < 0.5 * p.profiled_wall_ms


def test_onnxruntime_nodes_have_categories_and_blocks():
    backend = ONNXRuntimeBackend(threads=1)
    p = profile_model(ModelSource("deit_small_patch16_224", "timm"), backend, runs=3, protocol=QUICK, img_size=64)
    assert p.unknown_ops == (), p.unknown_ops
    assert sum(r.share for r in p.categories) == pytest.approx(1.0)
    ms = p.category_ms()
    assert ms["stem"] > 0 and ms["attention"] > 0 and ms["linear"] > 0 and ms["normalization"] > 0
    assert ms["convolution"] == 0  # DeiT's only convolution is its patch embedding: the stem
    assert [(r.stage, r.block) for r in p.blocks if r.block.isdigit()] == [(0, str(i)) for i in range(12)]
    assert all(r.ms > 0 for r in p.blocks if r.block.isdigit())
    assert ms["framework"] == 0 and p.cost is None  # ORT: kernels only (the gaps are mostly its profiler's recording)
    top = next((r for r in p.blocks if r.block == "top"), None)
    assert top is None or top.share < 0.2  # nodes are attributed to their modules, not piled at the top level
