"""mechinterp/logit_lens.py: exact end point, agreement with independent recomputation and with
transformer_lens's ActivationCache helpers on the TinyStories-8M twin, and consistency with DLA."""

from __future__ import annotations

import copy
import functools

import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from fixtures.tokenizer import gpt2_tokenizer
from random_models import with_random_biases
from mechinterp.dla import dla_table
from mechinterp.ioi import make_batch, protocol_prompts
from mechinterp.logit_lens import (
    LogitLensConfig,
    accumulated_logit_diff,
    layer_increases,
    logit_lens,
    point_labels,
    sublayer_steps,
)
from mechinterp.metrics import logit_diff

NORMS = ["LN", "LNPre", "RMS", None]


@functools.lru_cache(maxsize=None)
def toy_model(normalization_type, seed=0, dtype=torch.float64) -> HookedTransformer:
    """A 3-layer model on GPT-2's vocabulary with every bias and norm gain randomised, so the final
    norm's weight and bias and the unembedding bias all matter. Cached: tests must not mutate it."""
    cfg = HookedTransformerConfig(n_layers=3, d_model=32, n_heads=4, d_head=8, d_mlp=64, n_ctx=64, d_vocab=50257,
                                  act_fn="gelu", normalization_type=normalization_type, dtype=dtype, seed=seed)
    return with_random_biases(HookedTransformer(cfg), seed)


@pytest.fixture(scope="module")
def batch():
    return make_batch(gpt2_tokenizer(), protocol_prompts())


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("ln", ["frozen", "recomputed"])
def test_last_point_is_the_models_logit_diff(norm, ln, batch):
    model = toy_model(norm)
    values = accumulated_logit_diff(model, batch, LogitLensConfig(ln=ln))
    assert values.shape == (1 + 2 * model.cfg.n_layers, len(batch))
    with torch.no_grad():
        expected = logit_diff(model(batch.tokens), batch, per_prompt=True)
    torch.testing.assert_close(values[-1], expected, atol=1e-9, rtol=0)


@pytest.mark.parametrize("norm", NORMS)
def test_recomputed_lens_matches_truncated_runs(norm, batch):
    """Each 'before layer L' point of the recomputed lens equals running the model up to layer L
    and unembedding that residual through ln_final, computed independently."""
    model = toy_model(norm, seed=1)
    values = accumulated_logit_diff(model, batch, LogitLensConfig(ln="recomputed"))
    labels = [label for label, _ in point_labels(model.cfg.n_layers)]
    with torch.no_grad():
        for layer in range(model.cfg.n_layers):
            resid = model(batch.tokens, stop_at_layer=layer)
            normed = model.ln_final(resid) if norm is not None else resid
            truncated = logit_diff(model.unembed(normed), batch, per_prompt=True)
            point = 0 if layer == 0 else labels.index(f"mlp {layer - 1}")
            torch.testing.assert_close(values[point], truncated, atol=1e-9, rtol=0)


@pytest.mark.parametrize("norm", NORMS)
def test_frozen_steps_are_sublayer_dla(norm, batch):
    """With the final scale frozen the lens is linear: each sublayer's step equals that sublayer's
    direct logit attribution (its heads, or its MLP), as the thesis notes in 3.4.2. b_O is zeroed
    so an attention step is its heads alone."""
    model = copy.deepcopy(toy_model(norm, seed=2))
    with torch.no_grad():
        for block in model.blocks:
            block.attn.b_O.zero_()
    steps = sublayer_steps(logit_lens(model, batch)).set_index("label")["step"]
    table = dla_table(model, batch).set_index("label")
    assert table.loc["bias", "dla"] == pytest.approx(0.0, abs=1e-12)
    assert lens_start(model, batch) == pytest.approx(table.loc[["embed", "pos_embed", "final ln bias + unembed bias"], "dla"].sum(), abs=1e-8)
    for layer in range(model.cfg.n_layers):
        heads = table[(table.kind == "head") & (table.layer == layer)]["dla"].sum()
        assert steps[f"attn {layer}"] == pytest.approx(heads, abs=1e-8)
        assert steps[f"mlp {layer}"] == pytest.approx(table.loc[f"{layer}_mlp_out", "dla"], abs=1e-8)


def lens_start(model, batch) -> float:
    return logit_lens(model, batch)["logit_diff"].iloc[0]


def test_table_and_increases(batch):
    model = toy_model("LN", dtype=torch.float32)
    lens = logit_lens(model, batch)
    assert list(lens.columns) == ["label", "x", "sublayer", "layer", "logit_diff", "std"]
    assert lens["label"].tolist()[:3] == ["embed", "attn 0", "mlp 0"]
    assert lens["x"].tolist() == [-0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
    increases = layer_increases(lens)
    assert increases.index.tolist() == [0, 1, 2]
    total = lens["logit_diff"].iloc[-1] - lens["logit_diff"].iloc[0]
    assert increases.sum() == pytest.approx(total, abs=1e-5)


def test_bad_input(batch):
    model = toy_model("LN", dtype=torch.float32)
    with pytest.raises(ValueError, match="'frozen' or 'recomputed'"):
        accumulated_logit_diff(model, batch, LogitLensConfig(ln="classic"))
    ragged = make_batch(gpt2_tokenizer(), protocol_prompts())
    ragged.positions["END"] = ragged.positions["END"] - 1
    with pytest.raises(ValueError, match="not all the last position"):
        logit_lens(model, ragged)


def test_agrees_with_transformer_lens_helpers_on_twin(twin_model, batch):
    """On the TinyStories-8M random-init twin (loaded with transformer_lens's default processing):
    recomputed mode = accumulated_resid(apply_ln=True) @ W_U + b_U, and frozen mode =
    ActivationCache.logit_attrs of the accumulated residuals (no unembedding bias), within 1e-4."""
    model = twin_model("tiny-stories-8M")
    with torch.no_grad():
        _, cache = model.run_with_cache(batch.tokens)
    rows = torch.arange(len(batch))
    resid = cache.accumulated_resid(incl_mid=True, apply_ln=True, pos_slice=-1)
    logits = resid @ model.W_U + model.b_U
    helper_recomputed = logits[:, rows, batch.io_token] - logits[:, rows, batch.s_token]
    ours = accumulated_logit_diff(model, batch, LogitLensConfig(ln="recomputed"))
    torch.testing.assert_close(ours, helper_recomputed, atol=1e-4, rtol=0)

    raw = cache.accumulated_resid(incl_mid=True, pos_slice=-1)
    helper_frozen = cache.logit_attrs(raw, tokens=batch.io_token, incorrect_tokens=batch.s_token, pos_slice=-1)
    ours = accumulated_logit_diff(model, batch, LogitLensConfig(ln="frozen", include_bias=False))
    torch.testing.assert_close(ours, helper_frozen, atol=1e-4, rtol=0)
