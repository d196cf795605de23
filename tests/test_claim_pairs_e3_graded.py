"""Claim pairs for experiment 3 on the graded variant (fixtures.planted.mutants.E3_GRADED), with oracle SAEs:
every row of every E3 claim passes on it, the calibrated twin's oracle gaps included, and each E3 mutant's one
change applied to it fails its claim. A file of its own so the test run's workers share the E3 pairs."""

from __future__ import annotations

import pytest

from claims.thresholds import lookup_all
from fixtures import planted
from tests.test_claim_pairs_e3 import E3_CLAIMS, GRADED, ORACLE_TWIN_GAPS, failing_rows, graded_mutant, measured, mutant_cases


@pytest.mark.parametrize("claim", sorted(E3_CLAIMS))
def test_every_row_passes_on_the_graded_variant_with_oracle(claim):
    assert failing_rows(claim, GRADED) == set()


@pytest.mark.parametrize("claim, mutant", mutant_cases())
def test_claim_fails_on_mutant_of_the_graded_variant_with_oracle(claim, mutant):
    description, _ = planted.MUTANTS[mutant]
    assert failing_rows(claim, graded_mutant(mutant)), f"{claim} still passes on {GRADED} + {mutant} ({description})"


def test_graded_variant_shows_the_oracle_twin_gaps_pass():
    """What the calibrated twin cannot show (ORACLE_TWIN_GAPS) is what the graded variant was built for."""
    for claim, quantities in ORACLE_TWIN_GAPS.items():
        values = measured(GRADED, claim)
        for quantity in quantities:
            rows = [r for r in lookup_all(claim, "planted:tinystories-8m") if r.quantity == quantity]
            assert rows and all(r.passes(values[quantity]) for r in rows), (claim, quantity, values[quantity])
