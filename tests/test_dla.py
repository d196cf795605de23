"""mechinterp/dla.py: components add up to the logit difference (property, float64), per-head
values against a hand computation from hook_result, and the table's labelling."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformer_lens import HookedTransformer, HookedTransformerConfig

from fixtures.tokenizer import gpt2_tokenizer
from random_models import with_random_biases
from mechinterp.dla import CONSTANT_LABEL, component_dla, dla_table, head_dla
from mechinterp.ioi import generate_dataset, make_batch, protocol_prompts
from mechinterp.logit_lens import logit_diff_direction
from mechinterp.metrics import logit_diff


def random_model(norm, n_layers=2, n_heads=3, positional="standard", seed=0, dtype=torch.float64) -> HookedTransformer:
    cfg = HookedTransformerConfig(n_layers=n_layers, d_model=16, n_heads=n_heads, d_head=4, d_mlp=32, n_ctx=64,
                                  d_vocab=50257, act_fn="gelu", normalization_type=norm, dtype=dtype, seed=seed,
                                  positional_embedding_type=positional, rotary_dim=4 if positional == "rotary" else None)
    return with_random_biases(HookedTransformer(cfg), seed)


@pytest.fixture(scope="module")
def batch():
    return make_batch(gpt2_tokenizer(), protocol_prompts())


@settings(max_examples=8, deadline=None)
@given(norm=st.sampled_from(["LN", "LNPre", "RMS", "RMSPre", None]), n_layers=st.integers(1, 3),
       n_heads=st.integers(1, 4), positional=st.sampled_from(["standard", "rotary"]), seed=st.integers(0, 2**16))
def test_components_sum_to_logit_diff(norm, n_layers, n_heads, positional, seed):
    tokenizer = gpt2_tokenizer()
    batch = make_batch(tokenizer, generate_dataset(tokenizer, 6, seed=seed % 100))
    model = random_model(norm, n_layers, n_heads, positional, seed)
    attributions, labels = component_dla(model, batch)
    expected_rows = n_layers * n_heads + n_layers + 1 + (positional == "standard") + 1 + 1
    assert attributions.shape == (expected_rows, len(batch)) and len(labels) == expected_rows
    with torch.no_grad():
        total = logit_diff(model(batch.tokens), batch, per_prompt=True)
    torch.testing.assert_close(attributions.sum(0), total, atol=1e-4, rtol=0)


@pytest.mark.parametrize("norm", ["LN", "RMS", None])
def test_head_dla_matches_hand_computation(norm, batch):
    """Each head's DLA = its own output at END (hook_result), centred (LayerNorm only), divided by
    the clean final-norm scale, dotted with the logit-diff direction; averaged over prompts."""
    model = random_model(norm, seed=5)
    model.set_use_attn_result(True)
    with torch.no_grad():
        _, cache = model.run_with_cache(batch.tokens)
    direction, _ = logit_diff_direction(model, batch)
    end = batch.pos("END")
    rows = torch.arange(len(batch))
    expected = torch.zeros(model.cfg.n_layers, model.cfg.n_heads, dtype=torch.float64)
    for layer in range(model.cfg.n_layers):
        out = cache["result", layer][rows, end]  # [batch, head, d_model]
        if norm == "LN":
            out = out - out.mean(-1, keepdim=True)
        if norm is not None:
            out = out / cache["ln_final.hook_scale"][rows, end][:, None]
        expected[layer] = (out * direction[:, None]).sum(-1).mean(0)
    model.set_use_attn_result(False)
    torch.testing.assert_close(head_dla(model, batch), expected, atol=1e-10, rtol=0)


def test_table_labels_and_kinds(batch):
    model = random_model("LN", n_layers=2, n_heads=3)
    table = dla_table(model, batch)
    assert table["label"].tolist()[:3] == ["L0H0", "L0H1", "L0H2"]
    assert table["kind"].value_counts().to_dict() == {"head": 6, "mlp": 2, "embed": 1, "pos_embed": 1, "bias": 1, "constant": 1}
    assert table.iloc[-1]["label"] == CONSTANT_LABEL
    heads = table[table.kind == "head"]
    torch.testing.assert_close(
        torch.tensor(heads["dla"].to_numpy()).reshape(2, 3), head_dla(model, batch).double(), atol=1e-12, rtol=0
    )
    assert heads[["layer", "head"]].values.tolist() == [[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2]]
