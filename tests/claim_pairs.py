"""What the claim-pair tests (tests/test_claim_pairs_*.py) share: the (claim, mutant) cases.

A claim pair shows a claim passing on a planted twin and failing on every mutant that
fixtures.planted.MUTANTS lists as lacking its finding. A claim with no such mutant would never be
shown to fail, so it is a collection error here, not a silently missing case. For E0-E2 this holds
row by row: ROW_BREAKERS names, for every threshold row, the planted models it fails on.
"""

from __future__ import annotations

from typing import Iterable

import pytest

from claims.thresholds import THRESHOLDS, Threshold, lookup_all
from fixtures import planted


def mutants_breaking(claim: str) -> list[str]:
    return [name for name, (_, broken) in planted.MUTANTS.items() if claim in broken]


def mutant_params(claims: Iterable[str]) -> list:
    """pytest parameters (claim, mutant), id "<claim>-<mutant>", for every mutant breaking each claim."""
    cases = []
    for claim in claims:
        mutants = mutants_breaking(claim)
        if not mutants:
            raise ValueError(f"fixtures.planted.MUTANTS has no mutant breaking {claim}: add one, so the claim is shown to fail")
        cases += [pytest.param(claim, m, id=f"{claim}-{m}") for m in mutants]
    return cases


# --- row level: every E0 / E1 / E2 threshold row names the models it fails on -------------------

RowKey = tuple[str, str, str, str]  # (claim, model, quantity, op): one threshold row
ROW_LEVEL_CLAIMS = ("E0.", "E1.", "E2.")  # E3's rows are checked claim by claim (tests/test_claim_pairs_e3.py)


def row_key(row: Threshold) -> RowKey:
    return (row.claim, row.model, row.quantity, row.op)


TS, GPT2 = "tinystories-8m", "gpt2-small"
TS8M, GPT2S = "tiny-stories-8M", "gpt2-small"

# Row -> the planted models on which it fails (the test files assert it). A mutant (fixtures.planted.MUTANTS)
# must also list the row's claim in its `breaks`; a planted twin breaks rows whose finding is an absence
# (E0's "1M / 3M do not perform IOI" fail on the TS-8M twin, which performs it).
def ts(*mutants: str) -> tuple[str, ...]:
    return tuple(f"{TS}/{m}" for m in mutants)


def gpt2(*mutants: str) -> tuple[str, ...]:
    return tuple(f"{GPT2}/{m}" for m in mutants)


ROW_BREAKERS: dict[RowKey, tuple[str, ...]] = {
    **{("E0.smallest-ioi", version, quantity, "<="): (TS,) for version in ("tiny-stories-1M", "tiny-stories-3M")
       for quantity in ("logit_diff", "p_io_minus_p_s")},
    ("E0.smallest-ioi", TS8M, "logit_diff", ">="): ts("no-s-inhibition"),  # and the random-init 8M twin
    ("E0.smallest-ioi", TS8M, "p_io_minus_p_s", ">="): ts("no-s-inhibition"),
    # E1
    ("E1.prev-weaker", GPT2S, "H4.11_prev_token_score", ">="): gpt2("weak-previous-token"),
    ("E1.prev-weaker", TS8M, "max_prev_token_score", "<="): ts("strong-previous-token"),
    ("E1.no-induction", TS8M, "max_induction_score", "<"): ts("induction-head"),
    ("E1.no-induction", GPT2S, "n_heads_induction_score_ge_0.4", ">="): gpt2("no-induction"),
    ("E1.dup-weak", TS8M, "H4.0_dup_margin_over_next_head", ">"): ts("duplicate-head-moved"),
    ("E1.dup-weak", TS8M, "H4.0_dup_score", "<"): ts("strong-duplicate"),
    ("E1.dup-weak", GPT2S, "H3.0_dup_score", ">="): gpt2("weak-duplicates"),
    ("E1.dup-weak", GPT2S, "H0.5_dup_score", ">="): gpt2("weak-duplicates"),
    # E2, observational
    ("E2.logit-diff", TS8M, "logit_diff", "within"): ts("weak-name-mover", "negative-name-mover", "no-s-inhibition"),
    ("E2.logit-diff", GPT2S, "logit_diff", "within"): gpt2("no-negative-name-movers", "no-s-inhibition", "tinystories-strength"),
    ("E2.logit-diff", TS8M, "logit_diff", ">"): ts("no-s-inhibition"),
    ("E2.logit-diff", GPT2S, "logit_diff", "<"): gpt2("tinystories-strength"),
    ("E2.lens-monotone", TS8M, "largest_drop_fraction", "<="): ts("negative-name-mover"),
    ("E2.lens-monotone", GPT2S, "largest_drop_fraction", ">="): gpt2("no-negative-name-movers"),
    ("E2.lens-monotone", GPT2S, "largest_drop_layer", "within"): gpt2("early-negative-movers"),
    ("E2.lens-jump", TS8M, "jump_layer", "within"): ts("name-mover-in-layer-6"),
    ("E2.lens-jump", GPT2S, "jump_layer", "within"): gpt2("late-name-movers"),
    # no share of a logit difference that the layers do not add up to (NaN)
    ("E2.lens-jump", TS8M, "jump_share", ">"): ts("no-s-inhibition"),
    ("E2.lens-jump", GPT2S, "jump_share", ">"): gpt2("no-s-inhibition"),
    ("E2.dla-single", TS8M, "H7.7_over_next_head", ">="): ts("split-name-mover", "name-mover-moved", "name-mover-in-layer-6"),
    ("E2.dla-single", GPT2S, "top_over_second_positive_head", "<"): gpt2("one-name-mover"),
    ("E2.dla-single", GPT2S, "top_positive_head_fraction", ">="): gpt2("diffuse-name-movers"),
    ("E2.no-neg-mover", TS8M, "most_negative_head_fraction", ">="): ts("negative-name-mover"),
    ("E2.no-neg-mover", GPT2S, "most_negative_head_fraction", "<="): gpt2("no-negative-name-movers"),
    ("E2.no-neg-mover", GPT2S, "most_negative_head_layer", "within"): gpt2("early-negative-movers"),
    **{("E2.h77-name-mover", TS8M, q, ">="): ts("no-s-inhibition", "name-mover-moved", "name-mover-in-layer-6")
       for q in ("H7.7_END_to_IO", "H7.7_IO_over_S")},
    ("E2.h77-name-mover", GPT2S, "H9.9_END_to_IO", ">="): gpt2("late-name-movers"),
    ("E2.h77-name-mover", GPT2S, "H9.9_IO_over_S", ">="): gpt2("late-name-movers"),
    ("E2.h77-name-mover", GPT2S, "H9.6_END_to_IO", ">="): gpt2("one-name-mover", "late-name-movers"),
    ("E2.h77-name-mover", GPT2S, "H9.6_IO_over_S", ">="): gpt2("one-name-mover", "late-name-movers"),
    **{("E2.h57-s-inhibition", model, f"{head}_{q}", ">="): breaker
       for model, head, breaker in ((TS8M, "H5.7", ts("no-s-inhibition")), (GPT2S, "H8.6", gpt2("no-s-inhibition")))
       for q in ("END_to_S2", "verb_to_S2", "and_to_S1")},
    ("E2.h611-secondary", TS8M, "H6.11_END_to_IO", ">="): ts("no-secondary-name-mover"),
    ("E2.h611-secondary", TS8M, "H6.11_END_to_S", ">="): ts("no-secondary-name-mover", "swapped-name-movers"),
    ("E2.h611-secondary", TS8M, "H6.11_minus_H7.7_patching_effect", "<"): ts("swapped-name-movers"),
    # E2, causal
    ("E2.resid-patch-s2", TS8M, "S2_effect_first_half", ">="): ts("early-s2-circuit"),
    ("E2.resid-patch-s2", TS8M, "END_effect_last_layer", ">="): ts("no-s-inhibition"),
    ("E2.resid-patch-s2", TS8M, "handover_layer", ">="): ts("early-s2-circuit"),
    ("E2.resid-patch-s2", TS8M, "handover_layer", "<="): ts("no-s-inhibition"),
    ("E2.resid-patch-s2", GPT2S, "S2_effect_first_half", ">="): gpt2("early-s-inhibition"),
    ("E2.resid-patch-s2", GPT2S, "END_effect_last_layer", ">="): gpt2("last-layer-circuit"),
    ("E2.resid-patch-s2", GPT2S, "handover_layer", ">="): gpt2("early-s-inhibition"),
    ("E2.resid-patch-s2", GPT2S, "handover_layer", "<="): gpt2("last-layer-circuit"),
    ("E2.head-patch", TS8M, "H7.7_rank", "<="): ts("name-mover-moved"),
    ("E2.head-patch", TS8M, "H5.7_rank", "<="): ts("no-s-inhibition", "spread-circuit"),
    ("E2.head-patch", TS8M, "H5.7_over_H7.7_abs_dla", "<="): ts("name-mover-moved"),
    ("E2.head-patch", TS8M, "top2_share_of_abs_effect", ">="): ts("spread-circuit"),
    ("E2.head-patch", GPT2S, "top2_share_of_abs_effect", "<"): gpt2("one-name-mover"),
    ("E2.eap-edges", TS8M, "in_rank_H7.7.q<-H5.7", "<="): ts("no-s-inhibition", "name-mover-moved"),
    ("E2.eap-edges", TS8M, "rank_H7.7.q<-H5.7", "<="): ts("no-s-inhibition", "name-mover-moved"),
    ("E2.eap-edges", TS8M, "in_rank_H5.7.v<-H4.0", "<="): ts("no-s-inhibition", "duplicate-head-moved"),
    ("E2.eap-edges", TS8M, "rank_H5.7.v<-H4.0", "<="): ts("no-s-inhibition", "duplicate-head-moved"),
    # name-mover-moved: H7.7 rests, so its in-edges score zero; perfect-inhibition: ~1e-9 of the top edge
    **{("E2.eap-edges", TS8M, f"{rank}_H7.7.v<-{up}", "<="): ts("name-mover-moved", "perfect-inhibition", *extra)
       for rank in ("rank", "in_rank") for up, extra in (("MLP0", ("no-mlp0-copy",)), ("embed", ()))},
}


def _row_breaker_problems() -> list[str]:
    rows = [row for row in THRESHOLDS if row.claim.startswith(ROW_LEVEL_CLAIMS)]
    keys = [row_key(row) for row in rows]
    problems = [f"two rows share the key {k}" for k in {k for k in keys if keys.count(k) > 1}]
    problems += [f"row {k} names no model it fails on: add a mutant that breaks it" for k in keys if not ROW_BREAKERS.get(k)]
    problems += [f"ROW_BREAKERS entry {k} matches no threshold row" for k in set(ROW_BREAKERS) - set(keys)]
    by_key = dict(zip(keys, rows))
    for key, breakers in ROW_BREAKERS.items():
        for name in breakers:
            if name not in planted.MUTANTS and name not in planted.TWINS:
                problems.append(f"{key}: {name!r} is not a planted twin or mutant")
            elif key in by_key and not by_key[key].claim.startswith("E0.") and name in planted.TWINS:
                problems.append(f"{key}: the twin {name!r} must pass its rows; name a mutant")
            elif name in planted.MUTANTS and key[0] not in planted.MUTANTS[name][1]:
                problems.append(f"{key}: mutant {name} breaks the row but does not list {key[0]} in its `breaks`")
    for name, (_, claims) in planted.MUTANTS.items():
        for claim in claims:
            if claim.startswith(ROW_LEVEL_CLAIMS) and not any(k[0] == claim and name in b for k, b in ROW_BREAKERS.items()):
                problems.append(f"mutant {name} lists {claim} but no row of it in ROW_BREAKERS")
    return problems


def check_row_breakers() -> None:
    """Raise (a collection error of every claim-pair file) unless every E0-E2 row has a breaker."""
    problems = _row_breaker_problems()
    if problems:
        raise ValueError("tests/claim_pairs.py ROW_BREAKERS:\n  " + "\n  ".join(problems))


check_row_breakers()


def rows_broken_by(claim: str, name: str) -> list[RowKey]:
    """The rows of `claim` that apply to the planted model `name` and that ROW_BREAKERS says it fails."""
    return [row_key(r) for r in lookup_all(claim, f"planted:{name}") if name in ROW_BREAKERS.get(row_key(r), ())]


def row_breaker_params(claims: Iterable[str]) -> list:
    """pytest parameters (claim, mutant, rows), id "<claim>-<mutant>": each mutant that breaks rows of the
    claim, with those rows. A row listed for a mutant it does not apply to is an error here."""
    cases = []
    for claim in claims:
        for name in sorted({n for k, b in ROW_BREAKERS.items() if k[0] == claim for n in b if n in planted.MUTANTS}):
            rows = rows_broken_by(claim, name)
            listed = [k for k, b in ROW_BREAKERS.items() if k[0] == claim and name in b]
            if len(rows) != len(listed):
                raise ValueError(f"{claim}: {name} is listed for rows that do not apply to it: {sorted(set(listed) - set(rows))}")
            cases.append(pytest.param(claim, name, rows, id=f"{claim}-{name}"))
    return cases
