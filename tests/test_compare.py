"""Regression mode (mechinterp/compare.py): which threshold rows changed between a baseline run and this
one, and the notes saying once what was left out of the comparison."""

from __future__ import annotations

import json

from mechinterp.compare import compare_results, comparison_summary, render_comparison
from mechinterp.results import ClaimResult, QuantityResult, RunInfo, results_to_dict

TS, GPT2, TWIN = "tiny-stories-8M", "gpt2-small", "planted:tinystories-8m"


def logit_diff_rows(within: float, above: float) -> list[QuantityResult]:
    """E2.logit-diff on TinyStories-8M: one quantity, two threshold rows (claims/thresholds.py)."""
    return [QuantityResult("logit_diff", within, 9.4, "within", 9.4, 0.15, "logit_diff within 9.4 ± 0.15", "thesis s3.4",
                           abs(within - 9.4) <= 0.15),
            QuantityResult("logit_diff", above, 9.4, ">", 3.6, None, "logit_diff > 3.6", "above GPT-2's", above > 3.6)]


def claim(name: str, spec: str, status: str, quantities=(), test: str = "test_it") -> ClaimResult:
    return ClaimResult(name, spec, spec, spec.startswith("planted:"), status, quantities=list(quantities),
                       nodeid=f"claims/thesis/test_x.py::{test}[{spec}]")


def document(models: list[str], results: list[ClaimResult]) -> dict:
    return results_to_dict(RunInfo("2026-12-07 00:00:00 UTC", "2026-12-07 00:01:00 UTC", models), results)


def test_a_run_compared_with_itself_has_no_changes_and_no_notes():
    run = document([TS], [claim("E2.logit-diff", TS, "passed", logit_diff_rows(9.41, 9.41))])
    comparison = compare_results(run, run)
    assert comparison.empty and comparison.notes == []
    assert comparison_summary(comparison) == ["no claim changed outcome, row verdict or measured value"]


def test_rows_of_one_quantity_are_compared_one_by_one(tmp_path):
    # E2.logit-diff has two rows of logit_diff; keyed by quantity alone, one row hid the other, so a baseline
    # whose 'within' row differed said "0 value(s) changed"
    baseline = document([TS], [claim("E2.logit-diff", TS, "failed", logit_diff_rows(8.0, 9.41))])
    current = document([TS], [claim("E2.logit-diff", TS, "passed", logit_diff_rows(9.41, 9.41))])
    (tmp_path / "current.json").write_text(json.dumps(current))  # paths are loaded too
    comparison = compare_results(tmp_path / "current.json", baseline)
    # the '>' row is equal in both runs: not listed although the claim's outcome changed
    assert list(zip(comparison.changes["rule"], comparison.changes["change"])) == [("logit_diff within 9.4 ± 0.15", "verdict")]
    within = comparison.changes.iloc[0]
    assert (within.measured_baseline, within.measured_current, within.passed_baseline, within.passed_current) == (8.0, 9.41, False, True)
    assert comparison_summary(comparison) == [
        "E2.logit-diff [tiny-stories-8M]: logit_diff 8 -> 9.41; failed -> passed; 1 row(s) flipped pass/fail, 1 value(s) changed"]


def test_a_row_that_flips_pass_fail_is_a_change_even_when_the_claim_fails_in_both_runs():
    baseline = document([TS], [claim("E2.logit-diff", TS, "failed", logit_diff_rows(9.41, 3.0))])
    current = document([TS], [claim("E2.logit-diff", TS, "failed", logit_diff_rows(9.0, 9.0))])
    comparison = compare_results(current, baseline)
    assert comparison.changes["change"].tolist() == ["verdict", "verdict"]
    assert comparison_summary(comparison) == [
        "E2.logit-diff [tiny-stories-8M]: logit_diff 9.41 -> 9; failed; 2 row(s) flipped pass/fail, 2 value(s) changed"]


def test_values_within_tolerance_and_new_and_gone_rows():
    baseline = document([TS], [claim("E2.logit-diff", TS, "passed", logit_diff_rows(9.41, 9.41)),
                               claim("E1.dup-weak", TS, "passed", [QuantityResult("score", 0.1)])])
    current = document([TS], [claim("E2.logit-diff", TS, "passed", logit_diff_rows(9.45, 9.45)),
                              claim("E1.dup-weak", TS, "passed", [QuantityResult("score_renamed", 0.1)])])
    changes = compare_results(current, baseline).changes
    assert sorted(zip(changes.claim, changes.quantity, changes.change)) == [
        ("E1.dup-weak", "score", "gone"), ("E1.dup-weak", "score_renamed", "new"),
        ("E2.logit-diff", "logit_diff", "value"), ("E2.logit-diff", "logit_diff", "value")]
    assert "value" not in compare_results(current, baseline, atol=0.1).changes["change"].tolist()


def test_a_baseline_of_other_models_is_said_once_and_only_shared_models_are_compared():
    baseline = document([TS, GPT2], [claim(c, spec, "passed", [QuantityResult("q", 1.0)])
                                     for c in ("E1.a", "E1.b", "E2.c") for spec in (TS, GPT2)])
    current = document([GPT2, TWIN], [claim(c, spec, "passed", [QuantityResult("q", 1.0)])
                                      for c in ("E1.a", "E1.b", "E2.c") for spec in (GPT2, TWIN)])
    comparison = compare_results(current, baseline)
    assert comparison.empty
    assert comparison_summary(comparison) == [
        "baseline has models tiny-stories-8M, gpt2-small; this run gpt2-small, planted:tinystories-8m: comparing gpt2-small only",
        "no claim changed outcome, row verdict or measured value"]
    everything = compare_results(current, baseline, compare_all=True)  # asked for: each model in one run only is new / gone
    assert sorted(set(zip(everything.changes.spec, everything.changes.change))) == [(TWIN, "new"), (TS, "gone")]
    assert everything.notes[0].endswith("comparing all of them (a model in one run only shows as new / gone)")


def test_claims_this_run_did_not_collect_are_left_out_in_one_note():
    baseline = document([TS], [claim(c, TS, "passed", [QuantityResult("q", 1.0)]) for c in ("E1.a", "E2.b", "E3.c", "E3.d")])
    current = document([TS], [claim(c, TS, "passed", [QuantityResult("q", 1.0)]) for c in ("E3.c", "E3.d")])  # -k e3
    comparison = compare_results(current, baseline)
    assert comparison.empty and comparison.notes == [
        "2 claim test(s) of the baseline were not collected in this run (deselected, e.g. -k, or no longer in the suite), "
        "so not compared: E1.a, E2.b"]
    # the caller may say what it collected, e.g. a test that has no row yet
    assert compare_results(current, baseline, collected={("E1.a", TS, "test_it")}).changes["change"].tolist() == ["gone", "new", "new"]


def test_tests_an_interrupted_run_did_not_run_are_left_out_in_one_note():
    baseline = document([TS], [claim(c, TS, "passed", [QuantityResult("q", 1.0)]) for c in ("E1.a", "E2.b", "E3.c")])
    current = document([TS], [claim("E1.a", TS, "passed", [QuantityResult("q", 1.0)]),
                               *(claim(c, TS, "not run", [QuantityResult("q", None)]) for c in ("E2.b", "E3.c"))])
    comparison = compare_results(current, baseline)
    assert comparison.empty and comparison.notes == [
        "2 claim test(s) did not run in this run (it was interrupted), so not compared: E2.b [tiny-stories-8M], E3.c [tiny-stories-8M]"]
    assert compare_results(current, baseline, compare_all=True).changes["change"].tolist() == ["value", "value"]


def test_a_known_gap_that_is_a_plain_failure_in_the_other_run_is_no_change():
    # --sae-config: the known gap (measured with the default SAEs) does not apply, the same rows fail plainly
    rows = [QuantityResult("p_io_ablated", 2e-5, 0.048, "<=", 0.1, None, "p_io_ablated <= 0.1", "", True),
            QuantityResult("attribution", 1.58, -1.0, "<", 0.0, None, "attribution < 0", "", False)]
    baseline = document([TWIN], [claim("E3.L5-to-feature", TWIN, "known gap", rows)])
    current = document([TWIN], [claim("E3.L5-to-feature", TWIN, "failed", rows)])
    comparison = compare_results(current, baseline)
    assert comparison.empty
    (note,) = comparison.notes
    assert note.startswith("known gap in one run, failed in the other, with the same rows failing") and note.endswith(
        "not a change: E3.L5-to-feature [planted:tinystories-8m]")
    assert not any("known gap -> failed" in line for line in comparison_summary(comparison))
    # other rows failing is a change, listed as such, not as "the same rows failing"
    other_rows = [QuantityResult(q.quantity, q.measured, q.thesis_value, q.op, q.threshold, None, q.rule, "", not q.passed) for q in rows]
    flipped = compare_results(document([TWIN], [claim("E3.L5-to-feature", TWIN, "failed", other_rows)]), baseline)
    assert flipped.notes == [] and flipped.changes["change"].tolist() == ["verdict", "verdict"]
    # a pass that becomes a known gap is a change of outcome
    passed = document([TWIN], [claim("E3.L5-to-feature", TWIN, "passed", rows)])
    assert comparison_summary(compare_results(baseline, passed)) == [
        "E3.L5-to-feature [planted:tinystories-8m]: p_io_ablated 2e-05; passed -> known gap; 0 value(s) changed"]


def test_the_page_section_shows_the_notes_once_escaped():
    baseline = document([TS, GPT2], [claim("E1.<a>", TS, "passed", [QuantityResult("q", 1.0)])])
    current = document([TS], [claim("E1.<a>", TS, "failed", [QuantityResult("q", 2.0)])])
    section = render_comparison(compare_results(current, baseline), "reports/<base>")
    assert section.count("baseline has models") == 1 and "<a>" not in section and "reports/&lt;base&gt;" in section
    assert "E1.&lt;a&gt; [tiny-stories-8M]: passed -&gt; failed; 1 value(s) changed" in section  # q has no threshold: no key value


def e3_rows(feature: float, cosine: float, p_io: float, passed: bool, role_score: float) -> list[QuantityResult]:
    """An E3 claim's threshold row, then its recorded values (no threshold), as claims/test_e3_features.py orders them."""
    return [QuantityResult("p_io_ablated", p_io, 0.048, "<=", 0.1, None, "p_io_ablated <= 0.1", "", passed),
            QuantityResult("feature_index", feature), QuantityResult("role_score", role_score),
            QuantityResult("planted_direction_cosine", cosine), QuantityResult("p_io_clean", 0.77),
            *(QuantityResult(f"8p.value_{i}", 1.0) for i in range(20))]


def e3_claim(status: str, rows: list[QuantityResult]) -> ClaimResult:
    result = claim("E3.L5-to-feature", TWIN, status, rows)
    result.details = {"role": "L5-to"}
    return result


def test_an_e3_claim_reads_at_a_glance_one_line_with_its_feature_cosine_key_value_and_outcome():
    baseline = document([TWIN], [e3_claim("passed", e3_rows(44, 0.94, 0.02, True, 3.0))])
    current = document([TWIN], [e3_claim("failed", e3_rows(812, 0.41, 0.5, False, 3.0))])
    comparison = compare_results(current, baseline)
    assert comparison_summary(comparison) == [(
        "E3.L5-to-feature [planted:tinystories-8m] role L5-to: feature 44 -> 812, recovery cosine 0.94 -> 0.41; "
        "p_io_ablated 0.02 -> 0.5; passed -> failed; 1 row(s) flipped pass/fail, 3 value(s) changed")]
    # the table lists the rows that changed, not the 21 equal ones of a claim whose outcome moved
    assert sorted(comparison.changes["quantity"]) == ["feature_index", "p_io_ablated", "planted_direction_cosine"]
    (line,) = comparison.claims
    assert (line.feature, line.cosine, line.key, line.status) == ((44, 812), (0.94, 0.41), (0.02, 0.5), ("passed", "failed"))
    # what did not move is shown once
    same_feature = compare_results(document([TWIN], [e3_claim("passed", e3_rows(44, 0.94, 0.02, True, 2.5))]), baseline)
    assert comparison_summary(same_feature) == [(
        "E3.L5-to-feature [planted:tinystories-8m] role L5-to: feature 44, recovery cosine 0.94; p_io_ablated 0.02; passed; "
        "1 value(s) changed")]


def test_the_page_collapses_the_changed_rows_under_the_lines():
    baseline = document([TWIN], [e3_claim("passed", e3_rows(44, 0.94, 0.02, True, 3.0))])
    current = document([TWIN], [e3_claim("failed", e3_rows(812, 0.41, 0.5, False, 3.0))])
    section = render_comparison(compare_results(current, baseline), "base")
    lines, table = section.split("<details", 1)
    assert lines.count("<li>") == 1 and "feature 44 -&gt; 812" in lines and "<table" not in lines
    assert table.startswith(" class='changed-rows'><summary>All 3 changed row(s)</summary><table") and table.count("<tr>") == 3  # the header row has a style
