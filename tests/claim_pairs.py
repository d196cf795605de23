"""What the claim-pair tests (tests/test_claim_pairs_*.py) share: the (claim, mutant) cases.

A claim pair shows a claim passing on a planted twin and failing on every mutant that
fixtures.planted.MUTANTS lists as lacking its finding. A claim with no such mutant would never be
shown to fail, so it is a collection error here, not a silently missing case.
"""

from __future__ import annotations

from typing import Iterable

import pytest

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
