"""mechinterp/patching.py: exact properties on small random models, and agreement with
transformer_lens.patching (one forward pass per patch) on small models and on the twins."""

from __future__ import annotations

import dataclasses
import functools

import pandas as pd
import pytest
import torch
import transformer_lens.patching as tl_patching
from hypothesis import given, settings
from hypothesis import strategies as st
from transformer_lens import HookedTransformer, HookedTransformerConfig

from fixtures.tokenizer import gpt2_tokenizer
from mechinterp import patching
from mechinterp.ioi import generate_dataset, protocol_prompts
from mechinterp.metrics import logit_diff
from mechinterp.heads import top_heads
from mechinterp.patching import ALL, PatchingConfig, PatchingError
from mechinterp.plots.patching import head_heatmap, layer_position_heatmap

RAW = PatchingConfig(normalize=False, progress=False)
NORMALIZED = PatchingConfig(normalize=True, progress=False)

# Small random models: with LayerNorm, without, and attention-only. They read the protocol prompts
# with the GPT-2 ids renumbered into a small vocabulary, so the unembedding does not dominate.
SMALL_KINDS = {
    "ln": dict(normalization_type="LN"),
    "no-ln": dict(normalization_type=None),
    "attn-only": dict(normalization_type=None, attn_only=True),
}
SMALL_VOCAB = 64


@functools.lru_cache(maxsize=None)
def small_model(kind: str, n_layers: int = 3) -> HookedTransformer:
    """A seeded random HookedTransformer; shared, so tests must leave it unchanged."""
    cfg = HookedTransformerConfig(
        n_layers=n_layers, d_model=32, n_heads=4, d_head=8, d_mlp=64, d_vocab=SMALL_VOCAB, n_ctx=32,
        act_fn="gelu", seed=0, initializer_range=0.3, **SMALL_KINDS[kind],
    )
    return HookedTransformer(cfg).eval()


@functools.lru_cache(maxsize=None)
def protocol_pair():
    """The first two protocol templates, both name orders (4 prompts), S2 -> IO corrupted, with
    token ids renumbered 0..K-1 in order of first use (same ids in both batches)."""
    clean, corrupt = patching.dataset_batches(gpt2_tokenizer(), protocol_prompts()[:4])
    used = torch.cat([clean.tokens.flatten(), corrupt.tokens.flatten()]).unique()
    assert len(used) <= SMALL_VOCAB
    lookup = torch.full((int(used.max()) + 1,), -1, dtype=torch.long)
    lookup[used] = torch.arange(len(used))

    def renumber(batch):
        return dataclasses.replace(batch, tokens=lookup[batch.tokens], io_token=lookup[batch.io_token], s_token=lookup[batch.s_token])

    return renumber(clean), renumber(corrupt)


@functools.lru_cache(maxsize=None)
def thesis_pair():
    return patching.patching_pair_batches(gpt2_tokenizer())


def tl_metric(clean):
    return lambda logits: logit_diff(logits, clean)


def tl_clean_cache(model, clean):
    return model.run_with_cache(clean.tokens)[1]


def assert_no_hooks_left(model):
    assert all(not hp.fwd_hooks and not hp.bwd_hooks for hp in model.hook_dict.values())


# --- inputs -------------------------------------------------------------------------------------


def test_thesis_pair_is_the_thesis_sentences():
    clean, corrupt = thesis_pair()
    tok = gpt2_tokenizer()
    assert tok.decode(clean.tokens[0, 1:]) == "When John and Mary went to the shops, John gave the bag to"
    assert tok.decode(corrupt.tokens[0, 1:]) == "When John and Mary went to the shops, Mary gave the bag to"
    assert (clean.tokens != corrupt.tokens).nonzero()[:, 1].tolist() == [clean.pos("S2").item()]


def test_mismatched_batches_are_rejected():
    model = small_model("ln")
    clean, corrupt = protocol_pair()
    with pytest.raises(PatchingError, match="token shapes differ"):
        patching.patch_resid_pre_by_pos(model, clean, thesis_pair()[1], cfg=RAW)
    swapped = patching.tile_batch(corrupt, 1)
    swapped.io_token = corrupt.s_token
    with pytest.raises(PatchingError, match="same answers"):
        patching.patch_resid_pre_by_pos(model, clean, swapped, cfg=RAW)


@pytest.mark.parametrize("sites, message", [
    (pd.DataFrame({"layer": [3]}), "layers must lie"),
    (pd.DataFrame({"layer": [0], "pos": [99]}), "pos out of range"),
    (pd.DataFrame({"layer": [0], "head": [4]}), "head out of range"),
    (pd.DataFrame({"pos": [0]}), "'layer' column"),
])
def test_bad_sites_are_rejected(sites, message):
    clean, corrupt = protocol_pair()
    with pytest.raises(PatchingError, match=message):
        patching.patch_sites(small_model("ln"), clean, corrupt, "z", sites, cfg=RAW)


def test_equal_clean_and_corrupt_cannot_be_normalized():
    clean, _ = protocol_pair()
    with pytest.raises(PatchingError, match="metrics are equal"):
        patching.patch_head_out_all_pos(small_model("ln"), clean, clean, cfg=NORMALIZED)


# --- exact properties ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", SMALL_KINDS)
def test_patching_a_whole_layer_restores_the_clean_run(kind):
    """Every position of resid_pre (or every head at every position) patched = the clean run: 1."""
    model = small_model(kind)
    clean, corrupt = protocol_pair()
    whole_resid = pd.DataFrame({"layer": range(model.cfg.n_layers), "pos": ALL})
    restored = patching.patch_sites(model, clean, corrupt, "resid_pre", whole_resid, cfg=NORMALIZED)
    torch.testing.assert_close(restored, torch.ones(model.cfg.n_layers), atol=1e-5, rtol=0)
    assert_no_hooks_left(model)


@pytest.mark.parametrize("kind", SMALL_KINDS)
def test_positions_the_corruption_cannot_reach_have_no_effect(kind):
    """Clean and corrupted tokens agree before S2, and attention is causal: patching there is a no-op (0)."""
    model = small_model(kind)
    clean, corrupt = protocol_pair()
    s2 = int(clean.pos("S2")[0])
    assert (clean.pos("S2") == s2).all()
    resid = patching.patch_resid_pre_by_pos(model, clean, corrupt, cfg=NORMALIZED)
    heads = patching.patch_head_out_by_pos(model, clean, corrupt, cfg=NORMALIZED)
    assert resid[:, :s2].abs().max() == 0
    assert heads[:, :s2].abs().max() == 0
    # Layer 0's residual at S2 is the only place the corruption enters: patching it restores everything.
    assert resid[0, s2].item() == pytest.approx(1.0, abs=1e-5)
    assert resid[0, s2 + 1 :].abs().max() == 0


def test_patching_nothing_gives_the_corrupted_metric_raw():
    """Unnormalized: a no-op patch returns the corrupted run's own metric."""
    model = small_model("ln")
    clean, corrupt = protocol_pair()
    raw = patching.patch_resid_pre_by_pos(model, clean, corrupt, cfg=RAW)
    assert raw[:, 0].tolist() == pytest.approx([patching.run_metric(model, corrupt)] * model.cfg.n_layers, abs=1e-5)


def test_chunking_does_not_change_results():
    model = small_model("ln")
    clean, corrupt = protocol_pair()
    one_site_per_pass = PatchingConfig(normalize=False, progress=False, max_rows_per_forward=1)
    torch.testing.assert_close(
        patching.patch_head_out_all_pos(model, clean, corrupt, cfg=one_site_per_pass),
        patching.patch_head_out_all_pos(model, clean, corrupt, cfg=RAW),
        atol=1e-5, rtol=0,
    )


def test_top_heads_orders_by_magnitude():
    effects = torch.tensor([[0.1, -0.9], [0.5, 0.0]])
    assert top_heads(effects, k=2, by_magnitude=True) == [("H0.1", pytest.approx(-0.9)), ("H1.0", pytest.approx(0.5))]


# --- agreement with transformer_lens.patching ---------------------------------------------------


@pytest.mark.parametrize("kind", SMALL_KINDS)
@pytest.mark.parametrize(
    "ours, theirs",
    [
        (patching.patch_resid_pre_by_pos, tl_patching.get_act_patch_resid_pre),
        (patching.patch_head_out_all_pos, tl_patching.get_act_patch_attn_head_out_all_pos),
    ],
    ids=["resid_pre", "head_out_all_pos"],
)
def test_matches_transformer_lens_on_small_models(kind, ours, theirs):
    model = small_model(kind)
    clean, corrupt = protocol_pair()
    expected = theirs(model, corrupt.tokens, tl_clean_cache(model, clean), tl_metric(clean))
    torch.testing.assert_close(ours(model, clean, corrupt, cfg=RAW), expected, atol=1e-5, rtol=1e-4)


@settings(max_examples=5, deadline=None)
@given(data=st.data())
def test_any_head_position_sites_match_transformer_lens(data):
    """Random (layer, pos, head) site lists, as transformer_lens's index_df."""
    model = small_model("ln")
    clean, corrupt = protocol_pair()
    n_pos = clean.tokens.shape[1]
    site = st.tuples(st.integers(0, model.cfg.n_layers - 1), st.integers(0, n_pos - 1), st.integers(0, model.cfg.n_heads - 1))
    rows = data.draw(st.lists(site, min_size=1, max_size=6))
    index_df = pd.DataFrame(rows, columns=["layer", "pos", "head_index"])
    expected = tl_patching.get_act_patch_attn_head_out_by_pos(
        model, corrupt.tokens, tl_clean_cache(model, clean), tl_metric(clean), index_axis_names=None, index_df=index_df
    )
    ours = patching.patch_sites(model, clean, corrupt, "z", index_df.rename(columns={"head_index": "head"}), cfg=RAW)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-4)


TWIN_TOLERANCE = 1e-4  # float32 batched vs single-row matmuls; the brief's agreement bound


def tl_on_sites(theirs, model, corrupt, cache, metric, rows: list[tuple], columns: list[str]) -> tuple[pd.DataFrame, torch.Tensor]:
    """transformer_lens's result on an explicit site list (one full forward pass per site)."""
    index_df = pd.DataFrame(rows, columns=columns)
    return index_df, theirs(model, corrupt.tokens, cache, metric, index_axis_names=None, index_df=index_df)


@pytest.mark.parametrize("twin, check_by_pos", [("tiny-stories-8M", True), ("gpt2-small", False)])
def test_matches_transformer_lens_on_twins(twin, check_by_pos, twin_model):
    """The twins run the real architectures (GPT-Neo local attention, GPT-2) through from_pretrained.
    Ours computes every site; transformer_lens (one pass per site) checks a sample of ~100 sites
    (GPT-2's passes are ~5x dearer: no by-position check there)."""
    model = twin_model(twin)
    clean, corrupt = thesis_pair()
    cache, metric = tl_clean_cache(model, clean), tl_metric(clean)
    n_layers, n_heads, n_pos = model.cfg.n_layers, model.cfg.n_heads, clean.tokens.shape[1]
    layers = [0, n_layers // 2, n_layers - 1]
    s2, end = int(clean.pos("S2")[0]), int(clean.pos("END")[0])
    positions = [0, s2 - 1, *range(s2, end + 1)]  # two in the shared prefix (skipped by ours), the rest run

    ours = patching.patch_resid_pre_by_pos(model, clean, corrupt, cfg=RAW)
    sites, expected = tl_on_sites(tl_patching.get_act_patch_resid_pre, model, corrupt, cache, metric,
                                  [(l, p) for l in layers for p in positions], ["layer", "pos"])
    torch.testing.assert_close(ours[sites["layer"], sites["pos"]], expected, atol=TWIN_TOLERANCE, rtol=0)

    ours = patching.patch_head_out_all_pos(model, clean, corrupt, cfg=RAW)
    sites, expected = tl_on_sites(tl_patching.get_act_patch_attn_head_out_all_pos, model, corrupt, cache, metric,
                                  [(l, h) for l in layers[1:] for h in range(n_heads)], ["layer", "head_index"])
    torch.testing.assert_close(ours[sites["layer"], sites["head_index"]], expected, atol=TWIN_TOLERANCE, rtol=0)

    if check_by_pos:
        ours = patching.patch_head_out_by_pos(model, clean, corrupt, cfg=RAW)
        assert ours.shape == (n_layers, n_pos, n_heads)
        sites, expected = tl_on_sites(tl_patching.get_act_patch_attn_head_out_by_pos, model, corrupt, cache, metric,
                                      [(layers[-1], p, h) for p in (s2 - 1, s2, end) for h in range(n_heads)],
                                      ["layer", "pos", "head_index"])
        torch.testing.assert_close(ours[sites["layer"], sites["pos"], sites["head_index"]], expected, atol=TWIN_TOLERANCE, rtol=0)
    assert_no_hooks_left(model)


def test_dataset_runs_and_is_normalized(twin_model):
    """On a 24-prompt generated dataset the whole residual at layer 0 and S2 restores the clean run."""
    model = twin_model("tiny-stories-8M")
    clean, corrupt = patching.dataset_batches(gpt2_tokenizer(), generate_dataset(gpt2_tokenizer(), 24, seed=0))
    resid = patching.patch_resid_pre_by_pos(model, clean, corrupt, cfg=NORMALIZED)
    assert resid[0, int(clean.pos("S2")[0])].item() == pytest.approx(1.0, abs=1e-4)


def test_heatmaps():
    effects = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.2, 0.9]])
    figure = layer_position_heatmap(effects, ["a", "b", "c"], "title")
    assert len(figure.axes) == 2  # heatmap and colorbar
    assert [t.get_text() for t in figure.axes[0].get_xticklabels()] == ["a (0)", "b (1)", "c (2)"]
    with pytest.raises(ValueError, match="one label per position"):
        layer_position_heatmap(effects, ["a"], "title")
    figure = head_heatmap(effects, "heads", annotate_top=2)
    assert sorted(t.get_text() for t in figure.axes[0].texts) == ["0.1", "1.2"]


def test_s2_to_end_handover_leaves_layer_0_out_of_the_s2_mean():
    """Layer 0's S2 effect is 1 in any model (only S2's token differs), so it must not count: a map
    whose S2 effect is 1 at layer 0 only gives an S2 mean of 0, and one handing over at layer 2 a third."""
    s2, end = 1, 3
    only_layer_0 = torch.zeros(8, 4)
    only_layer_0[0, s2] = 1.0
    only_layer_0[1:, end] = 1.0
    assert patching.s2_to_end_handover(only_layer_0, s2, end) == {
        "S2_effect_first_half": 0.0, "END_effect_last_layer": 1.0, "handover_layer": 1.0}
    handover_at_2 = torch.zeros(8, 4)
    handover_at_2[:2, s2] = 1.0
    handover_at_2[2:, end] = 1.0
    assert patching.s2_to_end_handover(handover_at_2, s2, end)["S2_effect_first_half"] == pytest.approx(1 / 3)
    never = torch.zeros(8, 4)
    never[:, s2] = 1.0
    assert patching.s2_to_end_handover(never, s2, end)["handover_layer"] == 8.0


@pytest.mark.parametrize("kind", list(SMALL_KINDS))
def test_two_column_logit_diff_equals_the_full_unembedding(kind):
    """end_metric reads only the IO and S columns of W_U for the logit difference (the distribution's speed-up):
    the same values as the full END logits, and as the model's own forward pass, to float32 rounding (1e-5)."""
    model = small_model(kind)
    clean, corrupt = protocol_pair()
    sites = pd.DataFrame({"layer": [0, 1, 2, 2], "pos": [ALL, 7, ALL, 9], "head": [ALL, 1, 3, ALL]})
    full_logits = lambda logits, batch: logit_diff(logits, batch, per_prompt=True)  # any other metric: full logits
    fast = patching.patch_sites_per_prompt(model, clean, corrupt, "z", sites, cfg=RAW)
    slow = patching.patch_sites_per_prompt(model, clean, corrupt, "z", sites, metric=full_logits, cfg=RAW)
    for ours, reference in zip(fast, slow):
        torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        plain = logit_diff(model(corrupt.tokens), corrupt, per_prompt=True)
    torch.testing.assert_close(fast[2], plain, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(fast[0][0], fast[2])  # the patches move the metric: the comparison is not vacuous


def test_soft_capped_logits_are_capped_in_both_paths():
    model = small_model("ln")
    clean, _ = protocol_pair()
    resid = torch.randn(len(clean), clean.tokens.shape[1], model.cfg.d_model) * 30
    model.cfg.output_logits_soft_cap = 2.0
    try:
        torch.set_grad_enabled(False)
        fast = patching.end_metric(model, resid, clean)
        full = logit_diff(patching.unembed_at_end(model, resid, clean), clean, per_prompt=True)
    finally:
        torch.set_grad_enabled(True)
        model.cfg.output_logits_soft_cap = -1.0
    torch.testing.assert_close(fast, full, atol=1e-5, rtol=1e-5)
    assert float(fast.abs().max()) <= 4.0 and float(fast.abs().max()) > 0
