#!/usr/bin/env python
"""How fast any exact export of EfficientFormer-L1 can run in ONNX Runtime: the sum of its kernels at their best
(issue 13; a probe)

    python benchmarks/probe_ort_bound.py [--rounds 60] [--out FILE]

The issue's goal for ``slimnas export --format onnx`` is an L1 at least 1.1x faster in ONNX Runtime than timm's own
model exported the same way. This probe measures the most a graph of the same function can gain:

1. It exports L1 (224 px, 1000 classes, random weights) as ``slimnas export --format onnx-blocked`` writes it, and
   cuts that file into pieces at block boundaries with ``onnx.utils.extract_model``: the stem, every downsample,
   every block (the MB4D blocks, the 3D stage's flatten, the MB3D block) and the tail (norm and head).
2. Each piece runs alone in the ``onnxruntime`` backend's session (``ORT_ENABLE_ALL``, 1 thread), with ONNX
   Runtime's profiler on, ``REPEATS`` times in a row per round; only the repeats count, so its weights and its input
   are in the caches: the best its kernels do on this machine. A call's time is the sum of its kernels' times
   without the layout reorders at the piece's edges (the whole blocked network has one reorder).
3. The **ceiling** is the sum over pieces of their 10th percentile: the time of the network if every kernel ran as fast
   as it can, with nothing between kernels. A graph of the same function made of the same operators (every layer is
   already a single kernel: BN, layer scales and the attention scale folded, each MB4D block a chain of blocked
   convolutions with the sums folded in) cannot take less, so ``timm's time / ceiling`` bounds the speedup any such
   export can reach.
4. The whole blocked network and timm's export are timed side by side (interleaved rounds of single calls, the
   10th percentile) as in ``benchmarks/bench_export.py``.

Also reported: the ceiling per operator (``Conv``, ``Gelu``, ``MatMul``...) and the multiply-accumulates per second
its convolutions and matrix products reach when hot. Writes ``benchmarks/results/issue13/probe_ort_bound.txt``
(or ``--out``).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from slimnas.export import ExportSource, export_winner  # noqa: E402
from slimnas.latency.backends import ONNXRuntimeBackend, cpu_name, export_onnx  # noqa: E402
from slimnas.search_spaces.efficientformer import Arch, build_model  # noqa: E402

REPEATS = 3
OUT = Path(__file__).resolve().parent / "results" / "issue13" / "probe_ort_bound.txt"
_TAIL = "tail"


def _piece_of(node_name: str) -> str:
    """The block a node of the exported L1 belongs to (``stem``, ``stages.i/downsample``, ``stages.i/blocks.j``), or
    the tail (norm and head)."""
    match = re.match(r"/(stem|stages/stages\.\d+/(?:downsample|blocks/blocks\.\d+))/", node_name)
    return match.group(1) if match else _TAIL


def cut_points(model) -> tuple[list[str], list[str]]:
    """The pieces (in the network's order, the tail last) and the tensor each piece hands to the next. The export
    writes some of the tail's nodes among the last block's, so the last block's output is whatever of it the tail's
    nodes read."""
    order: list[str] = []
    for node in model.graph.node:
        piece = _piece_of(node.name)
        if piece not in order and piece != _TAIL:
            order.append(piece)
    producers = {out: _piece_of(node.name) for node in model.graph.node for out in node.output}
    pieces, boundaries = [], []
    for current, following in zip(order, order[1:]):
        crossing = {name for node in model.graph.node if _piece_of(node.name) == following
                    for name in node.input if producers.get(name) == current}
        if len(crossing) != 1:
            raise SystemExit(f"expected one tensor from {current} into {following}, got {sorted(crossing)}")
        pieces.append(current)
        boundaries.append(crossing.pop())
    pieces.append(order[len(pieces)])
    last = {name for node in model.graph.node if _piece_of(node.name) not in pieces
            for name in node.input if producers.get(name) == pieces[-1]}
    if len(last) != 1:
        raise SystemExit(f"expected one tensor into the tail, got {sorted(last)}")
    boundaries.append(last.pop())
    return pieces + [_TAIL], boundaries


def behind_a_convolution(piece, channels: int) -> bytes:
    """``piece`` with an identity 1x1 convolution before it: in the network a block's input comes out of a blocked
    convolution, and ONNX Runtime only keeps a block in its blocked layout (the mixer's scalings as blocked
    convolutions, the residual sums folded into them) when its input does; the convolution's own time is left out."""
    import onnx
    from onnx import helper, numpy_helper

    graph = piece.graph
    original = graph.input[0].name
    graph.input[0].name = original + "_probe_in"
    eye = np.eye(channels, dtype=np.float32).reshape(channels, channels, 1, 1)
    graph.initializer.append(numpy_helper.from_array(eye, "probe_identity_weight"))
    graph.node.insert(0, helper.make_node("Conv", [graph.input[0].name, "probe_identity_weight"], [original],
                                          name="probe_identity"))
    onnx.checker.check_model(piece)
    return piece.SerializeToString()


def hot_kernels(profile: str, skip: int, leave_out: str | None = None) -> tuple[list[float], Counter]:
    """Per call (``model_run`` event) of one profile, the sum of its kernels' microseconds without reorders and
    without the kernels named after ``leave_out`` (the identity convolution of :func:`behind_a_convolution`); and the
    per-operator sums of the calls kept (every call but each round's first, after ``skip`` calls)."""
    with open(profile) as handle:
        events = json.load(handle)
    runs = sorted((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])
    kernels = sorted((e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")
                      and not e["args"].get("op_name", "").startswith("Reorder")
                      and not (leave_out and e["name"].startswith(leave_out + "_"))), key=lambda e: e["ts"])
    per_call: list[float] = []
    per_op: list[Counter] = []
    k = 0
    for run in runs:
        total, ops = 0.0, Counter()
        while k < len(kernels) and kernels[k]["ts"] < run["ts"]:
            k += 1
        while k < len(kernels) and kernels[k]["ts"] <= run["ts"] + run["dur"]:
            total += kernels[k]["dur"]
            ops[kernels[k]["args"]["op_name"]] += kernels[k]["dur"]
            k += 1
        per_call.append(total)
        per_op.append(ops)
    kept = [i for i in range(len(runs)) if i >= skip and i % REPEATS]
    p10 = float(np.percentile([per_call[i] for i in kept], 10))
    # the per-operator split of the calls nearest the 10th percentile, scaled to it
    near = sorted(kept, key=lambda i: abs(per_call[i] - p10))[:5]
    split = Counter()
    for i in near:
        split.update({op: t / len(near) for op, t in per_op[i].items()})
    return [per_call[i] for i in kept], split


def macs(model: torch.nn.Module, example: torch.Tensor) -> dict[str, float]:
    """Multiply-accumulates of the network's convolutions and of its linear layers and attention products."""
    counts = Counter()

    def conv_hook(module, inputs, output):
        counts["conv"] += output.numel() * module.in_channels // module.groups * np.prod(module.kernel_size)

    def linear_hook(module, inputs, output):
        counts["matmul"] += output.numel() * module.in_features

    handles = [m.register_forward_hook(conv_hook) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    handles += [m.register_forward_hook(linear_hook) for m in model.modules() if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        model(example)
    for handle in handles:
        handle.remove()
    return dict(counts)


def timm_twin(model: torch.nn.Module) -> torch.nn.Module:
    """timm's own ``efficientformer_l1`` holding ``model``'s weights (slimnas's L1 has timm's state_dict)."""
    import timm

    twin = timm.create_model("efficientformer_l1").eval()
    twin.load_state_dict(model.state_dict())
    return twin


def export_blocked(model: torch.nn.Module, arch: Arch, path: Path) -> Path:
    """``model`` (L1, 1000 classes) written as ``slimnas export --format onnx-blocked`` writes it."""
    return export_winner(ExportSource(model, arch, 1000, 3, None, "random weights, L1"), "onnx-blocked", path).path


def main(argv: list[str] | None = None) -> int:
    import onnx
    import onnxruntime

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    arch = Arch.preset("l1")
    model = build_model(arch, num_classes=1000).eval()
    example = torch.randn(1, 3, 224, 224)
    counted = macs(model, example)
    timm_l1 = timm_twin(model)
    backend = ONNXRuntimeBackend(threads=1)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [f"# {__doc__.splitlines()[0]}",
             f"# {cpu_name()}; onnxruntime {onnxruntime.__version__}; {when};"
             f" {args.rounds} rounds x {REPEATS} calls per piece (the first of each round not counted)"]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        blocked = export_blocked(model, arch, work / "l1.onnx")
        graph = onnx.load(str(blocked))
        pieces, boundaries = cut_points(graph)
        inputs = [graph.graph.input[0].name] + boundaries
        outputs = boundaries + [graph.graph.output[0].name]
        # each piece's real input: the network run once with every boundary as an output
        probe = onnx.load(str(blocked))
        for name in boundaries:
            probe.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
        session = backend.session(probe.SerializeToString())
        values = dict(zip([o.name for o in session.get_outputs()],
                          session.run(None, {inputs[0]: example.numpy()})))
        values[inputs[0]] = example.numpy()
        ceiling, ops = [], Counter()
        lines.append(f"{'piece':<34} {'hot kernels, p10 us':>20}")
        for i, (piece, start, end) in enumerate(zip(pieces, inputs, outputs)):
            path = work / f"piece{i}.onnx"
            onnx.utils.extract_model(str(blocked), str(path), [start], [end])
            behind = i > 0 and values[start].ndim == 4  # a 4D block's input; the 3D stage's comes from a reshape
            if behind:
                path.write_bytes(behind_a_convolution(onnx.load(str(path)), values[start].shape[1]))
            run = backend.session(path.read_bytes(), profile_prefix=str(work / f"piece{i}"))
            feed = {run.get_inputs()[0].name: values[start]}
            for _ in range(args.rounds * REPEATS):
                run.run(None, feed)
            calls, split = hot_kernels(run.end_profiling(), skip=REPEATS * 3, leave_out=start if behind else None)
            ceiling.append(float(np.percentile(calls, 10)))
            ops.update(split)
            lines.append(f"{piece:<34} {ceiling[-1]:20.0f}")
        bound_ms = sum(ceiling) / 1e3
        # the whole networks, side by side
        sessions = {"slimnas export --format onnx-blocked": backend.session(blocked.read_bytes()),
                    "timm, same exporter": backend.session(export_onnx(timm_l1, example))}
        feed = example.numpy()
        times: dict[str, list[float]] = {name: [] for name in sessions}
        for _ in range(5):
            for run in sessions.values():
                run.run(None, {run.get_inputs()[0].name: feed})
        for _ in range(args.rounds):
            for name, run in sessions.items():
                for _ in range(2):
                    start_s = time.perf_counter()
                    run.run(None, {run.get_inputs()[0].name: feed})
                    times[name].append(time.perf_counter() - start_s)
    p10 = {name: float(np.percentile(ts, 10)) * 1e3 for name, ts in times.items()}
    timm_ms = p10["timm, same exporter"]
    lines.append("")
    lines.append(f"ceiling (sum of the pieces' hot kernels): {bound_ms:.2f} ms")
    for op, us in ops.most_common():
        if us >= 20:
            extra = ""
            if op == "Conv":
                extra = f"  ({counted['conv'] / us / 1e3:.1f} GMAC/s over {counted['conv'] / 1e9:.3f} GMAC)"
            lines.append(f"  {op:<22} {us / 1e3:7.2f} ms{extra}")
    products = sum(ops[op] for op in ("MatMul", "FusedMatMul", "Gemm"))
    lines.append(f"  the linear layers' {counted['matmul'] / 1e9:.3f} GMAC in MatMul, FusedMatMul and Gemm: "
                 f"{counted['matmul'] / products / 1e3:.1f} GMAC/s (the attention products, ~0.003 GMAC, left out)")
    for name, ms in p10.items():
        lines.append(f"{name:<40} p10 {ms:7.2f} ms   speedup over timm {timm_ms / ms:.3f}x")
    lines.append(f"the most any export of the same graph can reach: timm {timm_ms:.2f} ms / ceiling {bound_ms:.2f} ms"
                 f" = {timm_ms / bound_ms:.3f}x (the goal: 1.1x)")
    text = "\n".join(lines)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
