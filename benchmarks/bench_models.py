#!/usr/bin/env python
"""Benchmarks for the search space (issue 2): L1 inference latency and supernet training-step time on CPU.

    python benchmarks/bench_models.py latency [--rounds 7] [--iters 30]
    python benchmarks/bench_models.py train   [--l7-rounds 3] [--tiny-rounds 4]
    python benchmarks/bench_models.py all [--threads N]

latency: EfficientFormer-L1, batch 1, 224x224, float32, eval, ``torch.inference_mode``. Variants are timed in
interleaved rounds (each round times every variant once, ``iters`` forwards each, and keeps the median), and each
variant's time is reported as the median over rounds together with its per-round ratio to timm: on a shared, noisy
machine only ratios measured side by side mean something.

train: one optimizer step (forward, backward, AdamW) of the supernet in soft and hard mode (hard: the sampled paths
follow a fixed seed sequence, so every run samples the same subnets) and of the supernet running its max arch,
against the standalone max arch of the same space, on ``tiny`` (batch 64 at 64x64) and on ``l7`` (batch 8 at
224x224). Variants are interleaved over rounds and the median step is reported.

Results print as markdown and are written to ``benchmarks/results/bench_models-<what>.json``.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from slimnas.search_spaces.efficientformer import Arch, SearchSpace, SuperNet, build_model, fuse_for_inference  # noqa: E402
from slimnas.search_spaces.efficientformer._fuse import fold_bn  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": dt.date.today().isoformat(),
    }


def _median_ms(fn, x, iters: int) -> float:
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def _timm_bn_folded(model: nn.Module) -> nn.Module:
    """timm's model with every Conv2d+BatchNorm2d pair folded, nothing else changed (the 'BN folding alone' rung)."""
    model = copy.deepcopy(model)
    pairs = []
    for module in model.modules():
        children = list(module.named_children())
        for (name_a, a), (name_b, b) in zip(children, children[1:]):
            if isinstance(a, nn.Conv2d) and isinstance(b, nn.BatchNorm2d):
                pairs.append((module, name_a, a, name_b, b))
    for parent, name_a, conv, name_b, bn in pairs:
        weight, bias = fold_bn(conv.weight, conv.bias, bn)
        fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=True)
        fused.weight.data.copy_(weight)
        fused.bias.data.copy_(bias)
        setattr(parent, name_a, fused)
        setattr(parent, name_b, nn.Identity())
    return model.eval()


def bench_latency(rounds: int, iters: int) -> dict:
    import timm

    torch.manual_seed(0)
    reference = timm.create_model("efficientformer_l1").eval()
    ours = build_model(Arch.preset("l1")).eval()
    ours.load_state_dict(reference.state_dict())
    x = torch.randn(1, 3, 224, 224)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    timm_cl = copy.deepcopy(reference).to(memory_format=torch.channels_last)
    variants = {
        "timm": (reference, x),
        "timm + BN folded": (_timm_bn_folded(reference), x),
        "timm, channels_last": (timm_cl, x_cl),
        "slimnas unfused": (ours, x),
        "slimnas fused": (fuse_for_inference(ours), x),
    }
    with torch.inference_mode():
        expected = reference(x)
        for name, (model, inp) in variants.items():
            diff = (model(inp) - expected).abs().max().item()
            assert diff < 1e-4, (name, diff)
            for _ in range(5):
                model(inp)
        per_round = {name: [] for name in variants}
        for _ in range(rounds):
            for name, (model, inp) in variants.items():
                per_round[name].append(_median_ms(model, inp, iters))
    out = {}
    for name, times in per_round.items():
        ratios = [t_ref / t for t_ref, t in zip(per_round["timm"], times)]
        out[name] = {"median_ms": statistics.median(times), "speedup_vs_timm": statistics.median(ratios),
                     "speedup_min": min(ratios), "speedup_max": max(ratios)}
    return {"what": "EfficientFormer-L1 forward, batch 1, 224x224, fp32", "rounds": rounds, "iters": iters,
            "results": out}


class _Stepper:
    """One training configuration: a model, its optimizer and what its forward gets."""

    def __init__(self, model: nn.Module, arch=None) -> None:
        self.model, self.arch, self.calls = model.train(), arch, 0
        self.opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        if isinstance(self.model, SuperNet):
            self.model.seed_sampling(self.calls)  # the same sampled paths in every run of the benchmark
        self.calls += 1
        start = time.perf_counter()
        out = self.model(x) if self.arch is None else self.model(x, arch=self.arch)
        loss = F.cross_entropy(out, y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return (time.perf_counter() - start) * 1e3


def bench_train(l7_rounds: int, tiny_rounds: int, tiny_steps: int = 5) -> dict:
    """Variants interleaved: each round runs every variant for ``steps`` steps (after one warm-up step each)."""
    results = {}
    for space_name, batch, rounds, steps, classes in (("tiny", 64, tiny_rounds, tiny_steps, 10),
                                                      ("l7", 8, l7_rounds, 1, 1000)):
        space = SearchSpace.preset(space_name)
        torch.manual_seed(0)
        x = torch.randn(batch, 3, space.img_size, space.img_size)
        y = torch.randint(0, classes, (batch,))
        soft = SuperNet(space, num_classes=classes, mode="soft")
        hard = SuperNet(space, num_classes=classes, mode="hard")
        hard.load_state_dict(soft.state_dict())
        variants = {
            "standalone max arch": _Stepper(build_model(space.max_arch(), num_classes=classes)),
            "supernet soft": _Stepper(soft),
            "supernet hard": _Stepper(hard),
            "supernet fixed max arch": _Stepper(SuperNet(space, num_classes=classes), arch=space.max_arch()),
        }
        for stepper in variants.values():
            stepper.step(x, y)
        times = {name: [] for name in variants}
        for _ in range(rounds):
            for name, stepper in variants.items():
                times[name] += [stepper.step(x, y) for _ in range(steps)]
        results[space_name] = {"batch": batch, "img_size": space.img_size, "steps": rounds * steps,
                               "step_ms": {name: statistics.median(t) for name, t in times.items()}}
        del variants, soft, hard
    return {"what": "one AdamW training step (forward + backward + step), fp32, CPU; median over interleaved rounds",
            "results": results}


def to_markdown(report: dict) -> str:
    lines = []
    if "latency" in report:
        lat = report["latency"]
        lines += [f"**{lat['what']}** ({lat['rounds']} interleaved rounds x {lat['iters']} forwards)", "",
                  "| variant | median ms | speedup vs timm (median, min-max over rounds) |", "|---|---:|---:|"]
        for name, r in lat["results"].items():
            lines.append(f"| {name} | {r['median_ms']:.2f} | {r['speedup_vs_timm']:.2f}x "
                         f"({r['speedup_min']:.2f}-{r['speedup_max']:.2f}) |")
        lines.append("")
    if "train" in report:
        tr = report["train"]
        lines += [f"**{tr['what']}**", "", "| space | batch | variant | ms / step | vs standalone |",
                  "|---|---:|---|---:|---:|"]
        for space, r in tr["results"].items():
            base = r["step_ms"]["standalone max arch"]
            for name, ms in r["step_ms"].items():
                lines.append(f"| {space} @{r['img_size']} | {r['batch']} | {name} | {ms:.0f} | {ms / base:.2f}x |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["latency", "train", "all"])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--l7-rounds", type=int, default=3, help="l7 rounds (one step per variant per round)")
    parser.add_argument("--tiny-rounds", type=int, default=4, help="tiny rounds (five steps per variant per round)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    report = {"machine": machine()}
    if args.what in ("latency", "all"):
        report["latency"] = bench_latency(args.rounds, args.iters)
    if args.what in ("train", "all"):
        report["train"] = bench_train(args.l7_rounds, args.tiny_rounds)
    RESULTS.mkdir(exist_ok=True)
    suffix = f"-t{args.threads}" if args.threads else ""
    path = RESULTS / f"bench_models-{args.what}{suffix}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=2))
    os.replace(tmp, path)
    print(json.dumps(report["machine"]))
    print(to_markdown(report))
    print(f"\nwritten: {path}")


if __name__ == "__main__":
    main()
