"""Figures for the SAE experiment (thesis 3.5): attention before/after a feature ablation
(figs 3.21-3.25), feature tables (tables 3.2-3.10) and the random-ablation control."""

from __future__ import annotations

from typing import Sequence

import pandas as pd
import torch
from matplotlib.figure import Figure

from mechinterp.plots import readable_tokens


def attention_before_after(
    before: torch.Tensor, after: torch.Tensor, token_labels: Sequence[str], title: str
) -> Figure:
    """Two [query, key] attention patterns of one head on one prompt, side by side (figs 3.21-3.25),
    sized to the square patterns so no band of the figure is left blank."""
    if before.shape != after.shape or before.ndim != 2:
        raise ValueError(f"need two [query, key] patterns of one shape, got {tuple(before.shape)} and {tuple(after.shape)}")
    if len(token_labels) != before.shape[-1]:
        raise ValueError(f"{len(token_labels)} token labels for {before.shape[-1]} positions")
    n, tokens = len(token_labels), readable_tokens(token_labels)
    side = 0.22 * n + 1.0  # one square pattern with its token labels, in inches
    figure = Figure(figsize=(2 * side + 0.9, side + 0.7), layout="constrained")
    axes = figure.subplots(1, 2)
    for ax, pattern, name in zip(axes, (before, after), ("before ablation", "after ablation")):
        image = ax.imshow(pattern.detach().float().cpu().numpy(), vmin=0, vmax=1, cmap="Blues")
        ax.set_xticks(range(n), tokens, rotation=90, fontsize=6)
        ax.set_yticks(range(n), tokens, fontsize=6)
        ax.set_xlabel("key (attended to)", fontsize=7)
        ax.set_ylabel("query", fontsize=7)
        ax.set_title(name, fontsize=9)
    figure.colorbar(image, ax=list(axes), shrink=0.7, label="attention weight")
    figure.suptitle(f"{title}\nthe last row (END) is what the head reads at the answer: compare it before and after", fontsize=9)
    return figure


def tables_figure(tables: dict[str, pd.DataFrame], title: str, float_format: str = "{:.3g}") -> Figure:
    """DataFrames drawn as tables, one under another, each with its caption (the thesis's tables)."""
    if not tables:
        raise ValueError("no tables to draw")
    heights = [len(t) + 2 for t in tables.values()]
    figure = Figure(figsize=(9, 0.22 * sum(heights) + 0.6))
    axes = figure.subplots(len(tables), 1, gridspec_kw={"height_ratios": heights}, squeeze=False)[:, 0]
    for ax, (caption, table) in zip(axes, tables.items()):
        ax.axis("off")
        ax.set_title(caption, fontsize=8, loc="left")
        cells = [[float_format.format(v) if isinstance(v, float) else str(v) for v in row] for row in table.itertuples(index=False)]
        if cells:
            drawn = ax.table(cellText=cells, colLabels=list(table.columns), loc="upper left", cellLoc="left")
            drawn.auto_set_font_size(False)
            drawn.set_fontsize(6.5)
            drawn.auto_set_column_width(list(range(len(table.columns))))
    figure.suptitle(title, fontsize=10)
    return figure


def control_histogram(random_deltas: Sequence[float], marked: dict[str, float], title: str) -> Figure:
    """Histogram of delta P(IO) from random feature ablations, with named features' deltas as lines."""
    figure = Figure(figsize=(6, 3))
    ax = figure.add_subplot()
    ax.hist(list(random_deltas), bins=30, color="grey", label=f"{len(random_deltas)} random features")
    for (label, value), color in zip(marked.items(), ("tab:red", "tab:blue", "tab:green", "tab:orange")):
        ax.axvline(value, color=color, label=f"{label}: {value:+.3f}")
    ax.set_xlabel("change in mean P(IO) after ablation")
    ax.set_ylabel("features")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    figure.tight_layout()
    return figure
