"""What the claim-pair tests (tests/test_claim_pairs_*.py) share: the (claim, mutant) cases.

A claim pair shows a claim passing on a planted twin and failing on every mutant that
fixtures.planted.MUTANTS lists as lacking its finding. A claim with no such mutant would never be
shown to fail, so it is a collection error here, not a silently missing case. For E0-E2 this holds
row by row: ROW_BREAKERS names, for every threshold row, the planted models it fails on.
"""

from __future__ import annotations

from typing import Iterable

import pytest

from claims.claim import RowKey
from claims.thesis.thresholds import ROW_BREAKERS, THRESHOLDS
from claims.thresholds import Threshold, lookup_all
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

ROW_LEVEL_CLAIMS = ("E0.", "E1.", "E2.")  # E3's rows are checked claim by claim (tests/test_claim_pairs_e3.py)


def row_key(row: Threshold) -> RowKey:
    return (row.claim, row.model, row.quantity, row.op)


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
