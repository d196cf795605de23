"""mechinterp.robustness and its pieces: the distribution, length groups, bootstrap, leave-one-template-out,
verdicts; IOIBatch.select/tile, Head, the memo. The planted ground truth is tests/test_claim_pairs_robustness.py."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from claims.thresholds import Threshold
from fixtures.tokenizer import gpt2_tokenizer
from mechinterp import memo
from mechinterp.heads import Head, argmax_head
from mechinterp.ioi import (
    DISTRIBUTION_TEMPLATES,
    batches_by_length,
    distribution_prompts,
    make_batch,
    protocol_prompts,
    single_token_id,
)
from mechinterp.robustness import (
    FAILS,
    PROTOCOL_ONLY,
    ROBUST,
    PerPrompt,
    RobustnessConfig,
    bootstrap_weights,
    claim_verdict,
    evaluate_distribution,
    held_out_weights,
    holds_on_interval,
    row_verdict,
)


@pytest.fixture(scope="module")
def tokenizer():
    return gpt2_tokenizer()


def test_distribution_is_wang_style(tokenizer):
    prompts = distribution_prompts(tokenizer, 256, seed=0)
    assert len(prompts) == 256 and len(DISTRIBUTION_TEMPLATES) >= 10
    assert prompts == distribution_prompts(tokenizer, 256, seed=0)  # seeded
    assert prompts != distribution_prompts(tokenizer, 256, seed=1)
    batch_rows = {p.template for p in prompts}
    assert batch_rows == set(DISTRIBUTION_TEMPLATES)
    for template in DISTRIBUTION_TEMPLATES:  # both orders on every template
        orders = {p.text.index(p.io) < p.text.index(p.s) for p in prompts if p.template == template}
        assert orders == {True, False}
    for p in prompts:
        single_token_id(tokenizer, p.io), single_token_id(tokenizer, p.s)
    places = {w for p in prompts for w in p.text.replace(",", " ").replace(".", " ").split()}
    assert len(places & {"store", "park", "shops", "school", "garden", "beach", "zoo", "kitchen", "house", "office"}) >= 5


def test_length_groups_cover_every_prompt_once(tokenizer):
    prompts = distribution_prompts(tokenizer, 64)
    groups = batches_by_length(tokenizer, prompts)
    rows = torch.cat([g.rows for g in groups]).sort().values
    assert torch.equal(rows, torch.arange(64))
    for g in groups:
        assert len(set(g.batch.pos("S2").tolist())) == 1 and len(set(g.batch.pos("END").tolist())) == 1
        assert [prompts[i] for i in g.rows.tolist()] == g.batch.prompts
    assert len({g.batch.tokens.shape[1] for g in groups}) > 1  # several lengths, so grouping matters


def test_batch_select_and_tile(tokenizer):
    batch = make_batch(tokenizer, protocol_prompts())
    mask = batch.pos("S1") < batch.pos("and")
    part = batch.select(mask)
    assert len(part) == int(mask.sum()) and torch.equal(part.tokens, batch.tokens[mask])
    assert torch.equal(part.pos("IO"), batch.pos("IO")[mask])
    tiled = batch.tile(3)
    assert len(tiled) == 24 and torch.equal(tiled.tokens[8:16], batch.tokens)
    assert torch.equal(tiled.pos("S2")[16:], batch.pos("S2"))
    assert batch.select([1, 0]).prompts == [batch.prompts[1], batch.prompts[0]]
    assert batch.fingerprint() == make_batch(tokenizer, protocol_prompts()).fingerprint()
    assert batch.fingerprint() != part.fingerprint()


@pytest.mark.parametrize("text", ["H7.7", "7.7", "L7H7", (7, 7), Head(7, 7)])
def test_head_spellings(text):
    head = Head.parse(text)
    assert head == (7, 7) and str(head) == "H7.7" and {head: 1}[(7, 7)] == 1


def test_head_parse_rejects_garbage():
    with pytest.raises(ValueError, match="not a head"):
        Head.parse("head seven")
    assert math.isnan(Head(9, 0).of(torch.zeros(8, 16)))
    assert argmax_head(torch.arange(12.0).reshape(3, 4)) == Head(2, 3)


def test_memo_computes_once_and_never_under_hooks():
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    model = HookedTransformer(HookedTransformerConfig(n_layers=1, d_model=8, n_ctx=4, d_head=4, d_vocab=5, act_fn="relu"))
    calls = []
    assert memo.memoized(model, ("k",), lambda: calls.append(1) or 7) == 7
    assert memo.memoized(model, ("k",), lambda: calls.append(1) or 8) == 7 and len(calls) == 1
    with model.hooks(fwd_hooks=[("blocks.0.hook_resid_pre", lambda act, hook: act)]):
        assert memo.memoized(model, ("k",), lambda: 9) == 9  # a hooked model is not the model
    memo.forget(model)
    assert memo.memoized(model, ("k",), lambda: 10) == 10


values_lists = st.lists(st.floats(-100, 100, allow_nan=False), min_size=2, max_size=40)


@settings(max_examples=40, deadline=None)
@given(values_lists, st.integers(0, 10_000))
def test_bootstrap_interval_contains_the_mean(values, seed):
    x = torch.tensor(values, dtype=torch.float64)
    groups = [f"t{i % 3}" for i in range(len(values))]
    if len(set(groups)) < 2:
        return
    cfg = RobustnessConfig(n_bootstrap=400, bootstrap_seed=seed)
    row = evaluate_distribution(PerPrompt({"x": x}, groups), lambda m: {"mean": float(m["x"])}, cfg).table.iloc[0]
    assert row["value"] == pytest.approx(float(x.mean()), abs=1e-9)
    slack = 1e-9 * (1 + float(x.abs().max()))
    assert row["ci_low"] - slack <= row["value"] <= row["ci_high"] + slack
    # leave-one-template-out: each held-out mean lies between the smallest and largest template mean
    template_means = [float(x[[g == t for g in groups]].mean()) for t in sorted(set(groups))]
    assert min(template_means) - slack <= row["loto_min"] <= row["loto_max"] <= max(template_means) + slack


def test_held_out_template_moves_only_without_it():
    x = torch.tensor([0.0, 0.0, 0.0, 0.0, 10.0, 10.0], dtype=torch.float64)
    groups = ["a", "a", "b", "b", "c", "c"]
    names, weights = held_out_weights(groups)
    means = (weights @ x).tolist()
    assert dict(zip(names, means)) == {"a": 5.0, "b": 5.0, "c": 0.0}
    boot = bootstrap_weights(6, 100, seed=0)
    assert torch.allclose(boot.sum(1), torch.ones(100, dtype=torch.float64))


def _row(op, threshold, tolerance=None):
    return Threshold("E2.x", "tiny-stories-8M", "q", None, op, threshold, tolerance, "test row")


@pytest.mark.parametrize("op, threshold, low, high, robust", [
    (">=", 0.5, 0.55, 0.9, True), (">=", 0.5, 0.45, 0.9, False), ("<", 0.1, 0.0, 0.09, True),
    ("<", 0.1, 0.0, 0.11, False), ("within", 9.4, 9.3, 9.5, True), ("within", 9.4, 9.2, 9.5, False),
])
def test_interval_bounds(op, threshold, low, high, robust):
    row = _row(op, threshold, 0.15 if op == "within" else None)
    assert holds_on_interval(row, low, high) is robust


def test_verdicts():
    row = _row(">=", 0.5)
    dist = {"ci_low": 0.6, "ci_high": 0.9, "undefined_share": 0.0}
    assert row_verdict(row, 0.7, dist) == ROBUST
    assert row_verdict(row, 0.7, {**dist, "ci_low": 0.4}) == PROTOCOL_ONLY
    assert row_verdict(row, 0.4, dist) == FAILS  # the protocol decides pass/fail
    assert row_verdict(row, 0.7, {**dist, "undefined_share": 0.5}) == PROTOCOL_ONLY  # undefined on many resamples
    assert claim_verdict([ROBUST, ROBUST]) == ROBUST
    assert claim_verdict([ROBUST, PROTOCOL_ONLY]) == PROTOCOL_ONLY
    assert claim_verdict([PROTOCOL_ONLY, FAILS]) == FAILS


def test_roles_only_where_the_rows_name_the_head():
    import pandas as pd

    from mechinterp.robustness import DistributionResult, verdicts

    table = pd.DataFrame([{"quantity": "H7.7_END_to_IO", "value": 0.8, "ci_low": 0.7, "ci_high": 0.9, "loto_min": 0.7,
                           "loto_max": 0.9, "undefined_share": 0.0}])
    roles = [{"role": "name mover", "claim_head": "H7.7", "distribution_head": "H7.7", "same_head": True}]
    result = DistributionResult(table, roles, 8, 4)
    ts_row = Threshold("E2.x", "tiny-stories-8M", "H7.7_END_to_IO", None, ">=", 0.5, None, "test row")
    gpt2_row = Threshold("E2.x", "gpt2-small", "H9.9_END_to_IO", None, ">=", 0.5, None, "test row")
    assert verdicts([ts_row], {"H7.7_END_to_IO": 0.8}, result, RobustnessConfig())["roles"] == roles
    assert verdicts([gpt2_row], {"H9.9_END_to_IO": 0.8}, result, RobustnessConfig())["roles"] == []
