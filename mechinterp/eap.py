"""Edge attribution patching (Syed et al. 2023; thesis section 3.4.2, fig 3.20).

Graph. Upstream nodes write into the residual stream: the embedding (token + position), each
head's output ("H5.7") and each MLP's output ("MLP0"). Downstream nodes read from it: each head's
query, key and value input ("H7.7.q", "H7.7.k", "H7.7.v"), each MLP's input ("MLP0") and the
logits ("logits"). An edge joins an upstream node to every downstream node after it.

Score. edge (u -> d) = sum over prompts and positions of (u_corrupted - u_clean) . dM/d(input of
d), the gradient taken on the clean run: the first-order estimate of M(edge corrupted) - M(clean).
A negative score therefore means the edge carries behaviour that the corruption destroys.

Per-head inputs: transformer_lens's `use_split_qkv_input` gives every head its own copy of the
residual stream for q, k and v (hooks blocks.L.hook_{q,k,v}_input), so the gradient at a head's
q input is exactly that head's query path (layer norm included), with no hand-derived backward.
`use_attn_result` exposes each head's output (hook_result) and `use_hook_mlp_in` the MLP input.
The flags are switched on for the two passes and restored afterwards.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import pandas as pd
import torch
from tqdm.auto import tqdm

from mechinterp import progress
from transformer_lens import HookedTransformer

from mechinterp.ioi import IOIBatch, corrupt_s2_to_io
from mechinterp.patching import PerPromptMetric, check_pair, end_metric, per_prompt_logit_diff

QKV = ("q", "k", "v")


@dataclass
class EAPConfig:
    prompts_per_pass: int = 16  # prompts per forward/backward pass; bounds memory (scores are summed)
    progress: bool = True  # tqdm bar over the passes


@contextlib.contextmanager
def graph_hooks_enabled(model: HookedTransformer):
    """Expose per-head q/k/v inputs, per-head outputs and MLP inputs for the duration."""
    saved = (model.cfg.use_split_qkv_input, model.cfg.use_attn_result, model.cfg.use_hook_mlp_in)
    model.set_use_split_qkv_input(True)
    model.set_use_attn_result(True)
    if not model.cfg.attn_only:
        model.set_use_hook_mlp_in(True)
    try:
        yield model
    finally:
        model.cfg.use_split_qkv_input, model.cfg.use_attn_result, model.cfg.use_hook_mlp_in = saved


def head_name(layer: int, head: int) -> str:
    return f"H{layer}.{head}"


def upstream_nodes(model: HookedTransformer) -> list[tuple[str, int, int]]:
    """(name, layer, order) in computation order; order ranks writes within the forward pass."""
    nodes = [("embed", -1, 0)]
    for layer in range(model.cfg.n_layers):
        nodes += [(head_name(layer, h), layer, 2 * layer + 1) for h in range(model.cfg.n_heads)]
        if not model.cfg.attn_only:
            nodes.append((f"MLP{layer}", layer, 2 * layer + 2))
    return nodes


def downstream_nodes(model: HookedTransformer) -> list[tuple[str, int, int]]:
    """(name, layer, order): a downstream node reads every upstream node of smaller order."""
    nodes = []
    for layer in range(model.cfg.n_layers):
        nodes += [(f"{head_name(layer, h)}.{x}", layer, 2 * layer + 1) for x in QKV for h in range(model.cfg.n_heads)]
        if not model.cfg.attn_only:
            nodes.append((f"MLP{layer}", layer, 2 * layer + 2))
    nodes.append(("logits", model.cfg.n_layers, 2 * model.cfg.n_layers + 1))
    return nodes


def _upstream_outputs(model: HookedTransformer, cache: dict[str, torch.Tensor]) -> torch.Tensor:
    """[batch, pos, upstream node, d_model], in upstream_nodes order."""
    embed = cache["hook_embed"] + cache.get("hook_pos_embed", 0.0)
    parts = [embed[:, :, None]]
    for layer in range(model.cfg.n_layers):
        parts.append(cache[f"blocks.{layer}.attn.hook_result"])
        if not model.cfg.attn_only:
            parts.append(cache[f"blocks.{layer}.hook_mlp_out"][:, :, None])
    return torch.cat(parts, dim=2)


def _downstream_input_names(model: HookedTransformer) -> list[str]:
    names = []
    for layer in range(model.cfg.n_layers):
        names += [f"blocks.{layer}.hook_{x}_input" for x in QKV]
        if not model.cfg.attn_only:
            names.append(f"blocks.{layer}.hook_mlp_in")
    names.append(f"blocks.{model.cfg.n_layers - 1}.hook_resid_post")
    return names


def _upstream_names(model: HookedTransformer) -> list[str]:
    names = [n for n in ("hook_embed", "hook_pos_embed") if n in model.hook_dict]
    for layer in range(model.cfg.n_layers):
        names.append(f"blocks.{layer}.attn.hook_result")
        if not model.cfg.attn_only:
            names.append(f"blocks.{layer}.hook_mlp_out")
    return names


def _edge_scores_one_pass(model, clean: IOIBatch, corrupt: IOIBatch, metric: PerPromptMetric) -> torch.Tensor:
    """[prompts, upstream, downstream] each prompt's scores for one chunk of prompts (gradient of the chunk's metric
    sum: prompts do not interact, so each prompt's activations get its own metric's gradient)."""
    device = model.cfg.device
    up_names, down_names = _upstream_names(model), _downstream_input_names(model)
    with torch.no_grad():
        _, corrupt_cache = model.run_with_cache(corrupt.tokens.to(device), names_filter=lambda n: n in up_names)
    saved: dict[str, torch.Tensor] = {}

    def keep(act: torch.Tensor, hook) -> None:
        saved[hook.name] = act

    hooks = [(n, keep) for n in up_names + down_names if n in model.hook_dict]
    with torch.enable_grad(), model.hooks(fwd_hooks=hooks):
        # the final residual stream, read at END only (patching.end_metric): no [batch, seq, d_vocab] logits
        resid = model(clean.tokens.to(device), stop_at_layer=model.cfg.n_layers)
        total = end_metric(model, resid, clean, metric).sum()
        grads = torch.autograd.grad(total, [saved[n] for n in down_names], allow_unused=True)
    clean_up = _upstream_outputs(model, {n: t.detach() for n, t in saved.items() if n in up_names})
    delta = _upstream_outputs(model, dict(corrupt_cache.items())) - clean_up  # [b, p, up, d]
    # positions where no upstream output changed (before S2 for the S2 corruption) add exact zeros
    changed = delta.flatten(2).ne(0).any(-1).any(0).nonzero()
    first = int(changed[0]) if len(changed) else delta.shape[1]
    delta = delta[:, first:]

    columns = []
    for name, grad in zip(down_names, grads):
        if grad is None:
            grad = torch.zeros_like(saved[name])
        if grad.ndim == 3:  # one node (MLP input, logits): [b, p, d] -> [b, p, 1, d]
            grad = grad[:, :, None]
        columns.append(torch.einsum("bpud,bpnd->bun", delta, grad[:, first:].detach()))
    # down_names lists q, k, v inputs of a layer as three [.., head, ..] blocks, matching downstream_nodes
    return torch.cat(columns, dim=2)


def edge_scores_per_prompt(
    model: HookedTransformer,
    clean: IOIBatch,
    corrupt: IOIBatch,
    metric: PerPromptMetric = per_prompt_logit_diff,
    cfg: EAPConfig | None = None,
) -> torch.Tensor:
    """[prompts, edges] each prompt's EAP score of every edge, edges in `edge_index(model)` order. Their mean over
    prompts is `edge_attribution`'s score (the score of the mean metric)."""
    cfg = cfg or EAPConfig()
    check_pair(model, clean, corrupt)
    u, d = edge_index(model)
    parts = []
    with graph_hooks_enabled(model):
        starts = range(0, len(clean), cfg.prompts_per_pass)
        bar = tqdm(starts, desc="edge attribution", disable=not cfg.progress)
        for start in progress.counted(bar, "edge attribution", total=len(starts), unit="passes"):
            rows = slice(start, start + cfg.prompts_per_pass)
            scores = _edge_scores_one_pass(model, _rows(clean, rows), _rows(corrupt, rows), metric)
            parts.append(scores[:, u, d].detach().cpu())
    return torch.cat(parts)


def edge_index(model: HookedTransformer) -> tuple[torch.Tensor, torch.Tensor]:
    """(upstream index, downstream index) of every edge of the graph, upstream-major: the edges' one order."""
    up_order = torch.tensor([o for _, _, o in upstream_nodes(model)])
    down_order = torch.tensor([o for _, _, o in downstream_nodes(model)])
    return (up_order[:, None] < down_order[None, :]).nonzero(as_tuple=True)


def edge_table(model: HookedTransformer, scores: torch.Tensor) -> pd.DataFrame:
    """The edge table of `scores` [edges] (edge_index order), sorted by |score| (largest first, ties in edge order).

    Columns: upstream, downstream, score, upstream_layer, downstream_layer, receiver (the
    downstream head "H7.7", or the node name for MLPs/logits), composition ("q"/"k"/"v" for
    head inputs, "mlp", "logits").
    """
    ups, downs = upstream_nodes(model), downstream_nodes(model)
    u, d = edge_index(model)
    table = pd.DataFrame(
        {
            "upstream": [ups[i][0] for i in u.tolist()],
            "downstream": [downs[j][0] for j in d.tolist()],
            "score": scores.double().numpy(),
            "upstream_layer": [ups[i][1] for i in u.tolist()],
            "downstream_layer": [downs[j][1] for j in d.tolist()],
        }
    )
    table["receiver"] = table["downstream"].str.replace(r"\.[qkv]$", "", regex=True)
    table["composition"] = [_composition(name) for name in table["downstream"]]
    order = table["score"].abs().sort_values(ascending=False, kind="stable").index
    return table.loc[order].reset_index(drop=True)


def edge_attribution(
    model: HookedTransformer,
    clean: IOIBatch,
    corrupt: IOIBatch,
    metric: PerPromptMetric = per_prompt_logit_diff,
    cfg: EAPConfig | None = None,
) -> pd.DataFrame:
    """Every edge's EAP score for the mean metric over the prompts (the mean of the prompts' scores), as
    `edge_table`: sorted by |score| (largest first)."""
    return edge_table(model, edge_scores_per_prompt(model, clean, corrupt, metric, cfg).double().mean(0))


def per_prompt_eap(model: HookedTransformer, clean: IOIBatch, cfg: EAPConfig | None = None) -> dict[str, torch.Tensor]:
    """Each prompt's EAP scores against its own S2 -> IO corruption, for mechinterp.robustness (one length group
    per call): {"eap": [prompts, edges]} (edge_index order)."""
    cfg = cfg or EAPConfig(progress=False)
    return {"eap": edge_scores_per_prompt(model, clean, corrupt_s2_to_io(clean), cfg=cfg)}


def ranks_by_magnitude(scores: torch.Tensor, edges: torch.Tensor, among: torch.Tensor | None = None) -> torch.Tensor:
    """1-based rank by |score| of each edge in `edges` (indices into `scores` [edges]), among all edges or among
    the edges where the boolean [len(edges), n_edges] `among` is True: the position edge_table's stable sort gives
    it (larger |score| first, ties in edge order). One comparison per pair, no table: fast enough for resamples."""
    magnitude = scores.abs()
    mine = magnitude[edges][:, None]  # [k, 1]
    before = torch.arange(len(scores))[None, :] < edges[:, None]
    ahead = (magnitude[None, :] > mine) | ((magnitude[None, :] == mine) & before)
    if among is not None:
        ahead &= among
    return ahead.sum(1) + 1


def _composition(downstream: str) -> str:
    if downstream == "logits":
        return "logits"
    if downstream.startswith("MLP"):
        return "mlp"
    return downstream.rsplit(".", 1)[1]


def _rows(batch: IOIBatch, rows: slice) -> IOIBatch:
    return batch.select(list(range(len(batch)))[rows])


# --- reading the edge table ---------------------------------------------------------------------


def top_edges(edges: pd.DataFrame, k: int = 20) -> pd.DataFrame:
    """The `k` edges with the largest |score| (the table is already sorted)."""
    return edges.head(k)


def edge_rank(edges: pd.DataFrame, upstream: str, downstream: str) -> int:
    """1-based rank of an edge by |score|; a clear error for an edge that is not in the graph."""
    hit = edges.index[(edges["upstream"] == upstream) & (edges["downstream"] == downstream)]
    if len(hit) == 0:
        raise KeyError(f"no edge {upstream} -> {downstream} in the graph")
    return int(hit[0]) + 1


def head_in_edge_strength(edges: pd.DataFrame) -> pd.Series:
    """Per receiving head: the summed |score| of all its q, k and v in-edges, largest first."""
    heads = edges[edges["composition"].isin(QKV)]
    return heads["score"].abs().groupby(heads["receiver"]).sum().sort_values(ascending=False)


def head_input_effect(edges: pd.DataFrame) -> pd.Series:
    """Per receiving head: |sum of its q, k and v in-edge scores|, the first-order effect of
    corrupting everything the head reads (in-edges of opposite sign cancel), largest first."""
    heads = edges[edges["composition"].isin(QKV)]
    return heads["score"].groupby(heads["receiver"]).sum().abs().sort_values(ascending=False)


def composition_by_head(edges: pd.DataFrame) -> pd.DataFrame:
    """Per receiving head: summed |score| of its q, k and v in-edges, the composition carrying its
    strongest in-edge, and that edge's upstream node and score. Sorted by strongest in-edge."""
    heads = edges[edges["composition"].isin(QKV)].assign(magnitude=lambda t: t["score"].abs())
    per_letter = heads.pivot_table(index="receiver", columns="composition", values="magnitude", aggfunc="sum")
    per_letter = per_letter.reindex(columns=list(QKV), fill_value=0.0)
    strongest = heads.loc[heads.groupby("receiver")["magnitude"].idxmax()].set_index("receiver")
    table = per_letter.join(
        strongest[["composition", "upstream", "score", "magnitude"]].rename(
            columns={"upstream": "strongest_upstream", "score": "strongest_score", "magnitude": "strongest_magnitude"}
        )
    )
    return table.sort_values("strongest_magnitude", ascending=False)
