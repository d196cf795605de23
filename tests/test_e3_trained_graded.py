"""E3 on the graded variant (fixtures.planted.mutants.E3_GRADED) with SAEs trained in the run, as `./run claims`
trains them (claims.sae_sources.PLANTED_SAE_CONFIG, seed 0), not the oracle's planted directions.

Where a trained SAE recovers the role, the claim passes on the variant (that it fails on its mutant with trained SAEs
is shown on the superposition world, tests/test_e3_superposition.py, the trained-SAE ground truth). The
claims whose roles a trained SAE does not recover there are known gaps with the measured cause (TRAINED_GAPS): each
must still fail, on its listed rows only; once one passes, its entry goes and it gets a mutant case. SAE training
is deterministic on one machine, not across machines (claims.thresholds.KNOWN_GAPS, E3.L7), so a value near its
bound may move on another machine; the values in the comments are from this project's 2-core CPU.
"""

from __future__ import annotations

import functools

import pytest

from claims.sae_sources import PLANTED_SAE_CONFIG
from claims.thesis.thresholds import KNOWN_GAPS, TS_GRADED
from tests.test_claim_pairs_e3 import E3_CLAIMS, GRADED, measure_e3, rows_failing, subject_with

# Claim -> the mutant whose change, applied to the variant, removes the finding (fixtures.planted.MUTANTS).
# Measured (thesis prompt, SAE seeds 0 / 1 / 2), variant: L6-to P(IO) 75% -> 0.32% / 0.33% / 0.31%, H7.7's END
# attention to the names keeps 0.12 / 0.11 / 0.11; L5-to P(IO) -> 4.1% / 1.3% / 1.8%, H7.7 keeps 0.54 / 0.39 / 0.43
# of END->IO, H6.11 ~0 of its names, attribution -2.0 / -0.84 / -1.1; L7 (seeds 0, 1) one feature with all the
# positive attribution, W_U top token " Mary" (seed 2: a known gap, seed-dependent).
RECOVERED = {
    "E3.L6-to-feature-collapse": "tinystories-8m/no-to6-trigger",
    "E3.L5-to-feature": "tinystories-8m/no-to5-trigger",
    "E3.L7-logit-feature": "tinystories-8m/s-suppressor",
}
# What a trained SAE does not show on the variant: claims.thresholds.KNOWN_GAPS (so the report of
# `./run claims --model planted:tinystories-8m/e3-graded` says why), each with its failing rows and measured cause.
# A seed-dependent gap (E3.L7: seed 2 fails, seeds 0 and 1 pass) is a claim recovered on seed 0, tested as such.
TRAINED_GAPS = {gap.claim: gap for gap in KNOWN_GAPS if gap.model == TS_GRADED and not gap.seed_dependent}
SEED_DEPENDENT = {gap.claim for gap in KNOWN_GAPS if gap.model == TS_GRADED and gap.seed_dependent}


@functools.lru_cache(maxsize=None)
def trained_values(name: str, claim: str) -> dict:
    """The claim's values on planted:<name> (or GRADED+<mutant>) with SAEs trained on the story corpus."""
    return measure_e3(claim, *subject_with(name, PLANTED_SAE_CONFIG)).values


@pytest.mark.parametrize("claim", sorted(RECOVERED))
def test_claim_passes_on_the_graded_variant_with_trained_saes(claim):
    assert rows_failing(claim, trained_values(GRADED, claim)) == set()


@pytest.mark.parametrize("claim", sorted(TRAINED_GAPS))
def test_known_gap_of_the_graded_variant_still_fails_on_its_rows_only(claim):
    """A gap that closed fails here until its entry goes; a row failing beyond the gap's is not excused."""
    failing = {row.split("=", 1)[0] for row in rows_failing(claim, trained_values(GRADED, claim))}
    assert failing, f"{claim} now passes on {TS_GRADED} with trained SAEs: drop its KNOWN_GAPS entry, add it to RECOVERED"
    beyond = failing - set(TRAINED_GAPS[claim].quantities)
    assert not beyond, f"{claim}: {beyond} fail beyond the gap"


# That each of these claims fails on its mutant with trained SAEs is shown on the superposition world
# (tests/test_e3_superposition.py), the trained-SAE ground truth, for the same claims and mutants and two more.


def test_every_e3_claim_is_recovered_or_a_gap():
    assert set(RECOVERED) | set(TRAINED_GAPS) == set(E3_CLAIMS) and not set(RECOVERED) & set(TRAINED_GAPS)
    assert SEED_DEPENDENT <= set(RECOVERED)
