"""Ground truth for experiment 1 and the observational half of experiment 2 (and E2.logit-diff's
claim pairs), on the planted twins.

1. The analyses find the heads that were planted (fixtures.planted, `model.planted.head_roles`):
   head scores, DLA and attention on planted:tinystories-8m and planted:gpt2-small.
2. Claim pairs: every E1 / E2-observational claim passes on its twin, and each of its threshold rows
   fails on the mutants tests/claim_pairs.py ROW_BREAKERS names for it (a row naming none is a
   collection error).
3. Calibration: the off-calibration twin keeps every qualitative finding and fails only numeric rows.

Each planted model is built once per module; mutants are built one at a time and dropped.
"""

from __future__ import annotations

import functools

import pytest
import torch

import claims.thesis.e1_head_scores as e1
from claims.framework import measure_claim
from claims.thresholds import lookup_all
from claim_pairs import row_breaker_params, row_key
from fixtures import planted
from fixtures.tokenizer import gpt2_tokenizer
from mechinterp.attention import attention_between
from mechinterp.dla import head_dla
from mechinterp.ioi import make_batch, protocol_prompts

# The claims this file checks (declared in claims/thesis/, measured through the registry).
MEASURED_CLAIMS = (
    "E1.prev-weaker",
    "E1.no-induction",
    "E1.dup-weak",
    "E2.logit-diff",
    "E2.lens-monotone",
    "E2.lens-jump",
    "E2.dla-single",
    "E2.no-neg-mover",
    "E2.h77-name-mover",
    "E2.h57-s-inhibition",
    "E2.h611-secondary",
)
TWINS = ("tinystories-8m", "gpt2-small")


@functools.lru_cache(maxsize=None)
def twin(name: str):
    return planted.build(name)


def heads_with_role(model, role: str) -> set[tuple[int, int]]:
    return {head for head, r in model.planted.head_roles.items() if r == role}


def top_k(values: torch.Tensor, k: int, largest: bool = True) -> set[tuple[int, int]]:
    flat = values.flatten().topk(k, largest=largest).indices.tolist()
    return {(i // values.shape[1], i % values.shape[1]) for i in flat}


# --- 1. the analyses find what was planted ---------------------------------------------------------


def test_tinystories_twin_head_scores():
    model = twin("tinystories-8m")
    scores = e1.protocol_head_scores(model)
    assert heads_with_role(model, "duplicate-token") == {(4, 0)}
    assert top_k(scores["duplicate_token"], 1) == {(4, 0)}
    assert scores["induction"].max() < e1.INDUCTION_HEAD_MIN_SCORE
    assert top_k(scores["previous_token"], 2) == heads_with_role(model, "previous-token")


def test_gpt2_twin_head_scores():
    model = twin("gpt2-small")
    scores = e1.protocol_head_scores(model)
    assert top_k(scores["induction"], 2) == heads_with_role(model, "induction") == {(5, 5), (6, 9)}
    assert top_k(scores["previous_token"], 2) == heads_with_role(model, "previous-token") == {(2, 2), (4, 11)}
    assert top_k(scores["previous_token"], 1) == {(4, 11)}
    assert top_k(scores["duplicate_token"], 2) == heads_with_role(model, "duplicate-token") == {(3, 0), (0, 5)}


def protocol_batch():
    return make_batch(gpt2_tokenizer(), protocol_prompts())


def test_tinystories_twin_dla_and_attention():
    model = twin("tinystories-8m")
    batch = protocol_batch()
    dla = head_dla(model, batch)
    assert top_k(dla, 1) == heads_with_role(model, "name-mover") == {(7, 7)}
    end_io = attention_between(model, batch, "END", "IO")
    assert top_k(end_io, 1) == {(7, 7)}
    end_s2 = attention_between(model, batch, "END", "S2")
    assert top_k(end_s2, 1) == heads_with_role(model, "s-inhibition") == {(5, 7)}


def test_gpt2_twin_dla():
    model = twin("gpt2-small")
    dla = head_dla(model, protocol_batch())
    assert top_k(dla, 2, largest=False) == heads_with_role(model, "negative-name-mover") == {(10, 7), (11, 10)}
    assert (dla[10, 7] < 0) and (dla[11, 10] < 0)
    assert top_k(dla, 3) == heads_with_role(model, "name-mover") == {(9, 9), (9, 6), (10, 0)}


def test_induction_on_the_tinystories_vocabulary_is_shown_beside_the_claim():
    """For information (no row): E1.no-induction also reports the top induction score on TinyStories's
    tokens (offline: the synthetic corpus's); the twins' heads read every token alike, so it agrees."""
    for name, has_induction in (("tinystories-8m", False), ("gpt2-small", True)):
        measured = e1.measure_no_induction(twin(name))
        assert (measured.values["max_induction_score_tinystories_vocab"] >= e1.INDUCTION_HEAD_MIN_SCORE) == has_induction
        assert "synthetic stories" in measured.details["tinystories_vocabulary"]["source"]
    assert not any(row.quantity == "max_induction_score_tinystories_vocab" for row in lookup_all("E1.no-induction", "gpt2-small"))


# --- 2. claims pass on the twin, fail on the mutant lacking the finding ----------------------------


def failing_rows(claim: str, spec: str, model) -> dict:
    """row key -> why it fails, for every threshold row of `claim` on `spec` that `model` fails."""
    rows = lookup_all(claim, spec)
    assert rows, f"no threshold row for {claim} on {spec}"
    values = measure_claim(claim, model, spec).values
    return {row_key(r): f"{r.quantity}={values.get(r.quantity)} vs '{r.describe()}'" for r in rows
            if r.quantity not in values or not r.passes(values[r.quantity])}


def twin_cases():
    return [(claim, name) for claim in MEASURED_CLAIMS for name in TWINS if lookup_all(claim, f"planted:{name}")]


@pytest.mark.parametrize("claim, name", twin_cases())
def test_claim_passes_on_twin(claim, name):
    assert failing_rows(claim, f"planted:{name}", twin(name)) == {}


@pytest.mark.parametrize("claim, mutant, rows", row_breaker_params(MEASURED_CLAIMS))
def test_rows_fail_on_mutant(claim, mutant, rows):
    """Every row ROW_BREAKERS lists for the mutant fails on it (the twin passes them all, above)."""
    description, _ = planted.MUTANTS[mutant]
    failures = failing_rows(claim, f"planted:{mutant}", planted.build(mutant))
    still_passing = [row for row in rows if row not in failures]
    assert not still_passing, f"on mutant {mutant} ({description}) these rows still pass: {still_passing}"


@pytest.mark.parametrize("edit, message", [
    (lambda table: table.pop(("E1.dup-weak", "tiny-stories-8M", "H4.0_dup_margin_over_next_head", ">")), "names no model it fails on"),
    (lambda table: table.update({("E1.dup-weak", "tiny-stories-8M", "no_such_quantity", ">"): ("tinystories-8m/strong-duplicate",)}),
     "matches no threshold row"),
    (lambda table: table.update({("E1.dup-weak", "tiny-stories-8M", "H4.0_dup_score", "<"): ("tinystories-8m/no-such",)}),
     "not a planted twin or mutant"),
    (lambda table: table.update({("E1.dup-weak", "tiny-stories-8M", "H4.0_dup_score", "<"): ("tinystories-8m/induction-head",)}),
     "does not list E1.dup-weak"),
])
def test_row_breakers_table_is_checked(monkeypatch, edit, message):
    """A row without a breaker (or a stale or unknown entry) stops collection of every pair file."""
    import claim_pairs

    table = dict(claim_pairs.ROW_BREAKERS)
    edit(table)
    monkeypatch.setattr(claim_pairs, "ROW_BREAKERS", table)
    with pytest.raises(ValueError, match=message):
        claim_pairs.check_row_breakers()


# --- 3. calibration ------------------------------------------------------------------------------


def test_off_calibration_twin_fails_only_the_numeric_rows():
    """The TS twin built to a logit difference of 6 (not 9.4) and ~0.6 END->IO attention (not ~0.77):
    every qualitative row (no induction, single name mover, S-inhibition, handover, EAP edges, ...) still
    passes; only the 9.4 band fails (0.6 is inside H7.7's 0.7 - 0.2 row)."""
    name = "tinystories-8m/off-calibration"
    model = planted.build(name)
    measures = (*MEASURED_CLAIMS, "E2.resid-patch-s2", "E2.head-patch", "E2.eap-edges")
    values = {claim: measure_claim(claim, model, f"planted:{name}").values for claim in measures}
    assert values["E2.logit-diff"]["logit_diff"] == pytest.approx(6.0, abs=0.15)
    assert values["E2.h77-name-mover"]["H7.7_END_to_IO"] == pytest.approx(0.6, abs=0.02)
    failing = {row_key(r) for claim in measures for r in lookup_all(claim, "planted:tinystories-8m")
               if not r.passes(values[claim].get(r.quantity, float("nan")))}
    assert failing == {("E2.logit-diff", "tiny-stories-8M", "logit_diff", "within")}
    assert model.planted.calibrated == twin("tinystories-8m").planted.calibrated


def test_calibrated_rows_are_marked_and_tagged():
    from claims.framework import Measured, SubjectRows, evaluate
    from mechinterp.report import ClaimResult, RunInfo, render_html

    model = twin("tinystories-8m")
    rows = SubjectRows(lookup_all("E2.logit-diff", "planted:tinystories-8m"), model.planted.calibrated)
    results = evaluate(Measured({"logit_diff": 9.36}), rows)
    assert [q.calibrated for q in results] == [True, True]  # the 9.4 band and the ordering: both read 9.4
    assert not any(q.calibrated for q in evaluate(Measured({"logit_diff": 9.36}), list(rows)))  # a real model
    result = ClaimResult("E2.logit-diff", "planted:tinystories-8m", "tiny-stories-8M", True, "passed", quantities=results)
    page = render_html(RunInfo("2025-01-01 00:00:00 UTC", "2025-01-01 00:01:00 UTC", [result.spec]), [result])
    assert page.count(">calibrated by construction<") == 2
