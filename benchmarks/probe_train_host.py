#!/usr/bin/env python
"""Where a GPU training step's extra host time could come from, measured without a GPU.

On an H200 (``docs/benchmarks.md``, "Training") slimnas's loop trained L1 at 0.57x timm's plain loop: 19 ms more per
step, the same at L7 less what the GPU's longer work hides. Two questions a CPU can answer:

1. ``ops``: is it the model? The aten operators one training step dispatches (forward, backward, gradient clipping,
   AdamW), slimnas's ``build_model(Arch.preset(p))`` against timm's ``efficientformer_<p>``, at batch 2 on the CPU
   under bf16 autocast and channels_last as on the GPU. On a GPU each is at least one kernel launch.
2. ``collate``: what does the loop's default data path cost the training process? ``data.workers`` is 0 by default
   (the benchmark's setting), so each batch of 64 synthetic 224 px images (38.5 MB) is collated in the process that
   launches the kernels. Timed per batch over an epoch of 20, each run in a new process, with glibc's allocator as
   it is and with the ``tuned`` setting the latency tables use (``slimnas.latency.backends.tune_allocator``: the
   38.5 MB batch is otherwise a fresh ``mmap`` whose pages fault in on every batch), in interleaved rounds.

    python benchmarks/probe_train_host.py [--preset l1] [--rounds 5]

Prints both; the figures are quoted in ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def step_ops(model, batch: int = 2) -> collections.Counter:
    """The aten operators of one training step (the second: the optimizer's state exists)."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.ops: collections.Counter = collections.Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops[func.overloadpacket.__name__] += 1
            return func(*args, **(kwargs or {}))

    torch.manual_seed(0)
    model = model.train().to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, 224, 224).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, foreach=True)  # what CUDA tensors get by default
    for _ in range(2):
        with Count() as count:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0, foreach=True)
            opt.step()
    return count.ops


def compare_ops(preset: str) -> dict:
    import timm

    from slimnas.search_spaces.efficientformer import Arch, build_model

    ours = step_ops(build_model(Arch.preset(preset), num_classes=1000))
    theirs = step_ops(timm.create_model(f"efficientformer_{preset}", num_classes=1000))
    differ = {k: [ours[k], theirs[k]] for k in sorted(set(ours) | set(theirs)) if ours[k] != theirs[k]}
    return {"slimnas": sum(ours.values()), "timm": sum(theirs.values()), "differ": differ}


def collate_ms(allocator: str, batch: int = 64, batches: int = 20) -> float:
    """In this process: ms per batch of an epoch of the loop's DataLoader (0 workers) over synthetic 224 px images,
    the second epoch of two."""
    import torch
    from torch.utils.data import DataLoader

    from slimnas.trainers._data import SyntheticDataset

    if allocator == "tuned":
        from slimnas.latency.backends import tune_allocator

        if not tune_allocator():
            raise SystemExit("tuned: not a glibc allocator")
    torch.set_num_threads(1)
    loader = DataLoader(SyntheticDataset(batch * batches, 1000, 224), batch, shuffle=True, drop_last=True)
    for _ in range(2):
        start = time.perf_counter()
        for _x, _y in loader:
            pass
    return (time.perf_counter() - start) / batches * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="l1", choices=["l1", "l3", "l7"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--collate-in-process", choices=["default", "tuned"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.collate_in_process:
        print(json.dumps(collate_ms(args.collate_in_process)))
        return
    ops = compare_ops(args.preset)
    print(f"aten operators per training step ({args.preset}, fwd + bwd + clip + AdamW): slimnas {ops['slimnas']}, "
          f"timm {ops['timm']}; differing: {ops['differ'] or 'none'}")
    times: dict[str, list[float]] = {"default": [], "tuned": []}
    for _ in range(args.rounds):
        for allocator in times:
            out = subprocess.run([sys.executable, __file__, "--collate-in-process", allocator], check=True,
                                 capture_output=True, text=True, cwd=ROOT).stdout
            times[allocator].append(json.loads(out.splitlines()[-1]))
    for allocator, values in times.items():
        print(f"collating 64 x 3 x 224 x 224 in the training process, glibc {allocator}: median "
              f"{statistics.median(values):.1f} ms per batch (rounds: {', '.join(f'{v:.1f}' for v in values)})")
    ratios = [d / t for d, t in zip(times["default"], times["tuned"])]
    print(f"default / tuned per round: median {statistics.median(ratios):.1f}x ({min(ratios):.1f}-{max(ratios):.1f})")


if __name__ == "__main__":
    main()
