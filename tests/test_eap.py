"""mechinterp/eap.py: the edge table's structure, completeness against plain residual-stream
gradients (no split q/k/v hooks), exactness where the metric is linear, and the table readers."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from mechinterp import eap, patching
from mechinterp.patching import per_prompt_logit_diff
from mechinterp.plots.patching import circuit_graph
from tests.test_patching import RAW, assert_no_hooks_left, protocol_pair, small_model, thesis_pair

QUIET = eap.EAPConfig(progress=False)


def plain_deltas_and_grads(model, clean, corrupt, names):
    """corrupted - clean activation and d(mean metric)/d(activation) on the clean run, from an
    ordinary forward pass (none of eap.py's per-head hooks)."""
    with torch.no_grad():
        _, corrupt_cache = model.run_with_cache(corrupt.tokens, names_filter=names)
    saved = {}
    with model.hooks(fwd_hooks=[(n, lambda act, hook: saved.__setitem__(hook.name, act)) for n in names]):
        metric = per_prompt_logit_diff(model(clean.tokens), clean).mean()
        grads = torch.autograd.grad(metric, [saved[n] for n in names])
    return {n: ((corrupt_cache[n] - saved[n].detach()), g) for n, g in zip(names, grads)}


def in_edge_sum(edges, downstream: str) -> float:
    return float(edges.loc[edges["downstream"] == downstream, "score"].sum())


@pytest.mark.parametrize("kind", ["ln", "no-ln", "attn-only"])
def test_edges_are_complete(kind):
    """A downstream input is the sum of its upstream nodes' outputs (plus constant biases), so its
    in-edge scores add up to (corrupted - clean input) . gradient. Checked against plain hooks:
    logits <- final residual; each MLP <- resid_mid; each layer's q/k/v inputs together <- the
    attention path of resid_pre (its gradient minus the skip connection's, resid_mid's)."""
    model = small_model(kind)
    clean, corrupt = protocol_pair()
    edges = eap.edge_attribution(model, clean, corrupt, cfg=QUIET)
    last = model.cfg.n_layers - 1
    names = [f"blocks.{l}.hook_resid_{where}" for l in range(model.cfg.n_layers) for where in ("pre", "mid", "post")
             if where != "mid" or not model.cfg.attn_only]
    plain = plain_deltas_and_grads(model, clean, corrupt, names)

    def delta_dot_path(into: str, skip_to: str) -> float:
        """(corrupted - clean) at `into` . (its gradient minus the skip connection's, at `skip_to`)."""
        delta, grad = plain[into]
        return float((delta * (grad - plain[skip_to][1])).sum())

    delta, grad = plain[f"blocks.{last}.hook_resid_post"]
    assert in_edge_sum(edges, "logits") == pytest.approx(float((delta * grad).sum()), abs=1e-6, rel=1e-4)
    for layer in range(model.cfg.n_layers):
        pre, mid, post = (f"blocks.{layer}.hook_resid_{w}" for w in ("pre", "mid", "post"))
        heads = edges[edges["downstream_layer"].eq(layer) & edges["composition"].isin(eap.QKV)]
        attention_path = delta_dot_path(pre, post if model.cfg.attn_only else mid)
        assert float(heads["score"].sum()) == pytest.approx(attention_path, abs=1e-6, rel=1e-4)
        if not model.cfg.attn_only:
            assert in_edge_sum(edges, f"MLP{layer}") == pytest.approx(delta_dot_path(mid, post), abs=1e-6, rel=1e-4)


def test_head_to_logits_edges_are_exact_when_linear():
    """One attention-only layer without LayerNorm: a head's output reaches the logits linearly, so
    its edge score is exactly M(clean, that head's output corrupted) - M(clean)."""
    model = small_model("attn-only", n_layers=1)
    clean, corrupt = protocol_pair()
    edges = eap.edge_attribution(model, clean, corrupt, cfg=QUIET)
    sites = pd.DataFrame({"layer": 0, "head": range(model.cfg.n_heads)})
    # roles swapped: corrupted activations patched into the clean run (noising)
    noised = patching.patch_sites(model, corrupt, clean, "z", sites, cfg=RAW)
    expected = noised - patching.run_metric(model, clean)
    ours = torch.tensor([in_edge_sum(edges.query("upstream == @u"), "logits") for u in [f"H0.{h}" for h in range(model.cfg.n_heads)]])
    torch.testing.assert_close(ours.float(), expected.float(), atol=1e-5, rtol=1e-4)


def test_graph_structure_and_order():
    model = small_model("ln")
    clean, corrupt = protocol_pair()
    edges = eap.edge_attribution(model, clean, corrupt, cfg=QUIET)
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    per_layer = n_heads + 1  # heads and the MLP
    expected = sum(3 * n_heads * (1 + per_layer * l) + (1 + per_layer * l + n_heads) for l in range(n_layers))
    expected += 1 + per_layer * n_layers  # logits read everything
    assert len(edges) == expected
    assert not edges.duplicated(["upstream", "downstream"]).any()
    assert (edges["upstream_layer"] <= edges["downstream_layer"]).all()
    same_layer = edges[edges["upstream_layer"] == edges["downstream_layer"]]
    assert set(same_layer["composition"]) == {"mlp"} and same_layer["upstream"].str.startswith("H").all()
    assert edges["score"].abs().is_monotonic_decreasing
    assert set(edges["composition"]) == {"q", "k", "v", "mlp", "logits"}


def test_chunking_and_state_are_invisible():
    model = small_model("ln")
    clean, corrupt = protocol_pair()
    flags = (model.cfg.use_split_qkv_input, model.cfg.use_attn_result, model.cfg.use_hook_mlp_in)
    one_at_a_time = eap.edge_attribution(model, clean, corrupt, cfg=eap.EAPConfig(prompts_per_pass=1, progress=False))
    together = eap.edge_attribution(model, clean, corrupt, cfg=QUIET)
    merged = one_at_a_time.merge(together, on=["upstream", "downstream"])
    assert len(merged) == len(together)
    assert (merged["score_x"] - merged["score_y"]).abs().max() < 1e-6
    assert (model.cfg.use_split_qkv_input, model.cfg.use_attn_result, model.cfg.use_hook_mlp_in) == flags
    assert_no_hooks_left(model)
    assert all(p.grad is None for p in model.parameters())


def test_flags_restored_after_an_error():
    model = small_model("ln")
    clean, corrupt = protocol_pair()
    flags = (model.cfg.use_split_qkv_input, model.cfg.use_attn_result, model.cfg.use_hook_mlp_in)

    def broken_metric(logits, batch):
        raise RuntimeError("metric failed")

    with pytest.raises(RuntimeError, match="metric failed"):
        eap.edge_attribution(model, clean, corrupt, metric=broken_metric, cfg=QUIET)
    assert (model.cfg.use_split_qkv_input, model.cfg.use_attn_result, model.cfg.use_hook_mlp_in) == flags
    assert_no_hooks_left(model)


def test_mismatched_batches_are_rejected():
    clean, _ = protocol_pair()
    with pytest.raises(patching.PatchingError):
        eap.edge_attribution(small_model("ln"), clean, thesis_pair()[1], cfg=QUIET)


# --- reading the table --------------------------------------------------------------------------


def toy_edges() -> pd.DataFrame:
    rows = [
        ("H0.1", "H1.0.q", -5.0), ("embed", "H1.0.v", 3.0), ("MLP0", "H1.0.v", 2.5), ("H0.0", "H1.0.k", 1.0),
        ("H0.1", "logits", 0.5), ("embed", "H1.1.k", -0.2),
    ]
    table = pd.DataFrame(rows, columns=["upstream", "downstream", "score"])
    table["receiver"] = table["downstream"].str.replace(r"\.[qkv]$", "", regex=True)
    table["composition"] = [d.rsplit(".", 1)[1] if d.startswith("H") else "logits" for d in table["downstream"]]
    return table


def test_table_readers():
    edges = toy_edges()
    assert eap.edge_rank(edges, "embed", "H1.0.v") == 2
    with pytest.raises(KeyError, match="no edge"):
        eap.edge_rank(edges, "H1.0", "H0.1.q")
    assert eap.top_edges(edges, 2)["upstream"].tolist() == ["H0.1", "embed"]
    strength = eap.head_in_edge_strength(edges)
    assert strength.to_dict() == pytest.approx({"H1.0": 11.5, "H1.1": 0.2})
    assert eap.head_input_effect(edges).to_dict() == pytest.approx({"H1.0": 1.5, "H1.1": 0.2})
    by_head = eap.composition_by_head(edges)
    assert by_head.index.tolist() == ["H1.0", "H1.1"]
    assert by_head.loc["H1.0", ["q", "k", "v"]].tolist() == pytest.approx([5.0, 1.0, 5.5])
    assert by_head.loc["H1.0", "composition"] == "q" and by_head.loc["H1.0", "strongest_upstream"] == "H0.1"
    assert by_head.loc["H1.1", "composition"] == "k"


def test_circuit_graph_draws_the_top_edges():
    edges = toy_edges()
    figure = circuit_graph(edges, n_layers=2, n_heads=2, k=3)
    axes = figure.axes[0]
    assert len(axes.patches) == 3  # one arrow per edge
    labels = {t.get_text() for t in axes.texts}
    assert {"H0.1", "H1.0", "embed", "MLP0"} <= labels and {"q", "v"} <= labels
    with pytest.raises(ValueError, match="no edges"):
        circuit_graph(edges.iloc[:0], n_layers=2, n_heads=2)


def test_per_prompt_scores_are_each_prompt_alone():
    """edge_scores_per_prompt's row i is prompt i's own EAP score (prompts do not mix in the summed gradient), and
    their mean is edge_attribution's score."""
    model = small_model("ln")
    clean, corrupt = protocol_pair()
    per_prompt = eap.edge_scores_per_prompt(model, clean, corrupt, cfg=QUIET)
    assert per_prompt.shape == (len(clean), len(eap.edge_index(model)[0]))
    for i in range(len(clean)):
        alone = eap.edge_scores_per_prompt(model, clean.select([i]), corrupt.select([i]), cfg=QUIET)[0]
        torch.testing.assert_close(per_prompt[i], alone, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(per_prompt[0], per_prompt[1])  # the prompts differ: the check is not vacuous
    table = eap.edge_attribution(model, clean, corrupt, cfg=QUIET)
    again = eap.edge_table(model, per_prompt.double().mean(0))
    pd.testing.assert_frame_equal(table, again)


@pytest.mark.parametrize("seed", range(5))
def test_ranks_by_magnitude_are_the_tables_ranks(seed):
    """The fast rank (robustness resamples) is edge_rank on the sorted table, among all edges and among one
    downstream input's in-edges, ties included (scores drawn from a few values, so most edges tie)."""
    model = small_model("ln")
    n_edges = len(eap.edge_index(model)[0])
    generator = torch.Generator().manual_seed(seed)
    scores = torch.randint(-3, 4, (n_edges,), generator=generator).double()
    table = eap.edge_table(model, scores)
    _, d = eap.edge_index(model)
    picked = torch.randperm(n_edges, generator=generator)[:20]
    in_table_order = eap.edge_table(model, torch.arange(n_edges, dtype=torch.float64) + 1)  # |score| = index + 1
    names = in_table_order.sort_values("score")[["upstream", "downstream"]].to_numpy()
    ranks = eap.ranks_by_magnitude(scores, picked)
    in_ranks = eap.ranks_by_magnitude(scores, picked, d[None, :] == d[picked][:, None])
    for e, rank, in_rank in zip(picked.tolist(), ranks.tolist(), in_ranks.tolist()):
        up, down = names[e]
        assert rank == eap.edge_rank(table, up, down)
        into = table[table["downstream"] == down].reset_index(drop=True)
        assert in_rank == eap.edge_rank(into, up, down)
