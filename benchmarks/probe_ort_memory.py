#!/usr/bin/env python
"""Where the exported L1's last stage loses time in ONNX Runtime: its weights' trip from memory (issue 13; a probe)

    python benchmarks/probe_ort_memory.py [--rounds 60] [--sweep-mb 600]

Exports EfficientFormer-L1 (224 px, 1000 classes, random weights) as ``slimnas export --format onnx-blocked`` writes
it, and cuts from that file the last stage's first MB4D MLP (1x1 conv 448->1792, GELU, 1x1 conv 1792->448 with the
residual sum; 6.4 MB of weights) with ``onnx.utils.extract_model``. Three sessions of the ``onnxruntime`` backend
(:meth:`ONNXRuntimeBackend.session`, ``ORT_ENABLE_ALL``, 1 thread), each with ONNX Runtime's profiler on, are called
in turn, ``rounds`` times:

- ``network``: the whole L1; the two convolutions are read from its profile (the same node names as in the cut);
- ``MLP alone``: the cut graph, called three times in a row; the second and third calls count (its weights are in
  the caches from the call before);
- ``MLP after a sweep``: the cut graph, each call after writing ``sweep_mb`` MB of other memory, which pushes its
  weights out to main memory.

Each convolution's figure is the 10th percentile of its ``kernel_time`` events, with the GMAC/s it implies. If the
convolutions run as slowly inside the network as after the sweep, and much faster alone, what they wait for is their
weights arriving from memory, which no rewrite of the graph that keeps the same weights can shorten. Writes
``benchmarks/results/issue13/probe_ort_memory.txt``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from slimnas.export import ExportSource, export_winner  # noqa: E402
from slimnas.latency.backends import ONNXRuntimeBackend, cpu_name  # noqa: E402
from slimnas.search_spaces.efficientformer import Arch, build_model  # noqa: E402

REPEATS = 3
OUT = Path(__file__).resolve().parent / "results" / "issue13" / "probe_ort_memory.txt"


def conv_times(profile: str) -> dict[str, list[float]]:
    """Each ``Conv`` node's kernel times in microseconds, in the order of the calls, from one ONNX Runtime
    profile."""
    with open(profile) as handle:
        events = json.load(handle)
    times: dict[str, list[float]] = defaultdict(list)
    for event in sorted(events, key=lambda e: e.get("ts", 0)):
        name = event.get("name", "")
        if event.get("cat") == "Node" and name.endswith("_kernel_time") and event["args"].get("op_name") == "Conv":
            times[name[:-len("_kernel_time")]].append(float(event["dur"]))
    return times


def main(argv: list[str] | None = None) -> int:
    import onnx
    import onnxruntime

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--sweep-mb", type=int, default=600)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    arch = Arch.preset("l1")
    model = build_model(arch, num_classes=1000).eval()
    last = len(arch.widths) - 1
    mlp = model.stages[last].blocks[0].mlp
    macs = [mlp.fc1.weight.shape[0] * mlp.fc1.weight.shape[1] * 7 * 7,
            mlp.fc2.weight.shape[0] * mlp.fc2.weight.shape[1] * 7 * 7]
    weight_mb = sum(p.numel() for p in model.parameters()) * 4 / 2**20
    backend = ONNXRuntimeBackend(threads=1)
    with tempfile.TemporaryDirectory() as tmp:
        net = export_winner(ExportSource(model, arch, 1000, 3, None, "random weights, L1"), "onnx-blocked",
                            Path(tmp) / "l1.onnx").path
        block = f"/stages/stages.{last}/blocks/blocks.0/"
        cut = Path(tmp) / "mlp.onnx"
        onnx.utils.extract_model(str(net), str(cut), [block + "Add_output_0"], [block + "Add_1_output_0"])
        sessions = {name: backend.session(path.read_bytes(), profile_prefix=str(Path(tmp) / name.replace(" ", "_")))
                    for name, path in (("network", net), ("MLP alone", cut), ("MLP after a sweep", cut))}
        feeds = {"network": np.random.default_rng(0).standard_normal((1, 3, 224, 224), dtype=np.float32)}
        feeds["MLP alone"] = feeds["MLP after a sweep"] = np.random.default_rng(1).standard_normal(
            (1, arch.widths[last], 7, 7), dtype=np.float32)
        sweep = np.ones(args.sweep_mb * 2**20 // 4, dtype=np.float32)
        for _ in range(args.rounds):
            for name, session in sessions.items():
                if name == "MLP after a sweep":
                    sweep += 1.0
                for _ in range(REPEATS if name == "MLP alone" else 1):
                    session.run(None, {session.get_inputs()[0].name: feeds[name]})
        times = {name: conv_times(session.end_profiling()) for name, session in sessions.items()}
    times["MLP alone"] = {n: [t for i, t in enumerate(ts) if i % REPEATS] for n, ts in times["MLP alone"].items()}
    nodes = sorted(times["MLP alone"], key=lambda n: "fc1" not in n)  # fc1's node first, then fc2's
    if len(nodes) != 2 or any(n not in times["network"] for n in nodes):
        raise SystemExit(f"expected the cut's two convolutions in the network's profile, got {nodes}")
    lines = [f"# {__doc__.splitlines()[0]}",
             f"# {cpu_name()}; onnxruntime {onnxruntime.__version__}; {args.rounds} rounds; sweep {args.sweep_mb} MB;"
             f" L1's weights {weight_mb:.0f} MB",
             f"{'where':<20} {'fc1 us':>8} {'GMAC/s':>7} {'fc2 us':>8} {'GMAC/s':>7}"]
    for name in sessions:
        p10 = [float(np.percentile(times[name][n][3:], 10)) for n in nodes]
        cells = " ".join(f"{us:8.0f} {mac / us / 1e3:7.1f}" for us, mac in zip(p10, macs))
        lines.append(f"{name:<20} {cells}")
    text = "\n".join(lines)
    print(text)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
