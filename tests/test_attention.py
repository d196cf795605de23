"""mechinterp/attention.py: attention between named positions on hand-set patterns (per-prompt
positions honoured), agreement with the raw cache, sub-batches and errors."""

from __future__ import annotations

import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from fixtures.tokenizer import gpt2_tokenizer
from mechinterp.attention import attention_between, attention_from, attention_patterns, sub_batch
from mechinterp.ioi import make_batch, protocol_prompts


@pytest.fixture(scope="module")
def model():
    cfg = HookedTransformerConfig(n_layers=3, d_model=16, n_heads=4, d_head=4, d_mlp=32, n_ctx=64, d_vocab=50257,
                                  act_fn="gelu", normalization_type="LN", seed=0)
    return HookedTransformer(cfg)


@pytest.fixture(scope="module")
def batch():
    return make_batch(gpt2_tokenizer(), protocol_prompts())


def test_hand_set_head_attends_end_to_io(model, batch):
    """Head 1.2 puts 0.7 from END on IO and 0.3 on S2, per prompt; IO's position differs between the
    two name orders, so a fixed position would not find it."""
    assert len(set(batch.pos("IO").tolist())) == 2

    def plant(pattern, hook):
        out = pattern.clone()
        rows = torch.arange(pattern.shape[0])
        end, io, s2 = batch.pos("END"), batch.pos("IO"), batch.pos("S2")
        out[rows, 2, end] = 0.0
        out[rows, 2, end, io] = 0.7
        out[rows, 2, end, s2] = 0.3
        return out

    model.add_hook("blocks.1.attn.hook_pattern", plant)
    try:
        end_io = attention_between(model, batch, "END", "IO")
        end_s2 = attention_between(model, batch, "END", "S2")
        end_s1 = attention_between(model, batch, "END", "S1")
        single = attention_from(model, batch, "END", ("IO", "S1", "S2"), (1, 2))
    finally:
        model.reset_hooks()
    assert end_io.shape == (3, 4) and end_io.dtype == torch.float64
    assert end_io[1, 2].item() == pytest.approx(0.7) and end_s2[1, 2].item() == pytest.approx(0.3)
    assert end_s1[1, 2].item() == pytest.approx(0.0, abs=1e-12)
    assert single == pytest.approx({"IO": 0.7, "S1": 0.0, "S2": 0.3})


def test_matches_cache(model, batch):
    with torch.no_grad():
        _, cache = model.run_with_cache(batch.tokens)
    rows = torch.arange(len(batch))
    expected = torch.stack([cache["pattern", layer][rows, :, batch.pos("verb"), batch.pos("S2")].double().mean(0) for layer in range(3)])
    torch.testing.assert_close(attention_between(model, batch, "verb", "S2"), expected, atol=1e-7, rtol=0)
    patterns = attention_patterns(model, batch, [(2, 1), (0, 3)])
    assert patterns.shape == (2, len(batch), batch.tokens.shape[1], batch.tokens.shape[1])
    torch.testing.assert_close(patterns[0], cache["pattern", 2][:, 1])
    torch.testing.assert_close(patterns[1], cache["pattern", 0][:, 3])


def test_sub_batch(batch):
    s1_before_and = batch.pos("S1") < batch.pos("and")
    part = sub_batch(batch, s1_before_and)
    assert len(part) == int(s1_before_and.sum()) == 4
    assert (part.pos("S1") < part.pos("and")).all()
    assert [p.text for p in part.prompts] == [p.text for p, keep in zip(batch.prompts, s1_before_and) if keep]
    with pytest.raises(ValueError, match="selects no prompts"):
        sub_batch(batch, torch.zeros(len(batch), dtype=torch.bool))
    with pytest.raises(ValueError, match="bool mask"):
        sub_batch(batch, torch.ones(3, dtype=torch.bool))


def test_errors(model, batch):
    with pytest.raises(ValueError, match="causal"):
        attention_between(model, batch, "S1", "END")
    with pytest.raises(KeyError, match="unknown position"):
        attention_between(model, batch, "END", "XYZ")
    with pytest.raises(ValueError, match="out of range"):
        attention_patterns(model, batch, [(5, 0)])
    with pytest.raises(ValueError, match="out of range"):
        attention_patterns(model, batch, [(0, 9)])
