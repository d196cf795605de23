"""Figures for experiments 1 and 2 (observational half): head-score and DLA heatmaps, logit-lens
lines, attention patterns. Inputs are computed tensors / DataFrames; nothing here runs a model."""

from __future__ import annotations

from typing import Sequence

import pandas as pd
import torch
from matplotlib.figure import Figure

from mechinterp.plots import readable_tokens


def head_heatmap(
    values: torch.Tensor,
    title: str,
    value_label: str,
    diverging: bool = False,
    highlight: Sequence[tuple[int, int]] = (),
    axes=None,
) -> Figure:
    """[n_layers, n_heads] values as a layer x head heatmap; `highlight` heads are boxed.

    `diverging` centres a red/blue map at zero (for signed quantities such as DLA).
    """
    if values.ndim != 2:
        raise ValueError(f"expected [n_layers, n_heads], got shape {tuple(values.shape)}")
    data = values.detach().double().cpu().numpy()
    if axes is None:
        figure = Figure(figsize=(0.45 * data.shape[1] + 2.2, 0.4 * data.shape[0] + 1.4))
        axes = figure.add_subplot()
    else:
        figure = axes.figure
    if diverging:
        bound = max(abs(data.min()), abs(data.max()), 1e-12)
        image = axes.imshow(data, cmap="RdBu", vmin=-bound, vmax=bound, aspect="auto")
    else:
        image = axes.imshow(data, cmap="Blues", vmin=0, vmax=max(1.0, data.max()), aspect="auto")
    for layer, head in highlight:
        axes.add_patch(_box(layer, head))
    axes.set_xlabel("head")
    axes.set_ylabel("layer")
    axes.set_xticks(range(data.shape[1]))
    axes.set_yticks(range(data.shape[0]))
    axes.tick_params(labelsize=7)
    axes.set_title(title, fontsize=9)
    figure.colorbar(image, ax=axes, label=value_label)
    figure.tight_layout()
    return figure


def _box(layer: int, head: int):
    from matplotlib.patches import Rectangle

    return Rectangle((head - 0.5, layer - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=1.5)


def head_scores_figure(scores: dict[str, torch.Tensor], model_name: str, highlight: dict[str, Sequence[tuple[int, int]]] | None = None) -> Figure:
    """Previous-token, duplicate-token and induction scores side by side (thesis figs 3.1-3.6)."""
    highlight = highlight or {}
    figure = Figure(figsize=(5 * len(scores), 0.4 * next(iter(scores.values())).shape[0] + 1.6))
    for i, (name, values) in enumerate(scores.items()):
        axes = figure.add_subplot(1, len(scores), i + 1)
        head_heatmap(values, f"{model_name}: {name.replace('_', '-')} score", "fraction of attention",
                     highlight=highlight.get(name, ()), axes=axes)
    figure.tight_layout()
    return figure


def logit_lens_figure(lens: pd.DataFrame, title: str) -> Figure:
    """Mean logit difference after each sublayer (thesis figs 3.7/3.8): integer x = attention, half = MLP."""
    figure = Figure(figsize=(7, 3.5))
    axes = figure.add_subplot()
    axes.plot(lens["x"], lens["logit_diff"], marker="o", color="tab:blue")
    if "std" in lens:
        axes.fill_between(lens["x"], lens["logit_diff"] - lens["std"], lens["logit_diff"] + lens["std"], alpha=0.15, color="tab:blue")
    axes.axhline(0, color="grey", linewidth=0.5)
    ticks = lens[lens["sublayer"] != "mlp"]
    axes.set_xticks(ticks["x"], ["embed" if row.sublayer == "embed" else str(row.layer) for row in ticks.itertuples()])
    axes.set_xlabel("layer (integer: after attention, half-integer: after MLP)")
    axes.set_ylabel("logit(IO) - logit(S)")
    axes.set_title(title, fontsize=10)
    figure.tight_layout()
    return figure


def dla_figure(head_values: torch.Tensor, title: str, highlight: Sequence[tuple[int, int]] = ()) -> Figure:
    """Per-head direct logit attribution (thesis figs 3.9/3.10): blue helps IO, red helps S."""
    return head_heatmap(head_values, f"{title}\nblue: the head writes the IO name, red: the S name", "direct logit attribution",
                        diverging=True, highlight=highlight)


def attention_pattern_figure(patterns: torch.Tensor, tokens: Sequence[str], titles: Sequence[str]) -> Figure:
    """One query x key heatmap per pattern ([n, T, T]), axes labelled with the prompt's tokens
    (thesis figs 3.15-3.19)."""
    if patterns.ndim != 3 or patterns.shape[0] != len(titles) or patterns.shape[-1] != len(tokens):
        raise ValueError(f"need [n, T, T] patterns with n titles and T tokens; got {tuple(patterns.shape)}, {len(titles)} titles, {len(tokens)} tokens")
    n, size, tokens = patterns.shape[0], len(tokens), readable_tokens(tokens)
    figure = Figure(figsize=(5.2 * n, 0.3 * size + 1.8))
    for i in range(n):
        axes = figure.add_subplot(1, n, i + 1)
        image = axes.imshow(patterns[i].detach().double().cpu().numpy(), cmap="Blues", vmin=0, vmax=1)
        axes.set_xticks(range(size), tokens, rotation=90, fontsize=7)
        axes.set_yticks(range(size), tokens, fontsize=7)
        axes.set_xlabel("key (attended to)")
        axes.set_ylabel("query (attending from)")
        axes.set_title(titles[i], fontsize=9)
        figure.colorbar(image, ax=axes, fraction=0.046, label="attention weight")
    figure.suptitle("each row is where that token looks; the last row (END) is where the answer is read from", fontsize=9)
    figure.tight_layout()
    return figure
