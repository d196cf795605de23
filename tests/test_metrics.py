"""mechinterp/metrics.py: logit difference and P(IO), by hand and as properties; and the E2 claim's
measure_logit_diff on a fake model whose answer is known in closed form."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from claims.thesis.e2_logit_diff import measure_logit_diff
from fixtures.tokenizer import gpt2_tokenizer
from mechinterp.ioi import IOIBatch, protocol_prompts, single_token_id
from mechinterp.metrics import end_logits, logit_diff, p_io


def toy_batch(io: list[int], s: list[int], end: list[int], seq: int) -> IOIBatch:
    """A batch carrying only what the metrics read: answer ids and END positions."""
    n = len(io)
    return IOIBatch([], torch.zeros(n, seq, dtype=torch.long), torch.tensor(io), torch.tensor(s), {"END": torch.tensor(end)})


def test_logit_diff_by_hand():
    logits = torch.zeros(2, 3, 5, dtype=torch.float64)
    logits[0, 2, 1], logits[0, 2, 4] = 7.0, 2.0  # prompt 0: END 2, IO 1, S 4 -> 5
    logits[1, 1, 3], logits[1, 1, 0] = -1.0, 0.5  # prompt 1: END 1, IO 3, S 0 -> -1.5
    logits[1, 2, 3] = 100.0  # not END for prompt 1: must be ignored
    batch = toy_batch(io=[1, 3], s=[4, 0], end=[2, 1], seq=3)
    assert logit_diff(logits, batch, per_prompt=True).tolist() == [5.0, -1.5]
    assert logit_diff(logits, batch).item() == 1.75
    assert torch.equal(logit_diff(end_logits(logits, batch), batch, per_prompt=True), torch.tensor([5.0, -1.5], dtype=torch.float64))


def test_p_io_by_hand():
    logits = torch.tensor([[[0.0, math.log(3.0)]]])  # softmax -> [1/4, 3/4]
    batch = toy_batch(io=[1], s=[0], end=[0], seq=1)
    assert p_io(logits, batch).item() == pytest.approx(0.75, abs=1e-7)


@st.composite
def logits_and_batch(draw, low=-1e3, high=1e3):
    n, seq, vocab = draw(st.integers(1, 4)), draw(st.integers(1, 5)), draw(st.integers(2, 12))
    logits = draw(arrays(np.float64, (n, seq, vocab), elements=st.floats(low, high)))
    io = [draw(st.integers(0, vocab - 1)) for _ in range(n)]
    s = [draw(st.sampled_from([t for t in range(vocab) if t != i])) for i in io]
    end = [draw(st.integers(0, seq - 1)) for _ in range(n)]
    return torch.from_numpy(logits), toy_batch(io, s, end, seq)


@settings(max_examples=200, deadline=None)
@given(logits_and_batch())
def test_swapping_io_and_s_negates_the_logit_diff(case):
    logits, batch = case
    swapped = IOIBatch([], batch.tokens, batch.s_token, batch.io_token, batch.positions)
    assert torch.equal(logit_diff(logits, swapped, per_prompt=True), -logit_diff(logits, batch, per_prompt=True))


@settings(max_examples=200, deadline=None)
@given(logits_and_batch(), st.floats(-1e3, 1e3))
def test_adding_a_constant_to_all_logits_leaves_the_logit_diff_unchanged(case, constant):
    logits, batch = case
    # float64, |logits| and |constant| <= 1e3: rounding error is below 1e-9
    assert torch.allclose(logit_diff(logits + constant, batch, per_prompt=True), logit_diff(logits, batch, per_prompt=True), rtol=0, atol=1e-9)


@settings(max_examples=200, deadline=None)
@given(logits_and_batch(low=-1e4, high=1e4))
def test_p_io_is_a_probability(case):
    logits, batch = case
    p = p_io(logits, batch, per_prompt=True)
    assert ((p >= 0) & (p <= 1)).all()
    assert 0 <= p_io(logits, batch).item() <= 1


class PositionScaledModel(torch.nn.Module):
    """Logits = (position + 1) * w[vocab] for a fixed random w: the logit diff at END (position 14
    with BOS) is 15 * (w[IO] - w[S]), so reading any other position gives a different answer."""

    def __init__(self, vocab: int = 50257):
        super().__init__()
        self.w = torch.randn(vocab, generator=torch.Generator().manual_seed(0))
        self.cfg = SimpleNamespace(device="cpu")
        self.tokenizer = gpt2_tokenizer()

    def forward(self, tokens):
        scale = torch.arange(1, tokens.shape[1] + 1, dtype=torch.float32)
        return scale[None, :, None] * self.w[None, None, :].expand(tokens.shape[0], -1, -1)


def test_measure_logit_diff_matches_closed_form():
    model, tok = PositionScaledModel(), gpt2_tokenizer()
    expected = [15 * (model.w[single_token_id(tok, p.io)] - model.w[single_token_id(tok, p.s)]).item() for p in protocol_prompts()]
    measured = measure_logit_diff(model)
    assert list(measured.details["per_prompt"].values()) == pytest.approx(expected, rel=1e-5)
    assert measured.values["logit_diff"] == pytest.approx(sum(expected) / 8, rel=1e-5)
    assert measured.figure is not None
