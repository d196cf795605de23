"""Threshold rows: their rules, which models they apply to, and the thesis table's own consistency."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from claims.thesis.thresholds import THRESHOLDS
from claims.thresholds import Threshold, lookup_all

ROOT = Path(__file__).resolve().parents[1]


# --- threshold rows ---


def row(op, threshold, tolerance=None, model="tiny-stories-8M"):
    return Threshold("X.claim", model, "q", 1.0, op, threshold, tolerance, "because")


@pytest.mark.parametrize(
    "op, threshold, tolerance, value, passes",
    [
        (">=", 1.0, None, 1.0, True), (">=", 1.0, None, 0.999, False),
        (">", 1.0, None, 1.0, False), (">", 1.0, None, 1.001, True),
        ("<=", 1.0, None, 1.0, True), ("<=", 1.0, None, 1.001, False),
        ("<", 1.0, None, 1.0, False), ("<", 1.0, None, 0.999, True),
        ("within", 9.4, 0.15, 9.25, True), ("within", 9.4, 0.15, 9.55, True),
        ("within", 9.4, 0.15, 9.2, False), ("within", 9.4, 0.15, 9.6, False),
        ("within", 9.4, 0.15, math.nan, False), (">", 0.0, None, math.nan, False), ("<", 0.0, None, math.nan, False),
    ],
)
def test_threshold_passes(op, threshold, tolerance, value, passes):
    assert row(op, threshold, tolerance).passes(value) is passes


def test_threshold_describe():
    assert row("within", 9.4, 0.15).describe() == "q within 9.4 ± 0.15"
    assert row(">", 3.6).describe() == "q > 3.6"


def test_bad_threshold_rows_are_rejected():
    with pytest.raises(ValueError, match="op '=>' is not one of"):
        row("=>", 1.0)
    with pytest.raises(ValueError, match="'within' needs a tolerance >= 0"):
        row("within", 1.0)
    with pytest.raises(ValueError, match="needs a 'why'"):
        Threshold("X.claim", "gpt2-small", "q", None, ">", 0.0, None, "  ")


def test_family_rows_apply_to_the_whole_tinystories_family_only():
    family = row(">", 0.0, model="tiny-stories-*")
    assert family.family_wide and not row(">", 0.0).family_wide
    assert all(family.applies_to(m) for m in ("tiny-stories-1M", "tiny-stories-3M", "tiny-stories-8M", "tiny-stories-28M", "tiny-stories-33M"))
    assert not family.applies_to("gpt2-small")
    assert row(">", 0.0).applies_to("tiny-stories-8M") and not row(">", 0.0).applies_to("tiny-stories-28M")


def test_planted_specs_use_their_real_counterparts_rows():
    assert lookup_all("E2.logit-diff", "planted:tinystories-8m") == lookup_all("E2.logit-diff", "tiny-stories-8M") != []
    assert lookup_all("E2.logit-diff", "planted:gpt2-small/no-s-inhibition") == lookup_all("E2.logit-diff", "gpt2-small") != []
    assert lookup_all("E2.logit-diff", "tiny-stories-1M") == []


def test_every_row_states_its_reason_and_a_known_claim_id():
    for r in THRESHOLDS:
        assert r.claim.split(".")[0] in ("E0", "E1", "E2", "E3"), r  # E0: the TinyStories family (thesis s3.2)
        assert len(r.why) > 30, f"{r.claim}/{r.quantity} on {r.model}: 'why' must state thesis value, tolerance and reason"


def test_logit_diff_rows_separate_the_two_models():
    # Each model's thesis value (and GPT-2 small's public 3.55) passes its own rows and fails the other's:
    # the claim can fail, and a model with the other model's behaviour would fail it.
    def all_pass(spec, value):
        return all(r.passes(value) for r in lookup_all("E2.logit-diff", spec))

    assert all_pass("tiny-stories-8M", 9.4) and all_pass("gpt2-small", 3.6) and all_pass("gpt2-small", 3.55)
    assert not all_pass("tiny-stories-8M", 3.6) and not all_pass("gpt2-small", 9.4)
    assert not all_pass("tiny-stories-8M", 9.0) and not all_pass("gpt2-small", 4.0)
