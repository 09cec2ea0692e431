#!/usr/bin/env python
"""Training throughput (issue 4): images/s of the supernet (soft and hard Gumbel sampling) against the standalone
max arch, measured by the real training loop (``train_supernet`` / ``train_arch``: data loading, loss, backward,
clipping, AdamW, the alpha step, the schedule) on synthetic data.

    python benchmarks/bench_train.py cpu [--rounds 3] [--steps 6] [--batch 64] [--threads N]
    python benchmarks/bench_train.py gpu [--rounds 3] [--steps 20] [--batch 64]

cpu: the ``tiny`` space at 64x64, float32. gpu: the ``l7`` space at 224x224 with bf16 autocast and channels_last;
there the L1 and L7 presets are trained standalone by the same loop too, and timm's ``efficientformer_l1`` and
``efficientformer_l7`` by a plain loop (AdamW, bf16 autocast, channels_last, one batch kept on the GPU) as the
references: the ratio of each preset to its timm model is the cost of slimnas's model and loop. L1 also runs with 4
DataLoader workers (the default is 0: batches are collated in the training process), to tell the loop's host work
from the model. It needs torch and timm only (no Ray, no MLflow).

Each run trains two epochs of ``--steps`` steps and keeps the second epoch's images/s (the first includes warm-up);
variants are interleaved over rounds and reported as the median, with per-round ratios to the standalone max arch.
Results print as markdown and go to ``benchmarks/results/bench_train-<what>-t<threads>.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_models import RESULTS, machine  # noqa: E402
from slimnas.search_spaces.efficientformer import Arch, SearchSpace  # noqa: E402
from slimnas.trainers import train_arch, train_supernet  # noqa: E402


def _common(out: str, name: str, batch: int, steps: int, device: str, workers: int = 0) -> dict:
    return {
        "data": {"kind": "synthetic", "num_classes": 1000 if device == "cuda" else 10, "batch_size": batch,
                 "synthetic_images": batch * steps, "calib_images": batch, "workers": workers},
        "augment": {"recipe": "none"},
        "optim": {"warmup_epochs": 0},
        "run": {"name": name, "out_dir": out, "epochs": 2, "max_steps_per_epoch": steps, "resume": False,
                "eval_every": 100, "device": device, "log_every": 10**6},
    }


def run_variant(variant: str, space: str, batch: int, steps: int, device: str) -> float:
    with tempfile.TemporaryDirectory() as out:
        cfg = _common(out, variant, batch, steps, device, workers=4 if "loader workers" in variant else 0)
        preset = SearchSpace.preset(space)
        if variant == "max arch (standalone)":
            result = train_arch({**cfg, "arch": preset.max_arch().to_dict()})
        elif "preset (standalone" in variant:
            arch = Arch.preset(variant.split()[0].lower(), img_size=preset.img_size, slots=preset.slots)
            result = train_arch({**cfg, "arch": arch.to_dict()})
        else:
            mode = "soft" if "soft" in variant else "hard"
            result = train_supernet({**cfg, "space": space, "gumbel": {"mode": mode}})
    return result.history[-1]["images_per_s"]


def timm_reference(name: str, batch: int, steps: int) -> float:
    """timm's ``name`` at 224, plain loop: AdamW, bf16 autocast, channels_last, on the GPU."""
    import timm

    model = timm.create_model(name, num_classes=1000).cuda().to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.025)
    x = torch.randn(batch, 3, 224, 224, device="cuda").contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,), device="cuda")
    rates = []
    for _ in range(2):
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
        torch.cuda.synchronize()
        rates.append(batch * steps / (time.perf_counter() - start))
    return rates[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["cpu", "gpu"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    gpu = args.what == "gpu"
    if gpu and not torch.cuda.is_available():
        raise SystemExit("gpu: no GPU visible")
    space, device = ("l7", "cuda") if gpu else ("tiny", "cpu")
    steps = args.steps or (20 if gpu else 6)
    variants = ["max arch (standalone)", "supernet soft (Eq. 8)", "supernet hard (sampled path)"]
    if gpu:
        variants += ["L1 preset (standalone)", "L1 preset (standalone, 4 loader workers)", "L7 preset (standalone)",
                     "timm efficientformer_l1 (reference)", "timm efficientformer_l7 (reference)"]
    rates: dict[str, list[float]] = {v: [] for v in variants}
    for r in range(args.rounds):
        for variant in variants:
            if variant.startswith("timm"):
                rate = timm_reference(variant.split()[1], args.batch, steps)
            else:
                rate = run_variant(variant, space, args.batch, steps, device)
            rates[variant].append(rate)
            print(f"round {r + 1}: {variant}: {rate:.1f} images/s", flush=True)
    base = rates[variants[0]]
    rows = []
    print(f"\n| variant ({space}, batch {args.batch}, {device}) | images/s (median) | vs standalone max arch "
          f"(min-max over rounds) |\n|---|---:|---:|")
    for variant in variants:
        ratios = [a / b for a, b in zip(rates[variant], base)]
        med = statistics.median(rates[variant])
        rows.append({"variant": variant, "images_per_s": rates[variant], "median": med, "ratios": ratios})
        print(f"| {variant} | {med:.1f} | {statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f}) |")
    for preset in ("L1", "L7") if gpu else ():
        ours = rates[f"{preset} preset (standalone)"]
        ratios = [a / b for a, b in zip(ours, rates[f"timm efficientformer_{preset.lower()} (reference)"])]
        rows.append({"variant": f"{preset}: slimnas / timm", "ratios": ratios})
        print(f"{preset}: slimnas's loop and model / timm's plain loop: {statistics.median(ratios):.2f}x "
              f"({min(ratios):.2f}-{max(ratios):.2f})")
    info = machine()
    if gpu:
        info["gpu"] = torch.cuda.get_device_name()
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"bench_train-{args.what}-t{torch.get_num_threads()}.json"
    out.write_text(json.dumps({"machine": info, "space": space, "batch": args.batch, "steps": steps,
                               "rounds": args.rounds, "rows": rows}, indent=2))
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
