"""A paper is one folder: a made-up second paper (tests/toy_paper) runs through the same framework, checks
and page as the thesis, selected with --paper; each of its rows fails on the planted model it names."""

from __future__ import annotations

import pytest

from claims.claim import claim, paper, papers
from claims.framework import measure_claim
from claims.thresholds import lookup_all
from fixtures import planted
from mechinterp.results import load_results
from tests import toy_paper
from tests.plugin_fakes import UNUSED_PLUGINS

TOY_TESTS = '''
from claims.claim import claim_tests
from tests.toy_paper import CLAIMS

globals().update(claim_tests(CLAIMS))
'''


@pytest.fixture
def toy_pytester(pytester):
    from tests.plugin_fakes import ROOT

    pytester.makeconftest((ROOT / "conftest.py").read_text())
    pytester.mkdir("claims")
    pytester.path.joinpath("claims", "test_toy.py").write_text(TOY_TESTS)
    return pytester


def test_the_second_paper_is_registered_beside_the_thesis():
    assert paper("tests.toy_paper") is toy_paper.PAPER and {"thesis", "toy"} <= set(papers())
    assert claim("toy.prefers-io").statement == "The model prefers the indirect object to the subject."
    assert [row.claim for row in lookup_all("toy.mover-looks", "planted:tinystories-8m")] == ["toy.mover-looks"]


@pytest.mark.parametrize("row_key, breakers", sorted(toy_paper.ROW_BREAKERS.items()))
def test_each_toy_row_passes_on_the_twin_and_fails_on_its_breaker(row_key, breakers):
    claim_id, _, quantity, _ = row_key
    (row,) = [r for r in lookup_all(claim_id, "planted:tinystories-8m") if r.quantity == quantity]
    assert row.passes(measure_claim(claim_id, planted.build("tinystories-8m"), "planted:tinystories-8m").values[quantity])
    for name in breakers:
        value = measure_claim(claim_id, planted.build(name), f"planted:{name}").values[quantity]
        assert not row.passes(value), f"{row.describe()} still holds on {name}: {value}"


def test_a_run_of_the_second_paper_checks_its_claims_and_writes_their_page(toy_pytester):
    result = toy_pytester.runpytest(*UNUSED_PLUGINS, "claims", "--paper", "tests.toy_paper", "--report-dir", "out")
    assert result.ret == 0 and result.parseoutcomes()["passed"] == 2, result.stdout.str()[-2000:]
    rows = load_results(toy_pytester.path / "out")["results"]
    assert {(r["claim"], r["spec"], r["status"]) for r in rows} == {("toy.prefers-io", "planted:tinystories-8m", "passed"),
                                                                     ("toy.mover-looks", "planted:tinystories-8m", "passed")}
    page = (toy_pytester.path / "out" / "index.html").read_text()
    assert "H7.7 attends from END to the indirect object." in page and "Toy et al. s2" in page


def test_the_second_paper_fails_where_its_finding_is_missing(toy_pytester):
    result = toy_pytester.runpytest(*UNUSED_PLUGINS, "claims", "--paper", "tests.toy_paper", "--model",
                                    "planted:tinystories-8m/name-mover-moved", "--report-dir", "out")
    assert result.parseoutcomes()["failed"] >= 1
    statuses = {r["claim"]: r["status"] for r in load_results(toy_pytester.path / "out")["results"]}
    assert statuses["toy.mover-looks"] == "failed"


def test_an_unknown_paper_is_one_line_before_any_model_loads(toy_pytester):
    result = toy_pytester.runpytest(*UNUSED_PLUGINS, "claims", "--paper", "no-such-paper")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "--paper no-such-paper: no such paper; known: " in result.stderr.str()
