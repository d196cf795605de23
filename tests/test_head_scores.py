"""mechinterp/head_scores.py: exact scores on hand-set attention patterns, agreement with an
independent diagonal-based reference, the random-token protocol, and clear errors."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformer_lens import HookedTransformer, HookedTransformerConfig

from mechinterp.head_scores import (
    HeadScoreConfig,
    head_scores,
    induction_scores,
    repeated_random_tokens,
)
from mechinterp.heads import top_heads

BOS = 99


def small_model(normalization_type="LN", n_layers=2, n_heads=4, seed=0) -> HookedTransformer:
    cfg = HookedTransformerConfig(n_layers=n_layers, d_model=32, n_heads=n_heads, d_head=8, d_mlp=64, n_ctx=128,
                                  d_vocab=100, act_fn="gelu", normalization_type=normalization_type, seed=seed)
    return HookedTransformer(cfg)


def one_hot_pattern(size: int, offset: int) -> torch.Tensor:
    """[size, size] pattern: query i on key i - offset where that is a real token (>= 1), else on BOS."""
    pattern = torch.zeros(size, size)
    for i in range(size):
        pattern[i, i - offset if i - offset >= 1 else 0] = 1.0
    return pattern


def test_hand_set_heads_score_one_and_others_zero():
    """Layer 1's heads are overwritten with a previous-token (offset 1), duplicate-token (offset n) and
    induction (offset n-1) pattern and a BOS sink; each scores 1 on its own score and 0 elsewhere."""
    n = 12
    model = small_model()
    offsets = {0: 1, 1: n, 2: n - 1}

    def plant(pattern, hook):
        out = pattern.clone()
        size = pattern.shape[-1]
        for head, offset in offsets.items():
            out[:, head] = one_hot_pattern(size, offset)
        out[:, 3] = one_hot_pattern(size, size)  # everything on BOS
        return out

    model.add_hook("blocks.1.attn.hook_pattern", plant)
    try:
        scores = head_scores(model, HeadScoreConfig(n_sequences=6, seq_len=n, bos_token_id=BOS, batch_size=4))
    finally:
        model.reset_hooks()
    expected = {"previous_token": 0, "duplicate_token": 1, "induction": 2}
    for name, head in expected.items():
        row = scores[name][1]
        assert row[head].item() == pytest.approx(1.0, abs=1e-12), name
        others = [h for h in range(4) if h != head]
        assert row[others].abs().max().item() == pytest.approx(0.0, abs=1e-12), name


def reference_scores(model: HookedTransformer, tokens: torch.Tensor, n: int) -> dict[str, torch.Tensor]:
    """Independent reference: read the relevant diagonal of every head's pattern, one sequence at a
    time (BOS at 0, copies at 1..n and n+1..2n)."""
    totals = {k: torch.zeros(model.cfg.n_layers, model.cfg.n_heads, dtype=torch.float64) for k in ("previous_token", "duplicate_token", "induction")}
    for seq in tokens:
        _, cache = model.run_with_cache(seq[None])
        for layer in range(model.cfg.n_layers):
            p = cache["pattern", layer][0].double()  # [head, q, k]
            prev = torch.stack([p[:, i, i - 1] for i in range(2, n + 1)], -1).mean(-1)
            dup = torch.stack([p[:, i, i - n] for i in range(n + 1, 2 * n + 1)], -1).mean(-1)
            ind = torch.stack([p[:, i, i - n + 1] for i in range(n + 1, 2 * n + 1)], -1).mean(-1)
            totals["previous_token"][layer] += prev
            totals["duplicate_token"][layer] += dup
            totals["induction"][layer] += ind
    return {k: v / len(tokens) for k, v in totals.items()}


@pytest.mark.parametrize("normalization_type", ["LN", None])
def test_agrees_with_diagonal_reference(normalization_type):
    model = small_model(normalization_type)
    config = HeadScoreConfig(n_sequences=5, seq_len=10, bos_token_id=BOS, batch_size=2, seed=3)
    scores = head_scores(model, config)
    reference = reference_scores(model, repeated_random_tokens(model, config), config.seq_len)
    for name in scores:
        torch.testing.assert_close(scores[name], reference[name], atol=1e-6, rtol=0)


def test_random_tokens_protocol():
    model = small_model()
    config = HeadScoreConfig(n_sequences=50, seq_len=30, bos_token_id=BOS, seed=1)
    tokens = repeated_random_tokens(model, config)
    assert tokens.shape == (50, 61)
    assert (tokens[:, 0] == BOS).all()
    assert torch.equal(tokens[:, 1:31], tokens[:, 31:])
    assert not (tokens[:, 1:] == BOS).any(), "BOS must not be drawn as a random token"
    assert all(len(set(row.tolist())) == 30 for row in tokens[:, 1:31]), "no repeats inside one copy"
    # Uniform over the 99 usable ids: 1500 draws hit most of them, none far too often.
    counts = torch.bincount(tokens[:, 1:31].flatten(), minlength=100)
    assert (counts[:99] > 0).sum() >= 95 and counts.max() < 40
    assert torch.equal(tokens, repeated_random_tokens(model, config)), "same seed, same tokens"
    assert not torch.equal(tokens, repeated_random_tokens(model, HeadScoreConfig(n_sequences=50, seq_len=30, bos_token_id=BOS, seed=2)))


def test_vocabulary_option_draws_only_those_tokens():
    model = small_model()
    vocabulary = tuple(range(10, 40)) + (BOS,)  # BOS listed too: still never drawn
    config = HeadScoreConfig(n_sequences=20, seq_len=12, bos_token_id=BOS, seed=3, vocabulary=vocabulary)
    drawn = set(repeated_random_tokens(model, config)[:, 1:].flatten().tolist())
    assert drawn <= set(range(10, 40)) and len(drawn) > 20
    with pytest.raises(ValueError, match="outside the model's vocabulary"):
        repeated_random_tokens(model, HeadScoreConfig(bos_token_id=BOS, vocabulary=(5, 100)))
    with pytest.raises(ValueError, match="smaller than seq_len"):
        repeated_random_tokens(model, HeadScoreConfig(seq_len=12, bos_token_id=BOS, vocabulary=tuple(range(11))))


def test_without_bos():
    model = small_model()
    config = HeadScoreConfig(n_sequences=3, seq_len=8, prepend_bos=False)
    tokens = repeated_random_tokens(model, config)
    assert tokens.shape == (3, 16) and torch.equal(tokens[:, :8], tokens[:, 8:])
    scores = head_scores(model, config)
    assert all(s.shape == (2, 4) for s in scores.values())


@settings(max_examples=6, deadline=None)
@given(n_layers=st.integers(1, 3), n_heads=st.integers(1, 4), seq_len=st.integers(2, 12), seed=st.integers(0, 2**16),
       norm=st.sampled_from(["LN", "LNPre", None]))
def test_scores_are_fractions(n_layers, n_heads, seq_len, seed, norm):
    model = small_model(norm, n_layers=n_layers, n_heads=n_heads, seed=seed)
    scores = head_scores(model, HeadScoreConfig(n_sequences=3, seq_len=seq_len, bos_token_id=BOS, seed=seed))
    for values in scores.values():
        assert values.shape == (n_layers, n_heads)
        assert values.min() >= 0 and values.max() <= 1 + 1e-9
    # Duplicate and induction targets are different keys of the same rows: together at most 1.
    assert (scores["duplicate_token"] + scores["induction"]).max() <= 1 + 1e-9


def test_named_variant_and_top_heads():
    model = small_model()
    model.tokenizer = None
    with pytest.raises(ValueError, match="bos_token_id"):
        induction_scores(model, n_sequences=2, seq_len=5)
    scores = torch.tensor([[0.1, 0.9], [0.5, 0.2]])
    assert top_heads(scores, 2) == [("H0.1", pytest.approx(0.9)), ("H1.0", pytest.approx(0.5))]


@pytest.mark.parametrize("kwargs, message", [
    ({"seq_len": 100}, "n_ctx"),
    ({"seq_len": 1}, "seq_len >= 2"),
    ({"n_sequences": 0}, "n_sequences"),
])
def test_bad_config_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        head_scores(small_model(), HeadScoreConfig(bos_token_id=BOS, **kwargs))
