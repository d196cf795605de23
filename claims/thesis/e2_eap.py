"""E2.eap-edges: edge attribution patching finds the thesis's compositions (thesis s3.4.2, fig 3.20).

Thesis: H7.7's value input reads from MLP0 and the embedding; H7.7's query reads from H5.7; H5.7's
value reads from H4.0. Measured on the thesis's patching pair (mechinterp.eap, Syed et al. 2023):
each edge's rank by |score| among all edges of the graph, and its rank among the in-edges of its
own downstream input ("reads from" = the strongest in-edges there). Thresholds:
claims/thresholds.py, section E2.

Over the distribution (mechinterp.robustness): each prompt's edge scores against its own S2 -> IO corruption,
one EAP pass per length group; an edge's rank there is its rank in the mean scores over prompts (the EAP score
of the mean logit difference, as the protocol's over its one pair), by the protocol's own ordering.
"""

from __future__ import annotations

import torch

from claims.claim import Claim
from claims.framework import Measured, tokenizer_for
from mechinterp.eap import (
    EAPConfig,
    composition_by_head,
    downstream_nodes,
    edge_attribution,
    edge_index,
    edge_rank,
    per_prompt_eap,
    ranks_by_magnitude,
    upstream_nodes,
)
from mechinterp.patching import patching_pair_batches
from mechinterp.plots.patching import circuit_graph
from mechinterp.robustness import ClaimDistribution

# (upstream, downstream input) edges the thesis reports (s3.4.2, list under fig 3.20)
THESIS_EDGES = [("MLP0", "H7.7.v"), ("embed", "H7.7.v"), ("H5.7", "H7.7.q"), ("H4.0", "H5.7.v")]
FIGURE_EDGES = 30  # edges drawn in the report's circuit figure


# An edge scoring under this fraction of the graph's strongest edge is no edge: float32 resolution is ~1e-7,
# and a rank among edges scored (numerically) zero says nothing (a resting head's in-edges are all zero).
NEGLIGIBLE_SCORE = 1e-6


def in_edge_rank(edges, upstream: str, downstream: str) -> int:
    """1-based rank of the edge by |score| among the in-edges of `downstream` (table is sorted)."""
    into = edges[edges["downstream"] == downstream].reset_index(drop=True)
    return edge_rank(into, upstream, downstream)


def _scored(edges, upstream: str, downstream: str, rank: int) -> float:
    """`rank` as a float, NaN (fails its row) when the edge's score is negligible."""
    score = edges.loc[(edges["upstream"] == upstream) & (edges["downstream"] == downstream), "score"].iloc[0]
    return float(rank) if abs(score) >= NEGLIGIBLE_SCORE * edges["score"].abs().max() else float("nan")


def eap_values(edges) -> dict[str, float]:
    """The claim's quantities from an edge table (mechinterp.eap.edge_table)."""
    values = {}
    for upstream, downstream in THESIS_EDGES:
        try:
            values[f"rank_{downstream}<-{upstream}"] = _scored(edges, upstream, downstream, edge_rank(edges, upstream, downstream))
            values[f"in_rank_{downstream}<-{upstream}"] = _scored(edges, upstream, downstream, in_edge_rank(edges, upstream, downstream))
        except KeyError:  # a model too small to have the node: the quantity is missing and its row fails
            continue
    return values


def measure_eap_edges(model) -> Measured:
    clean, corrupt = patching_pair_batches(tokenizer_for(model))
    edges = edge_attribution(model, clean, corrupt, cfg=EAPConfig(progress=False))
    values = eap_values(edges)
    compositions = composition_by_head(edges).head(8)
    details = {
        "top_edges": [f"{r.upstream} -> {r.downstream}: {r.score:.4g}" for r in edges.head(FIGURE_EDGES).itertuples()],
        "strongest_in_edge_by_head": {
            head: f"{row.composition} <- {row.strongest_upstream} ({row.strongest_score:.4g})" for head, row in compositions.iterrows()
        },
        "n_edges": len(edges),
    }
    figure = circuit_graph(edges, model.cfg.n_layers, model.cfg.n_heads, k=FIGURE_EDGES,
                           title=f"{model.cfg.model_name}: EAP circuit")
    return Measured(values, figure, details)


# --- over the distribution (mechinterp.robustness) ------------------------------------------------


def eap_distribution(model) -> ClaimDistribution:
    """E2.eap-edges over the distribution. Rank of an edge over prompts = its rank in the prompts' mean EAP scores
    (the scores of the mean logit difference), by eap_values's rules (ties in edge order, negligible -> NaN)."""
    ups = {name: i for i, (name, _, _) in enumerate(upstream_nodes(model))}
    downs = {name: j for j, (name, _, _) in enumerate(downstream_nodes(model))}
    u, d = edge_index(model)
    position = {(int(a), int(b)): e for e, (a, b) in enumerate(zip(u.tolist(), d.tolist()))}
    thesis = [(up, down, position[(ups[up], downs[down])]) for up, down in THESIS_EDGES
              if up in ups and down in downs and (ups[up], downs[down]) in position]  # a missing node: no quantity
    at = torch.tensor([e for _, _, e in thesis], dtype=torch.long)
    into = d[None, :] == d[at][:, None]  # [thesis edges, edges]: the in-edges of each one's downstream input

    def statistic(means) -> dict[str, float]:
        scores = means["eap"]
        rank, in_rank = ranks_by_magnitude(scores, at), ranks_by_magnitude(scores, at, into)
        scored = scores[at].abs() >= NEGLIGIBLE_SCORE * scores.abs().max()
        values = {}
        for i, (up, down, _) in enumerate(thesis):
            values[f"rank_{down}<-{up}"] = float(rank[i]) if scored[i] else float("nan")
            values[f"in_rank_{down}<-{up}"] = float(in_rank[i]) if scored[i] else float("nan")
        return values

    return ClaimDistribution(per_prompt_eap, statistic)


EAP_EDGES = Claim(
    'E2.eap-edges', 's3.4, fig 3.20',
    "Edge attribution: H7.7's value reads MLP0 and the embedding, its query H5.7; H5.7's value reads H4.0.",
    measure=measure_eap_edges,
    distribution=eap_distribution,
)

CLAIMS = [EAP_EDGES]
