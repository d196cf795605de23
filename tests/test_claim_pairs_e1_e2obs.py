"""Ground truth for experiment 1 and the observational half of experiment 2 (and E2.logit-diff's
claim pairs), on the planted twins.

1. The analyses find the heads that were planted (fixtures.planted, `model.planted.head_roles`):
   head scores, DLA and attention on planted:tinystories-8m and planted:gpt2-small.
2. Claim pairs: every E1 / E2-observational claim passes on its twin, and fails on each mutant that
   fixtures.planted.MUTANTS lists as breaking it (the mutant lacks the finding). A claim no mutant
   breaks is reported as skipped, naming what is missing.

Each planted model is built once per module; mutants are built one at a time and dropped.
"""

from __future__ import annotations

import functools

import pytest
import torch

import claims.test_e1_head_scores as e1
import claims.test_e2_attention as attention_claims
import claims.test_e2_dla as dla_claims
import claims.test_e2_logit_diff as logit_diff_claims
import claims.test_e2_logit_lens as lens_claims
from claims.thresholds import lookup_all
from claim_pairs import mutant_params
from fixtures import planted
from fixtures.tokenizer import gpt2_tokenizer
from mechinterp.attention import attention_between
from mechinterp.dla import head_dla
from mechinterp.ioi import make_batch, protocol_prompts

MEASURES = {
    "E1.prev-weaker": e1.measure_prev_weaker,
    "E1.no-induction": e1.measure_no_induction,
    "E1.dup-weak": e1.measure_dup_weak,
    "E2.logit-diff": logit_diff_claims.measure_logit_diff,
    "E2.lens-monotone": lens_claims.measure_lens_monotone,
    "E2.lens-jump": lens_claims.measure_lens_jump,
    "E2.dla-single": dla_claims.measure_dla_single,
    "E2.no-neg-mover": dla_claims.measure_no_neg_mover,
    "E2.h77-name-mover": attention_claims.measure_h77_name_mover,
    "E2.h57-s-inhibition": attention_claims.measure_h57_s_inhibition,
    "E2.h611-secondary": attention_claims.measure_h611_secondary,
}
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


# --- 2. claims pass on the twin, fail on the mutant lacking the finding ----------------------------


def failing_rows(claim: str, spec: str, model) -> list[str]:
    rows = lookup_all(claim, spec)
    assert rows, f"no threshold row for {claim} on {spec}"
    values = MEASURES[claim](model).values
    return [f"{r.quantity}={values.get(r.quantity)} vs '{r.describe()}'" for r in rows
            if r.quantity not in values or not r.passes(values[r.quantity])]


def twin_cases():
    return [(claim, name) for claim in MEASURES for name in TWINS if lookup_all(claim, f"planted:{name}")]


@pytest.mark.parametrize("claim, name", twin_cases())
def test_claim_passes_on_twin(claim, name):
    assert failing_rows(claim, f"planted:{name}", twin(name)) == []


@pytest.mark.parametrize("claim, mutant", mutant_params(MEASURES))
def test_claim_fails_on_mutant(claim, mutant):
    description, _ = planted.MUTANTS[mutant]
    failures = failing_rows(claim, f"planted:{mutant}", planted.build(mutant))
    assert failures, f"{claim} still passes on mutant {mutant} ({description})"
