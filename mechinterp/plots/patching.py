"""Figures for activation patching and EAP (thesis figs 3.11-3.14, 3.20). Figures only: the numbers
come from mechinterp.patching / attribution_patching / eap."""

from __future__ import annotations

from typing import Sequence

import pandas as pd
import torch
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch

from mechinterp.plots import readable_tokens


def _diverging_heatmap(axes, values: torch.Tensor, title: str, xlabel: str, ylabel: str, colorbar_label: str):
    values = values.detach().double().cpu()
    limit = max(float(values.abs().max()), 1e-9)
    image = axes.imshow(values.numpy(), cmap="RdBu", norm=TwoSlopeNorm(0.0, -limit, limit), aspect="auto")
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title, fontsize=10)
    axes.figure.colorbar(image, ax=axes, label=colorbar_label)
    return image


def layer_position_heatmap(
    effects: torch.Tensor, token_labels: Sequence[str], title: str, value_label: str = "normalized patching effect"
) -> Figure:
    """[layer, pos] effects (figs 3.11, 3.12): one row per layer, one column per token."""
    if effects.ndim != 2 or effects.shape[1] != len(token_labels):
        raise ValueError(f"need [layer, pos] effects with one label per position, got {tuple(effects.shape)} and {len(token_labels)} labels")
    figure = Figure(figsize=(0.55 * len(token_labels) + 2.5, 0.35 * effects.shape[0] + 2.0))
    axes = figure.add_subplot()
    _diverging_heatmap(axes, effects, f"{title}\nblue: patching this token at this layer restores the answer", "position",
                       "layer (resid_pre)", value_label)
    tokens = readable_tokens(token_labels)
    axes.set_xticks(range(len(tokens)), [f"{t} ({i})" for i, t in enumerate(tokens)], rotation=60, ha="right", fontsize=7)
    axes.set_yticks(range(effects.shape[0]))
    figure.tight_layout()
    return figure


def head_heatmap(
    effects: torch.Tensor, title: str, value_label: str = "normalized patching effect", annotate_top: int = 3
) -> Figure:
    """[layer, head] effects (figs 3.13, 3.14), the `annotate_top` largest |effects| labelled L.H."""
    if effects.ndim != 2:
        raise ValueError(f"need [layer, head] effects, got {tuple(effects.shape)}")
    n_layers, n_heads = effects.shape
    figure = Figure(figsize=(0.4 * n_heads + 2.5, 0.35 * n_layers + 2.0))
    axes = figure.add_subplot()
    _diverging_heatmap(axes, effects, f"{title}\nblue: patching this head restores the answer", "head", "layer", value_label)
    axes.set_xticks(range(n_heads))
    axes.set_yticks(range(n_layers))
    flat = effects.flatten()
    for index in flat.abs().argsort(descending=True)[:annotate_top].tolist():
        layer, head = divmod(index, n_heads)
        axes.text(head, layer, f"{layer}.{head}", ha="center", va="center", fontsize=6, color="black")
    figure.tight_layout()
    return figure


def _node_position(name: str, n_layers: int, n_heads: int) -> tuple[float, float]:
    """x: head index (MLPs right of the heads, embed/logits centred); y: layer, heads above the MLP."""
    if name == "embed":
        return (n_heads - 1) / 2, -1.0
    if name == "logits":
        return (n_heads - 1) / 2, float(n_layers)
    if name.startswith("MLP"):
        return float(n_heads), int(name[3:]) + 0.45
    layer, head = name[1:].split(".")[:2]
    return float(head), float(layer)


def circuit_graph(edges: pd.DataFrame, n_layers: int, n_heads: int, k: int = 20, title: str = "EAP circuit") -> Figure:
    """The `k` strongest EAP edges as arrows between nodes laid out by layer and head (fig 3.20).

    Arrow width grows with |score|; colour is the sign of -score, i.e. blue where the edge
    supports the clean behaviour (corrupting it lowers the metric) and red where it opposes it,
    the thesis's 'positive' and 'negative influence'. The q/k/v letter labels each arrow's end.
    """
    top = edges.head(k)
    if top.empty:
        raise ValueError("no edges to draw")
    figure = Figure(figsize=(0.5 * n_heads + 3, 0.6 * n_layers + 2.5))
    axes = figure.add_subplot()
    strongest = float(top["score"].abs().max())
    nodes = set(top["upstream"]) | set(top["receiver"])
    for row in top.itertuples():
        start = _node_position(row.upstream, n_layers, n_heads)
        end = _node_position(row.receiver, n_layers, n_heads)
        supports = row.score < 0
        arrow = FancyArrowPatch(
            start, end, arrowstyle="-|>", mutation_scale=8, connectionstyle="arc3,rad=0.15",
            linewidth=0.5 + 3.5 * abs(row.score) / strongest, color="tab:blue" if supports else "tab:red", alpha=0.75,
        )
        axes.add_patch(arrow)
        if row.composition in ("q", "k", "v"):
            axes.annotate(row.composition, end, xytext=(4, -8), textcoords="offset points", fontsize=6)
    for name in nodes:
        x, y = _node_position(name, n_layers, n_heads)
        axes.scatter([x], [y], s=160, color="white", edgecolor="black", zorder=3)
        axes.annotate(name, (x, y), ha="center", va="center", fontsize=5, zorder=4)
    axes.set_xlim(-1, n_heads + 1)
    axes.set_ylim(-1.6, n_layers + 0.6)
    axes.set_xlabel("head (MLP on the right)")
    axes.set_ylabel("layer")
    axes.set_title(f"{title}: top {len(top)} edges (blue supports IOI, red opposes)", fontsize=9)
    figure.tight_layout()
    return figure
