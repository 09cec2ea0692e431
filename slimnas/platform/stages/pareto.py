"""The measured Pareto figure of a search job (``pareto.png``): top-1 against latency, one colour per method.

One implementation, drawn once per job into its folder (:func:`save_pareto`), shown by the job's report
(:mod:`slimnas.platform.stages.report`) and logged to MLflow from that file (:mod:`slimnas.platform.tracking.search`).
matplotlib only (its Agg backend: no display needed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from slimnas._io import atomic_write

__all__ = ["pareto_figure", "save_pareto", "PARETO_FILE"]

#: The figure's file name, in the job's folder.
PARETO_FILE = "pareto.png"


def pareto_figure(job: Any):
    """Top-1 against latency for every method, one colour per method.

    Each method's answers are bold at their *measured* latency (their predicted one where they were not measured),
    with the predicted position as a faint hollow marker joined by a thin line, and a label ``@<target>`` naming the
    target each answers; an answer that does not meet its target is an X with a red edge. Every evaluated subnet
    (faint dots) and slimming's trajectory (a thin line) stay at their *predicted* latency. Each target is a dashed
    line labelled with its value.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5), dpi=110)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    methods = list(dict.fromkeys(r.method for r in job.results))
    for i, method in enumerate(methods):
        color = colors[i % len(colors)]
        points = [h for label, hist in job.histories.items() if label.split("@")[0] == method for h in hist
                  if not h.get("early_stopped")]
        if points:
            ax.scatter([p["latency_ms"] for p in points], [p["accuracy"] for p in points], s=10, alpha=0.25,
                       color=color)
        for method_name, trajectory in job.trajectories.items():
            if method_name == method:
                ax.plot([s.latency_ms for s in trajectory], [s.accuracy for s in trajectory], color=color,
                        lw=1, alpha=0.5)
        answers = [r for r in job.results if r.method == method and r.top1 is not None]
        shown = [r.predicted_ms if r.measured_ms is None else r.measured_ms for r in answers]
        labels: dict[tuple[float, float], list[str]] = {}  # one label per point: an arch may answer several targets
        for r, x in zip(answers, shown):
            if r.measured_ms is not None:
                ax.plot([r.predicted_ms, x], [r.top1, r.top1], color=color, lw=0.6, alpha=0.5, zorder=2)
                ax.scatter([r.predicted_ms], [r.top1], s=40, facecolors="none", edgecolors=color, alpha=0.5, zorder=2)
            labels.setdefault((x, r.top1), []).append(f"@{r.target_ms:g}")
        for (x, y), names in labels.items():
            ax.annotate(" ".join(names), (x, y), xytext=(4, 4), textcoords="offset points", fontsize=7, color=color)
        met = [(x, r.top1) for r, x in zip(answers, shown) if r.meets_target is not False]
        missed = [(x, r.top1) for r, x in zip(answers, shown) if r.meets_target is False]
        ax.scatter([p[0] for p in met], [p[1] for p in met], s=60, color=color, edgecolors="black", label=method,
                   zorder=3)
        if missed:
            ax.scatter([p[0] for p in missed], [p[1] for p in missed], s=90, marker="X", color=color,
                       edgecolors="red", linewidths=1.5, zorder=4, label=None if met else method)
    for target in sorted({r.target_ms for r in job.results}):
        ax.axvline(target, color="grey", ls="--", lw=0.8)
        ax.text(target, 1.005, f"{target:g} ms", transform=ax.get_xaxis_transform(), ha="center", va="bottom",
                fontsize=7, color="grey")
    ax.set_xlabel("latency (ms): answers measured on the device (hollow: predicted); all evaluations predicted")
    ax.set_ylabel("top-1 (supernet weights, BN recalibrated)")
    ax.set_title("slimnas: slimming against enumeration baselines (red X: target not met)", fontsize=10, pad=14)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def save_pareto(job: Any, path: str | Path) -> Path:
    """Draw :func:`pareto_figure` of ``job`` (a :class:`~slimnas.platform.stages.search.SearchJobResult`) into the
    PNG file ``path``, atomically; returns the path."""
    import matplotlib.pyplot as plt

    fig = pareto_figure(job)
    try:
        return atomic_write(Path(path), lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)
