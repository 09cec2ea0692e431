#!/usr/bin/env python
"""Benchmark of ``slimnas export`` (issue 13): each format's latency through its runtime, against timm's model exported
the same way, side by side in one run.

    python benchmarks/bench_export.py [--rounds 30] [--calls 2] [--winner WINNER_DIR]

Networks: EfficientFormer-L1 at 224 px (1000 classes) and a quickstart-sized winner (the ``tiny`` space at 64 px, 10
classes: ``--winner`` a saved winner folder, else a mid-size ``tiny`` arch with random weights; timing does not depend
on weight values). Each is exported by :func:`slimnas.export.export_winner` exactly as ``slimnas export`` writes it,
and timed on its format's runtime:

- ``onnx``: ONNX Runtime (the ``onnxruntime`` latency backend's session: ``ORT_ENABLE_ALL``, sequential, 1 intra-op
  thread), against timm's ``efficientformer_l1`` exported by the same exporter (:func:`~slimnas.latency.backends.
  export_onnx`, dynamic batch); also ``onnx-blocked`` (the same network, MB4D written for ONNX Runtime's blocked
  layout) and the rejected candidate, slimnas's fused (NHWC) form through the same exporter;
- ``torch``: the eager network in PyTorch, against timm's eager model; also the fused form in eager PyTorch (what the
  ``torch-cpu`` tables time);
- ``torch-export``: ``torch.export.load(file).module()``, against timm's model through ``torch.export`` the same way;
- ``timm``: the checkpoint loaded by ``timm.create_model('local-dir:...')`` (L1 only: the quickstart's 64 px winner
  is not shaped like timm's EfficientFormer);
- ``coreml``: converted and saved (the seconds it took); prediction needs macOS, so it is not timed here.

The quickstart winner has no timm counterpart (timm's EfficientFormer fixes its attention grid at 224 px): its
baseline is its own eager network exported the same way (``build_model``'s modules are timm's).

Timing: batch 1, float32, 1 thread (``torch.set_num_threads(1)``, ORT intra-op 1). Every variant is warmed up, then
``rounds`` interleaved rounds run ``calls`` single calls of each variant in turn; a variant's figure is the 10th
percentile of its ``rounds * calls`` single-call times (:class:`slimnas.latency.Timing`; low quantiles are the
repeatable statistic on a shared machine, ``docs/benchmarks.md``), and its speedup is timm's p10 over its own.
Prints markdown; writes ``benchmarks/results/bench_export.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from slimnas.export import ExportSource, export_winner, source_from_folder  # noqa: E402
from slimnas.latency import Timing  # noqa: E402
from slimnas.latency.backends import ONNXRuntimeBackend, cpu_name, export_onnx  # noqa: E402
from slimnas.search_spaces.efficientformer import Arch, build_model  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
QUICKSTART_ARCH = Arch(64, (32, 48, 64, 96), (("4d", "4d"), ("4d", "id"), ("4d", "4d", "3d", "id"),
                                             ("4d", "3d", "3d")))


def _source(arch: Arch, num_classes: int) -> ExportSource:
    torch.manual_seed(0)
    model = build_model(arch, num_classes=num_classes).eval()
    return ExportSource(model, arch, num_classes, 3, None, f"random weights, {arch}")


def _ort(data: bytes) -> Callable[[Any], Any]:
    session = ONNXRuntimeBackend(threads=1).session(data)
    return lambda x: session.run(None, {"input": x})


def _torch(module: Any) -> Callable[[Any], Any]:
    def run(x: Any) -> Any:
        with torch.inference_mode():
            return module(x)

    return run


def _torch_export(module: Any, example: Any, path: Path) -> Any:
    batch = torch.export.Dim("batch", min=1, max=65536)
    with torch.no_grad():
        program = torch.export.export(module.eval(), (example,), dynamic_shapes=({0: batch},))
    torch.export.save(program, path)
    return torch.export.load(path).module()


#: One comparison per row: (format, slimnas variant, baseline variant); names as in :func:`variants`.
Rows = list[tuple[str, str, str | None]]


def variants(source: ExportSource, timm_model: Any | None, work: Path) -> tuple[dict[str, Callable], Rows,
                                                                                  dict[str, str]]:
    """The runnables to time (name -> a call of one batch-1 forward), the comparisons, and notes."""
    x = torch.randn(*source.input_shape(1))
    notes: dict[str, str] = {}
    runs: dict[str, tuple[Callable, Any]] = {}
    base = timm_model if timm_model is not None else source.model
    base_name = "timm" if timm_model is not None else "its eager network"
    fused = source.arch.space_family.deploy(source.model)
    t0 = time.perf_counter()
    onnx = export_winner(source, "onnx", work / "net.onnx")
    notes["onnx"] = f"export {time.perf_counter() - t0:.1f} s, form {onnx.form}"
    runs["slimnas export --format onnx"] = (_ort(onnx.path.read_bytes()), x.numpy())
    blocked = export_winner(source, "onnx-blocked", work / "blocked.onnx")
    runs["slimnas export --format onnx-blocked"] = (_ort(blocked.path.read_bytes()), x.numpy())
    runs[f"{base_name}, same exporter"] = (_ort(export_onnx(base, x)), x.numpy())
    runs["slimnas fused (NHWC) form, same exporter"] = (_ort(export_onnx(fused, x)), x.numpy())
    rows: Rows = [("onnx (ONNX Runtime)", "slimnas export --format onnx", f"{base_name}, same exporter"),
                  ("onnx (ONNX Runtime)", "slimnas export --format onnx-blocked", f"{base_name}, same exporter"),
                  ("onnx (ONNX Runtime)", "slimnas fused (NHWC) form, same exporter", f"{base_name}, same exporter")]
    runs["slimnas eager network"] = (_torch(source.model), x)
    runs["slimnas fused form"] = (_torch(fused), x)
    if timm_model is not None:
        runs["timm eager"] = (_torch(timm_model), x)
    eager_base = "timm eager" if timm_model is not None else None
    rows += [("torch (PyTorch eager)", "slimnas eager network", eager_base),
             ("torch (PyTorch eager)", "slimnas fused form", eager_base or "slimnas eager network")]
    t0 = time.perf_counter()
    program = export_winner(source, "torch-export", work / "net.pt2")
    notes["torch-export"] = f"export {time.perf_counter() - t0:.1f} s, form {program.form}"
    runs["slimnas export --format torch-export"] = (_torch(torch.export.load(program.path).module()), x)
    runs[f"{base_name} through torch.export"] = (
        _torch(_torch_export(base, torch.randn(*source.input_shape(2)), work / "base.pt2")), x)
    rows.append(("torch-export (PyTorch)", "slimnas export --format torch-export", f"{base_name} through torch.export"))
    if timm_model is not None:
        import timm as timm_lib

        export_winner(source, "timm", work / "timm")
        loaded = timm_lib.create_model(f"local-dir:{work / 'timm'}", pretrained=True).eval()
        runs["slimnas export --format timm, loaded by timm"] = (_torch(loaded), x)
        rows.append(("timm (PyTorch eager)", "slimnas export --format timm, loaded by timm", "timm eager"))
    t0 = time.perf_counter()
    try:
        coreml = export_winner(source, "coreml", work / "net.mlpackage")
        notes["coreml"] = f"converted ({coreml.form} form) in {time.perf_counter() - t0:.1f} s; {coreml.check.note}"
    except Exception as exc:  # noqa: BLE001 - reported, not fatal to the benchmark
        notes["coreml"] = f"conversion failed: {type(exc).__name__}: {exc}"
    return {name: (lambda f=f, a=a: f(a)) for name, (f, a) in runs.items()}, rows, notes


def measure(runs: dict[str, Callable], rounds: int, calls: int) -> dict[str, Timing]:
    clock = time.perf_counter
    for run in runs.values():
        for _ in range(5):
            run()
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            for _ in range(calls):
                t0 = clock()
                run()
                samples[name].append((clock() - t0) * 1e3)
    return {name: Timing.from_samples(values) for name, values in samples.items()}


def report(title: str, timings: dict[str, Timing], rows: Rows, notes: dict[str, str]) -> list[str]:
    lines = [f"### {title}", "", "| format (runtime) | slimnas | p10 ms | baseline | p10 ms | speedup |",
             "|---|---|---:|---|---:|---:|"]
    for fmt, mine, base in rows:
        t = timings[mine]
        if base is None:
            lines.append(f"| {fmt} | {mine} | {t.p10:.2f} | - | - | - |")
            continue
        b = timings[base]
        lines.append(f"| {fmt} | {mine} | {t.p10:.2f} | {base} | {b.p10:.2f} | {b.p10 / t.p10:.2f}x |")
    lines += ["", f"coreml: {notes.get('coreml', '-')}", f"exports: onnx {notes.get('onnx')}, torch-export "
              f"{notes.get('torch-export')}", ""]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--calls", type=int, default=2)
    parser.add_argument("--winner", help="a saved winner folder (default: a quickstart-sized tiny arch)")
    parser.add_argument("--only", choices=("l1", "quickstart"), default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    import onnxruntime
    import timm

    out: dict[str, Any] = {"machine": {"cpu": cpu_name(), "python": platform.python_version(),
                                       "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
                                       "timm": timm.__version__, "date": dt.date.today().isoformat()},
                           "rounds": args.rounds, "calls": args.calls, "results": {}}
    cases = []
    if args.only in (None, "l1"):
        l1 = _source(Arch.preset("l1"), 1000)
        timm_l1 = timm.create_model("efficientformer_l1").eval()
        timm_l1.load_state_dict(l1.model.state_dict())
        cases.append(("EfficientFormer-L1, 224 px, 1000 classes", l1, timm_l1))
    if args.only in (None, "quickstart"):
        winner = source_from_folder(args.winner) if args.winner else _source(QUICKSTART_ARCH, 10)
        cases.append((f"quickstart-sized winner {winner.arch}, 10 classes", winner, None))
    for title, source, timm_model in cases:
        with tempfile.TemporaryDirectory() as tmp:
            runs, rows, notes = variants(source, timm_model, Path(tmp))
            timings = measure(runs, args.rounds, args.calls)
        out["results"][title] = {"timings": {n: t.to_dict() for n, t in timings.items()}, "rows": rows,
                                 "notes": notes}
        print("\n".join(report(title, timings, rows, notes)), flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_export.json").write_text(json.dumps(out, indent=1))
    print(f"machine: {out['machine']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
