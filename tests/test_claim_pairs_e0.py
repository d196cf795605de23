"""E0.smallest-ioi: every threshold row passes on a model that has its finding and fails on one
that lacks it (the breakers are tests/claim_pairs.py ROW_BREAKERS's, plus the random-init twins).

- tiny-stories-8M rows ("performs IOI"): pass on the planted TS-8M twin, fail on its no-s-inhibition
  mutant (IO and S moved alike: logit difference -4.2) and on the random-init TS-8M twin.
- tiny-stories-1M / -3M rows ("does not perform IOI"): pass on the random-init 1M / 3M twins (real
  architecture, no IOI), fail on the planted TS-8M twin (which performs it at 9.4).
"""

from __future__ import annotations

import pytest

from claims.thesis.e0_family import measure_smallest_ioi
from claims.thresholds import lookup_all
from fixtures import planted
from tests.claim_pairs import ROW_BREAKERS, row_breaker_params

CLAIM = "E0.smallest-ioi"


def failing_rows(rows_of: str, model) -> list[str]:
    rows = lookup_all(CLAIM, rows_of)
    assert rows, f"no {CLAIM} row for {rows_of}"
    values = measure_smallest_ioi(model).values
    return [row.quantity for row in rows if not row.passes(values[row.quantity])]


@pytest.fixture(scope="module")
def ts_twin():
    return planted.build("tinystories-8m")


def test_the_planted_ts_twin_performs_ioi(ts_twin):
    assert failing_rows("planted:tinystories-8m", ts_twin) == []


@pytest.mark.parametrize("claim, mutant, rows", row_breaker_params([CLAIM]))
def test_every_8m_row_fails_on_the_mutant(claim, mutant, rows):
    assert {quantity for _, _, quantity, _ in rows} == {"logit_diff", "p_io_minus_p_s"}
    assert failing_rows(f"planted:{mutant}", planted.build(mutant)) == ["logit_diff", "p_io_minus_p_s"]


def test_every_8m_row_fails_on_the_random_init_8m_twin(twin_model):
    assert failing_rows("tiny-stories-8M", twin_model("tiny-stories-8M")) == ["logit_diff", "p_io_minus_p_s"]


@pytest.mark.parametrize("version", ["tiny-stories-1M", "tiny-stories-3M"])
def test_not_able_rows_pass_on_a_random_init_twin_and_fail_on_an_ioi_model(version, twin_model, ts_twin):
    assert failing_rows(version, twin_model(version)) == []
    breakers = {key[2]: names for key, names in ROW_BREAKERS.items() if key[:2] == (CLAIM, version)}
    assert breakers == {"logit_diff": ("tinystories-8m",), "p_io_minus_p_s": ("tinystories-8m",)}
    assert failing_rows(version, ts_twin) == ["logit_diff", "p_io_minus_p_s"]
