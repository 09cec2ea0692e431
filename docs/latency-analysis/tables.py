"""The markdown tables of docs/latency-analysis.md from the `slimnas profile --out` folders: shares by category, or
with ``--agreement`` how each model's categories add up against its unprofiled calls.

    python docs/latency-analysis/tables.py docs/latency-analysis/torch-cpu docs/latency-analysis/onnxruntime
    python docs/latency-analysis/tables.py --agreement docs/latency-analysis/agreement-torch-cpu
"""

import json
import sys
from pathlib import Path

SHORT = {"stem": "stem", "convolution": "conv", "linear": "linear", "attention": "attn", "normalization": "norm",
         "activation": "act", "reshape": "reshape", "pooling": "pool", "elementwise": "elemwise", "other": "other",
         "framework": "framework"}


def table(folder: Path) -> str:
    report = json.loads((folder / "profile.json").read_text())
    first = report["models"][0]
    categories = [r["category"] for r in first["categories"]]
    lines = [f"**{report['backend']}: {report['device']}, {report['created']}, threads {first['threads']}**", "",
             "| model | measured ms | categories sum ms | vs unprofiled calls | profiler overhead removed ms | "
             + " | ".join(SHORT.get(c, c) for c in categories) + " |",
             "|---|---:|---:|---:|---:|" + "---:|" * len(categories)]
    for m in report["models"]:
        shares = {r["category"]: r["share"] for r in m["categories"]}
        removed = f"{m.get('overhead_removed_ms', 0.0):.2f}" if m.get("cost") else "not removed"
        lines.append(f"| {m['model']} | {m['measured_ms']:.1f} | {m['profiled_ms']:.1f} | {m['agreement']:+.1%} | "
                     f"{removed} | " + " | ".join(f"{100 * shares[c]:.1f}" for c in categories) + " |")
    return "\n".join(lines)


def agreement(folder: Path) -> str:
    report = json.loads((folder / "profile.json").read_text())
    first = report["models"][0]
    lines = [f"**{report['backend']}: {report['device']}, {report['created']}, threads {first['threads']}**", "",
             "| model | unprofiled ms | operators ms | framework ms | sum ms | sum vs unprofiled | operators alone vs "
             "unprofiled (means) | profiler overhead: observed ms | removed ms | calls kept |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for m in report["models"]:
        framework = next(r["ms"] for r in m["categories"] if r["category"] == "framework")
        operators = m["profiled_ms"] - framework
        lines.append(f"| {m['model']} | {m['unprofiled_ms']:.1f} | {operators:.1f} | {framework:.1f} | "
                     f"{m['profiled_ms']:.1f} | {m['agreement']:+.1%} | {operators / m['unprofiled_ms'] - 1:+.1%} | "
                     f"{m['profiler_overhead_ms']:.2f} | {m['overhead_removed_ms']:.2f} | "
                     f"{m['runs']}/{m['runs'] + m['dropped_runs']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    make = agreement if sys.argv[1] == "--agreement" else table
    print("\n\n".join(make(Path(folder)) for folder in sys.argv[1:] if folder != "--agreement"))
