#!/usr/bin/env python
"""Would int8 weights reach issue 13's ONNX Runtime goal? ONNX Runtime's own quantizer on L1 and on timm's export
(issue 13; a probe)

    python benchmarks/probe_ort_int8.py [--rounds 30] [--calls 2] [--calibration 8] [--out FILE]

``benchmarks/probe_ort_bound.py`` shows that no graph computing the evaluated network's single-precision function can
be 1.1x faster than timm's export on every machine (the EPYC VM's ceiling is 1.085-1.095x). The only other route is
a different function; the cheapest one ONNX Runtime offers is its static quantizer
(``onnxruntime.quantization.quantize_static``: int8 weights per channel, uint8 activations, QDQ or QOperator format,
calibrated on ``--calibration`` random images after ``quant_pre_process``). This probe quantizes both slimnas's
``onnx-blocked`` L1 and timm's L1 exported the same way, and times all of them side by side
(``bench_export.measure``: interleaved rounds of single calls, batch 1, 1 thread, the 10th percentile), with how far
each quantized network's logits move from its float network's on one image. It answers whether a quantized format
would meet the goal by its layout (slimnas int8 against timm int8) or only by its precision (against timm float).

Writes ``benchmarks/results/issue13/probe_ort_int8.txt`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_export import measure  # noqa: E402
from probe_ort_bound import export_blocked, timm_twin  # noqa: E402

from slimnas.latency.backends import ONNXRuntimeBackend, cpu_name, export_onnx  # noqa: E402
from slimnas.search_spaces.efficientformer import Arch, build_model  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "issue13" / "probe_ort_int8.txt"


def quantized(source: Path, out: Path, fmt: str, images: list[np.ndarray]) -> Path:
    """``source`` through ONNX Runtime's pre-processing and static quantizer in format ``fmt`` (``QDQ`` or
    ``QOperator``), calibrated on ``images``."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = out.with_suffix(".pre.onnx")
    quant_pre_process(str(source), str(prepared))
    name = onnx.load(str(prepared)).graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._feeds = iter([{name: image} for image in images])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._feeds, None)

    quantize_static(str(prepared), str(out), Reader(), quant_format=QuantFormat[fmt], per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return out


def main(argv: list[str] | None = None) -> int:
    import onnxruntime

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--calls", type=int, default=2)
    parser.add_argument("--calibration", type=int, default=8)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    arch = Arch.preset("l1")
    model = build_model(arch, num_classes=1000).eval()
    timm_l1 = timm_twin(model)
    example = torch.randn(1, 3, 224, 224)
    images = [torch.randn(1, 3, 224, 224).numpy() for _ in range(args.calibration)]
    backend = ONNXRuntimeBackend(threads=1)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [f"# {__doc__.splitlines()[0]}",
             f"# {cpu_name()}; onnxruntime {onnxruntime.__version__}; {when}; {args.rounds} rounds x {args.calls}"
             f" calls, batch 1, 1 thread; calibrated on {args.calibration} random images"]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        floats = {"slimnas onnx-blocked": export_blocked(model, arch, work / "slimnas.onnx"),
                  "timm": work / "timm.onnx"}
        floats["timm"].write_bytes(export_onnx(timm_l1, example))
        files = dict(floats)
        for name, path in floats.items():
            for fmt in ("QDQ", "QOperator"):
                files[f"{name}, int8 {fmt}"] = quantized(path, work / f"{name.split()[0]}-{fmt}.onnx", fmt, images)
        sessions = {name: backend.session(path.read_bytes()) for name, path in files.items()}
        feed = example.numpy()
        logits = {name: run.run(None, {run.get_inputs()[0].name: feed})[0] for name, run in sessions.items()}
        runs = {name: (lambda run=run: run.run(None, {run.get_inputs()[0].name: feed}))
                for name, run in sessions.items()}
        timings = measure(runs, args.rounds, args.calls)
    timm_ms = timings["timm"].p10
    lines.append(f"{'network':<36} {'p10 ms':>8} {'over timm float':>16} {'over timm, same quantizer':>26}"
                 f" {'max |logit - float|':>20}")
    for name, timing in timings.items():
        base, _, fmt = name.partition(", ")
        same = f"timm, {fmt}" if fmt else "timm"
        drift = float(np.abs(logits[name] - logits[base]).max())
        lines.append(f"{name:<36} {timing.p10:8.2f} {timm_ms / timing.p10:15.3f}x"
                     f" {timings[same].p10 / timing.p10:25.3f}x {drift:20.2e}")
    scale = float(np.abs(logits["timm"]).max())
    lines.append(f"(the float logits reach {scale:.2f} in absolute value; the export's parity bound is 1e-4)")
    text = "\n".join(lines)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a") as handle:
        handle.write(text + "\n\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
