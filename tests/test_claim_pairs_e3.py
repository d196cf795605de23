"""Claim pairs for experiment 3, with oracle SAEs (fixtures.planted.oracle_sae: decoder rows = the
planted directions, no training): every E3 measure passes on the TinyStories twin and fails on each
mutant that fixtures.planted.MUTANTS lists as breaking it. These prove the measuring code against
ground truth; what the oracle was built to hold is no evidence for the thesis.

Rows the twin cannot show even with the oracle (ORACLE_TWIN_GAPS, measured: a gap of the twin, not of
SAE training) are left out of both sides: the twin must pass every other row, and a mutant must fail
one of those. Each must also be listed in claims.thresholds.KNOWN_GAPS, which holds what the twin
fails with its trained SAEs (a superset).
"""

from __future__ import annotations

import functools

import pytest

import claims.thesis.e3_features as e3
from claims.sae_sources import ORACLE, SAESet
from claims.framework import Measured, measure_claim
from claims.thresholds import known_gap, lookup_all
from fixtures import planted

TWIN = "tinystories-8m"
E3_CLAIMS = tuple(claim.id for claim in e3.CLAIMS)  # declared in claims/thesis/e3_features.py


def measure_e3(claim: str, model, saes) -> Measured:
    """The E3 claim's protocol on a planted model (rows and context corpus of the TinyStories twin) with `saes`."""
    return measure_claim(claim, model, "planted:tinystories-8m", saes)
# Rows the twin fails with its oracle, on the thesis's prompt (values from a run of this file):
ORACLE_TWIN_GAPS = {
    # ablating to@5 collapses P(IO) (4e-4; thesis 4.8%): the to@5 ablation also turns H6.11's lift off, and the
    # twin's P(IO) is calibrated steep; to@5's attribution is +4.2 (thesis: third most negative), as H6.11
    # lifts IO and S alike in the twin, so to@5 only helps through its 0.3 share of to@6.
    # Why no retuning of this twin can pass (design arithmetic, tinystories.name_mover_gain / secondary_gain):
    # H7.7 writes 13.6 logits per unit attention (10.4 on IO at 0.77) for the calibrated 9.4, and H6.11's lift
    # is 1.6. Losing the lift and keeping a share r of H7.7's END->IO attention leaves P(IO) 0.2% at the thesis's
    # r = 0.43, 1.1% at r = 0.6, 3.1% at r = 0.7: the rows' bands (P(IO) 1-15%, r 0.2-0.7) meet only at
    # r 0.6-0.7. The thesis's pair (r 0.43, P(IO) 4.8%) needs a gain <= 9.6 even with no lift lost, i.e. H7.7
    # carrying at most ~7 of the 9.4; the rest must come from something that leaves IO's logit alone (S pushed
    # down). The graded variant (GRADED below, fixtures.planted.mutants.E3_GRADED) is that model: it passes these rows.
    "E3.L5-to-feature": {"p_io_ablated", "attribution"},
    # ablating verb@5 leaves H7.7 0.008 of its END->IO attention (thesis 0.43): the trigger's 0.7 share is a
    # score drop of ~4.6, more than the rest of the prompt can take
    "E3.L5-gave-feature": {"H7.7_END_to_IO_after_over_before"},
}
# L7's lead row is checkable with the oracle because block 7's name features have a JumpReLU threshold (half
# a typical name write, fixtures.planted.oracle_sae): writing IO's unembedding no longer fires every overlapping
# name's feature, and the s-suppressor mutant (S pushed down as much as IO up, two directions) fails it.
WITHOUT_MUTANT: set[str] = set()


# The twin regraded for E3 (fixtures.planted.mutants.E3_GRADED) has no oracle gap: every row of every E3 claim
# passes on it, and each E3 mutant's one change, applied to it, fails its claim there too.
GRADED = "tinystories-8m/e3-graded"


def graded_mutant(mutant: str) -> str:
    return f"{GRADED}+{mutant.split('/', 1)[1]}"


@functools.lru_cache(maxsize=None)
def planted_model(name: str):
    """planted:<name>, or the graded variant with one E3 mutant's change on top (GRADED+<mutant>)."""
    if name.startswith(GRADED + "+"):
        from dataclasses import replace

        from fixtures.planted.mutants import E3_GRADED, REGISTRY
        from fixtures.planted.tinystories import TinyStoriesTwinConfig, build_tinystories_twin

        mutant = REGISTRY["tinystories-8m/" + name.split("+", 1)[1]]
        config = replace(TinyStoriesTwinConfig(), **E3_GRADED[GRADED][2], **mutant.change)
        return build_tinystories_twin(config, name=name)
    return planted.build(name)


def subject_with(name: str, sae_config):
    """(model, SAESet) of planted_model(name) with SAEs from `sae_config` (ORACLE or a training config)."""
    model = planted_model(name)
    return model, SAESet(f"planted:{name.split('+', 1)[0]}", model, config=sae_config)


@functools.lru_cache(maxsize=None)
def oracle_subject(name: str):
    return subject_with(name, ORACLE)


@functools.lru_cache(maxsize=None)
def measured(name: str, claim: str) -> dict:
    """The claim's values on planted:<name> with its oracle SAEs, measured once."""
    return measure_e3(claim, *oracle_subject(name)).values


def failing_rows(claim: str, name: str) -> set[str]:
    gaps = () if name.startswith(GRADED) else ORACLE_TWIN_GAPS.get(claim, ())
    return rows_failing(claim, measured(name, claim), gaps)


def rows_failing(claim: str, values: dict, skip=()) -> set[str]:
    """The threshold rows of `claim` (the TinyStories twin's, those not in `skip`) that `values` fail."""
    rows = [r for r in lookup_all(claim, "planted:tinystories-8m") if r.quantity not in skip]
    assert rows, f"no threshold row for {claim}"
    return {f"{r.quantity}={values.get(r.quantity)} vs '{r.describe()}'" for r in rows
            if r.quantity not in values or not r.passes(values[r.quantity])}


@pytest.mark.parametrize("claim", sorted(E3_CLAIMS))
def test_claim_passes_on_twin_with_oracle(claim):
    assert failing_rows(claim, TWIN) == set()


@pytest.mark.parametrize("claim", sorted(ORACLE_TWIN_GAPS))
def test_oracle_gaps_still_fail_and_are_known(claim):
    values = measured(TWIN, claim)
    for quantity in ORACLE_TWIN_GAPS[claim]:
        rows = [r for r in lookup_all(claim, f"planted:{TWIN}") if r.quantity == quantity]
        assert rows and not all(r.passes(values[quantity]) for r in rows), f"{claim} {quantity} now passes: drop it"
    gap = known_gap(claim, f"planted:{TWIN}")
    assert gap is not None and ORACLE_TWIN_GAPS[claim] <= set(gap.quantities)


def mutant_cases() -> list:
    """(claim, mutant) for every mutant listed as breaking each claim; a claim with none is an error. (Read
    from planted.MUTANTS directly, like tests/claim_pairs.mutant_params, which also checks E2's row table.)"""
    cases = []
    for claim in sorted(set(E3_CLAIMS) - WITHOUT_MUTANT):
        mutants = [name for name, (_, broken) in planted.MUTANTS.items() if claim in broken]
        if not mutants:
            raise ValueError(f"fixtures.planted.MUTANTS has no mutant breaking {claim}")
        cases += [pytest.param(claim, m, id=f"{claim}-{m}") for m in mutants]
    return cases


@pytest.mark.parametrize("claim, mutant", mutant_cases())
def test_claim_fails_on_mutant_with_oracle(claim, mutant):
    description, _ = planted.MUTANTS[mutant]
    assert failing_rows(claim, mutant), f"{claim} still passes on mutant {mutant} ({description})"


def test_oracle_filler_is_content_the_twin_never_reads_again():
    from fixtures.planted.oracle_sae import FILLER_SUBSPACES, unread_rows

    model, _ = oracle_subject(TWIN)
    for block in (5, 6):
        unread = unread_rows(model, block)
        for subspace in FILLER_SUBSPACES:
            assert unread.get(subspace) == list(range(len(model.planted.subspaces[subspace]))), (block, subspace)


def test_known_gaps_name_rows_of_their_claim():
    from claims.thesis.thresholds import KNOWN_GAPS

    for gap in KNOWN_GAPS:
        quantities = {r.quantity for r in lookup_all(gap.claim, gap.model)}
        assert set(gap.quantities) <= quantities, f"{gap.claim}: {set(gap.quantities) - quantities} have no row"


@pytest.mark.parametrize("claim", sorted(set(E3_CLAIMS) - {"E3.random-control"}))
def test_oracle_role_features_are_their_planted_directions(claim):
    """Known answer of the recorded recovery cosine: each role's oracle feature is its planted direction."""
    values = measured(TWIN, claim)
    assert values["planted_direction_cosine"] == pytest.approx(1, abs=1e-5)
    assert 0 < values["ablation_removed_share"] <= 1

