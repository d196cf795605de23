"""Basic figures shared by several claims: one bar per prompt."""

from __future__ import annotations

from typing import Sequence

from matplotlib.figure import Figure


def per_prompt_bars(values: Sequence[float], labels: Sequence[str], title: str, value_label: str) -> Figure:
    """A horizontal bar per prompt (first on top), with the mean as a vertical line."""
    values = [float(v) for v in values]
    if not values or len(values) != len(labels):
        raise ValueError(f"need one label per value, got {len(values)} values and {len(labels)} labels")
    figure = Figure(figsize=(7, 0.35 * len(values) + 1.2))
    axes = figure.add_subplot()
    positions = range(len(values))
    axes.barh(positions, values, color=["tab:blue" if v >= 0 else "tab:red" for v in values])
    axes.set_yticks(positions, labels, fontsize=7)
    axes.invert_yaxis()
    mean = sum(values) / len(values)
    axes.axvline(mean, color="black", linewidth=1, label=f"mean {mean:.3g}")
    axes.axvline(0, color="grey", linewidth=0.5)
    axes.set_xlabel(value_label)
    axes.set_title(title, fontsize=10)
    axes.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    return figure
