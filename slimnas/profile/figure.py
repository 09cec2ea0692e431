"""The stacked-bar figure of several models' breakdowns side by side (the EfficientFormer paper's Fig. 2): per model
one bar of milliseconds and one of shares, stacked by operator category."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .categories import CATEGORIES, LABELS
from .records import ModelProfile

__all__ = ["breakdown_figure"]


def breakdown_figure(profiles: Sequence[ModelProfile], title: str = "") -> Any:
    """A matplotlib figure: left, each model's latency (ms) stacked by category (framework: the time between
    operators), with its measured latency marked and the profiler overhead removed noted; right, the same as shares
    (%)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(max(7.0, 1.6 * len(profiles) + 4.5), 4.6))
    colors = list(plt.get_cmap("tab10").colors) + ["#bbbbbb"]  # framework (between operators): grey
    positions = range(len(profiles))
    for panel, ax in enumerate(axes):
        bottom = [0.0] * len(profiles)
        for c, category in enumerate(CATEGORIES):
            values = [p.category_ms()[category] * (100.0 / p.profiled_ms if panel and p.profiled_ms else 1.0)
                      for p in profiles]
            if not any(values):
                continue
            ax.bar(positions, values, bottom=bottom, color=colors[c % len(colors)], width=0.6,
                   label=LABELS[category] if panel == 0 else None)
            bottom = [b + v for b, v in zip(bottom, values)]
        if panel == 0:
            ax.scatter(positions, [p.measured_ms for p in profiles], marker="_", s=400, color="black", zorder=3,
                       label="measured latency (no profiler)")

            ax.set_ylabel("ms per call")
        else:
            ax.set_ylabel("share of the profiled time (%)")
            ax.set_ylim(0, 100)
        labels = [f"{p.model}\n(profiler -{p.overhead_removed_ms:.2f} ms)" if panel == 0 and p.cost is not None
                  else p.model for p in profiles]
        ax.set_xticks(list(positions), labels, rotation=20, ha="right", fontsize=8)
    fig.legend(loc="upper center", ncol=4, fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=9, y=0.02, va="bottom")
    fig.tight_layout(rect=(0, 0.05, 1, 0.9))
    return fig
