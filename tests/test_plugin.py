"""The pytest plugin end to end (conftest.py on fake models): outcomes, start-of-run checks, interrupted
and killed runs, baselines."""

from __future__ import annotations

import fnmatch
import json
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest
import pandas as pd

from mechinterp.models import missing_weights_message
from mechinterp.report import PAUSE_AFTER_STAGING_ENV
from tests.plugin_fakes import FAKE_CLAIMS, UNUSED_PLUGINS, claims_pytester  # noqa: F401 - a fixture
from tests.test_report import RESULTS_SHAPE_FAULTS
from mechinterp.results import (
    load_results,
)

ROOT = Path(__file__).resolve().parents[1]


# --- the pytest plugin, end to end on fake models ---

def test_plugin_records_passed_failed_skipped_and_errored_claims(claims_pytester):
    report_dir = claims_pytester.path / "out"
    result = claims_pytester.runpytest(
        *UNUSED_PLUGINS, "claims", "--model", "tiny-stories-8M,planted:gpt2-small", "--model", "gpt2-small", "--model", "tiny-stories-1M",
        "--report-dir", str(report_dir), "--allow-unchecked-models",  # 1M has no row for these fake claims
    )
    # pytest: 8M passes (+ the load-once check); planted:gpt2-small fails GPT-2 rows at 9.4; gpt2-small and 1M skip; the crash fails twice
    result.assert_outcomes(passed=2, failed=3, skipped=4)
    result.stdout.fnmatch_lines([f"claims report: {report_dir / 'index.html'}"])
    results = {(r["nodeid"].split("::")[1].split("[")[0], r["spec"]): r for r in load_results(report_dir)["results"]}
    assert len(results) == 8

    passed = results[("test_measures_nine_point_four", "tiny-stories-8M")]
    assert passed["status"] == "passed" and passed["has_figure"] and passed["details"] == {"n": 8}
    assert [q["passed"] for q in passed["quantities"]] == [True, True]

    failed = results[("test_measures_nine_point_four", "planted:gpt2-small")]
    assert failed["status"] == "failed" and failed["planted"] and failed["real_model"] == "gpt2-small"
    assert "logit_diff = 9.4 fails 'logit_diff within 3.6 ± 0.15'" in failed["message"]
    assert "fails 'logit_diff < 9.4'" in failed["message"]

    absent = results[("test_measures_nine_point_four", "gpt2-small")]
    assert absent["status"] == "skipped" and absent["message"] == missing_weights_message("gpt2-small")
    assert [q["rule"] for q in absent["quantities"]] == ["logit_diff within 3.6 ± 0.15", "logit_diff < 9.4"]

    no_row = results[("test_measures_nine_point_four", "tiny-stories-1M")]
    assert no_row["status"] == "skipped" and "no threshold row for E2.logit-diff on tiny-stories-1M" in no_row["message"]

    crashed = results[("test_crashes", "tiny-stories-8M")]
    assert crashed["status"] == "error" and crashed["message"] == "RuntimeError: measurement crashed"
    page = (report_dir / "index.html").read_text()
    assert "PLANTED" in page and "measurement crashed" in page


def test_plugin_records_a_broken_claims_file_as_an_error(claims_pytester):
    claims_pytester.path.joinpath("claims", "test_broken.py").write_text("import module_that_does_not_exist\n")
    result = claims_pytester.runpytest(*UNUSED_PLUGINS, "claims", "--model", "tiny-stories-8M", "--report-dir", "out")
    assert result.ret != 0
    data = load_results(claims_pytester.path / "out")
    broken = [r for r in data["results"] if r["status"] == "error" and "test_broken.py" in r["nodeid"]]
    assert len(broken) == 1 and "module_that_does_not_exist" in broken[0]["message"]


def test_plugin_writes_no_report_without_claims(pytester):
    pytester.makeconftest((ROOT / "conftest.py").read_text())
    pytester.makepyfile(test_plain="def test_plain():\n    assert True\n")
    pytester.runpytest(*UNUSED_PLUGINS).assert_outcomes(passed=1)
    assert not (pytester.path / "reports").exists()


def test_subject_without_claim_marker_is_a_collection_error(pytester):
    pytester.makeconftest((ROOT / "conftest.py").read_text())
    pytester.makepyfile(test_unmarked="def test_unmarked(subject):\n    pass\n")
    result = pytester.runpytest(*UNUSED_PLUGINS, "--report-dir", "out")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*needs @pytest.mark.claim*"])


def test_unknown_model_is_a_usage_error(claims_pytester):
    result = claims_pytester.runpytest(*UNUSED_PLUGINS, "claims", "--model", "tiny-stories-8M,gpt-5", "--report-dir", "out")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--model: unknown model 'gpt-5'; known: tiny-stories-1M*"])


def test_plugin_records_an_expected_failure_as_a_known_gap(claims_pytester):
    claims_pytester.path.joinpath("claims", "test_fake_claims.py").write_text(FAKE_CLAIMS.split("@pytest.mark.claim")[0] + '''
@pytest.mark.claim("E2.logit-diff")
def test_documented_gap(subject, check):
    try:
        check(Measured({"logit_diff": 1.0}))
    except AssertionError:
        pytest.xfail("this fake model lacks the finding")
''')
    result = claims_pytester.runpytest(*UNUSED_PLUGINS, "claims", "--model", "tiny-stories-8M", "--report-dir", "out")
    result.assert_outcomes(xfailed=1)
    (gap,) = load_results(claims_pytester.path / "out")["results"]
    assert gap["status"] == "known gap" and gap["message"] == "this fake model lacks the finding"
    assert gap["quantities"] and all(q["measured"] == 1.0 and q["passed"] is False for q in gap["quantities"])  # recorded, not hidden


def test_baseline_option_adds_the_changes_to_the_report(claims_pytester):
    claims_pytester.runpytest(*UNUSED_PLUGINS, "claims", "--model", "tiny-stories-8M", "--report-dir", "base")
    fake = claims_pytester.path / "claims" / "test_fake_claims.py"
    fake.write_text(fake.read_text().replace('Measured({"logit_diff": 9.4}', 'Measured({"logit_diff": 2.0, "feature_index": 7}'))
    result = claims_pytester.runpytest(*UNUSED_PLUGINS, "claims", "--model", "tiny-stories-8M", "--report-dir", "new", "--baseline", "base")
    # two values: E2.logit-diff's rows 'within 9.4 ± 0.15' and '> 3.6', compared one by one
    result.stdout.fnmatch_lines(["*changes since baseline*", "E2.logit-diff [[]tiny-stories-8M[]]: feature none -> 7; "
                                 "logit_diff 9.4 -> 2; passed -> failed; 2 row(s) flipped pass/fail, 3 value(s) changed"])
    changes = pd.read_csv(claims_pytester.path / "new" / "comparison.csv")
    assert set(zip(changes.quantity, changes.change)) == {("logit_diff", "verdict"), ("feature_index", "new")}
    page = (claims_pytester.path / "new" / "index.html").read_text()
    assert "Changes since baseline" in page and "<summary>All 3 changed row(s)</summary>" in page


def test_a_baseline_of_other_models_and_claims_is_compared_on_what_this_run_measured(claims_pytester):
    # a baseline of more models, and a -k run: one line each at the top, not a "passed -> absent" line per test
    claims_pytester.runpytest(*UNUSED_PLUGINS, "claims", "--model", "tiny-stories-8M,gpt2-small", "-k", "not zz", "--report-dir", "base")
    result = claims_pytester.runpytest(*UNUSED_PLUGINS, "claims", "--model", "tiny-stories-8M", "-k", "nine", "--report-dir", "new",
                                       "--baseline", "base")
    output = result.stdout.str()
    section = [line for line in output[output.index("changes since baseline"):].splitlines()[1:] if line][:3]
    assert section == [
        "baseline has models tiny-stories-8M, gpt2-small; this run tiny-stories-8M: comparing tiny-stories-8M only",
        "1 claim test(s) of the baseline were not collected in this run (deselected, e.g. -k, or no longer in the suite), so "
        "not compared: E2.logit-diff (test_crashes)",
        "no claim changed outcome, row verdict or measured value"]
    assert "absent" not in output
    assert (claims_pytester.path / "new" / "index.html").read_text().count("baseline has models") == 1


def test_missing_baseline_is_a_usage_error(claims_pytester):
    result = claims_pytester.runpytest(*UNUSED_PLUGINS, "claims", "--model", "tiny-stories-8M", "--report-dir", "out", "--baseline", "nowhere")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: --baseline nowhere: {claims_pytester.path / 'nowhere'}: no such file"])


# --- start-of-run checks, atomic reports, interrupted and killed runs, on the plugin ---


def only_error_line(result) -> str:
    """A run refused at start: pytest's one-line error, and nothing else on stderr (no traceback)."""
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    (line,) = [line for line in result.stderr.lines if line.strip()]
    return line


def test_baseline_that_is_this_runs_report_dir_is_refused_before_any_test(claims_pytester):
    claims_pytester.runpytest(*UNUSED_PLUGINS, "claims", "--model", "tiny-stories-8M", "--report-dir", "base")
    before = (claims_pytester.path / "base" / "results.json").read_bytes()
    for baseline in ("base", "base/results.json"):
        result = claims_pytester.runpytest(*UNUSED_PLUGINS, "claims", "--model", "tiny-stories-8M", "--report-dir", "base", "--baseline", baseline)
        assert fnmatch.fnmatch(only_error_line(result), f"ERROR: --baseline {baseline}: *results.json is inside the report directory this run writes*")
        assert "collected" not in result.stdout.str()  # refused before collection, so before any model loads
    assert (claims_pytester.path / "base" / "results.json").read_bytes() == before


@pytest.mark.parametrize("text, fault", [RESULTS_SHAPE_FAULTS[i] for i in (0, 1, 3)])
def test_baseline_of_the_wrong_shape_is_refused_at_start(claims_pytester, text, fault):
    (claims_pytester.path / "old.json").write_text(text)
    result = claims_pytester.runpytest(*UNUSED_PLUGINS, "claims", "--model", "tiny-stories-8M", "--report-dir", "out", "--baseline", "old.json")
    line = only_error_line(result)
    assert line.startswith(f"ERROR: --baseline old.json: {claims_pytester.path / 'old.json'}: ") and fault in line
    assert not (claims_pytester.path / "out").exists()


def test_report_dir_that_is_a_file_is_refused_at_start(claims_pytester):
    (claims_pytester.path / "taken").write_text("x")
    result = claims_pytester.runpytest(*UNUSED_PLUGINS, "claims", "--model", "tiny-stories-8M", "--report-dir", "taken")
    assert only_error_line(result) == f"ERROR: --report-dir: {claims_pytester.path / 'taken'} is a file, not a directory"
    # (a read-only place is refused the same way: test_read_only_report_dir_is_refused, skipped as root)


def test_a_run_refused_after_collection_leaves_the_older_report_alone(claims_pytester):
    claims_pytester.runpytest(*UNUSED_PLUGINS, "claims", "--model", "tiny-stories-8M", "--report-dir", "out")
    before = {p.name: p.read_bytes() for p in (claims_pytester.path / "out").iterdir()}
    # tiny-stories-28M has no E2.logit-diff row: the run stops once collected, before any claim runs
    result = claims_pytester.runpytest(*UNUSED_PLUGINS, "claims", "--model", "tiny-stories-8M,tiny-stories-28M", "--report-dir", "out")
    assert "no selected claim checks tiny-stories-28M" in only_error_line(result)
    assert {p.name: p.read_bytes() for p in (claims_pytester.path / "out").iterdir()} == before


def test_report_that_cannot_be_written_at_the_end_is_saved_elsewhere(claims_pytester):
    claims_pytester.path.joinpath("claims", "test_fake_claims.py").write_text(FAKE_CLAIMS.split("@pytest.mark.claim")[0] + '''
from pathlib import Path

@pytest.mark.claim("E2.logit-diff")
def test_puts_a_file_where_the_report_goes(subject, check, request):
    Path(request.config.getoption("report_dir")).write_text("in the way")
    check(Measured({"logit_diff": 9.4}))
''')
    result = claims_pytester.runpytest(*UNUSED_PLUGINS, "claims", "--model", "tiny-stories-8M", "--report-dir", "out")
    result.assert_outcomes(passed=1)
    (line,) = [line for line in result.stdout.lines if "claims report" in line]
    prefix = f"claims report NOT written: cannot write the report: {claims_pytester.path / 'out'} is a file, not a directory; the results are saved in "
    assert line.startswith(prefix)
    saved = Path(line.removeprefix(prefix))
    try:
        (row,) = load_results(saved)["results"]
        assert row["status"] == "passed" and row["quantities"][0]["measured"] == 9.4
    finally:
        shutil.rmtree(saved.parent)


def test_a_rerun_replaces_the_older_report_as_a_whole(claims_pytester):
    claims_pytester.runpytest(*UNUSED_PLUGINS, "claims", "--model", "tiny-stories-8M", "--report-dir", "base")
    claims_pytester.runpytest(*UNUSED_PLUGINS, "claims", "--model", "tiny-stories-8M", "--report-dir", "out", "--baseline", "base")
    assert (claims_pytester.path / "out" / "comparison.csv").exists()
    claims_pytester.runpytest(*UNUSED_PLUGINS, "claims", "--model", "gpt2-small", "--report-dir", "out")
    out = claims_pytester.path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["index.html", "results.json"]
    started = load_results(out)["run"]["started_utc"]
    assert started in (out / "index.html").read_text() and {r["spec"] for r in load_results(out)["results"]} == {"gpt2-small"}


PASSING_CLAIM = '''
@pytest.mark.claim("E2.logit-diff")
def test_b_would_pass(subject, check):
    check(Measured({"logit_diff": 9.4}))
'''
STOPPING_CLAIMS = FAKE_CLAIMS.split("@pytest.mark.claim")[0] + '''
@pytest.mark.claim("E2.logit-diff")
def test_a_stops(subject, check):
    STOP
''' + PASSING_CLAIM


@pytest.mark.parametrize("stop, args, not_run", [("raise KeyboardInterrupt", (), 1), ("assert False", ("-x",), 1)], ids=["ctrl-c", "-x"])
def test_an_interrupted_runs_report_says_so(claims_pytester, stop, args, not_run):
    # Ctrl-C in the second claim test (the first measured); -x after the first fails
    claims = STOPPING_CLAIMS.replace("STOP", stop)
    if stop == "raise KeyboardInterrupt":
        header, stopping, passing = claims.partition("@pytest.mark.claim")[0], *claims.split("@pytest.mark.claim")[1:]
        claims = header + "@pytest.mark.claim" + passing + "@pytest.mark.claim" + stopping
    claims_pytester.path.joinpath("claims", "test_fake_claims.py").write_text(claims)
    # inline_run: runpytest would re-raise the Ctrl-C into this test
    claims_pytester.inline_run(*UNUSED_PLUGINS, "claims", "--model", "tiny-stories-8M", "--report-dir", "out", *args, no_reraise_ctrlc=True)
    data = load_results(claims_pytester.path / "out")
    assert data["run"]["interrupted"] is True and data["run"]["not_run"] == not_run == data["counts"]["not run"]
    assert f"interrupted: {not_run} of 2 claims not run" in (claims_pytester.path / "out" / "index.html").read_text()


def test_a_whole_run_is_not_marked_interrupted(claims_pytester):
    claims_pytester.path.joinpath("claims", "test_fake_claims.py").write_text(STOPPING_CLAIMS.replace("STOP", "assert False"))
    claims_pytester.runpytest(*UNUSED_PLUGINS, "claims", "--model", "tiny-stories-8M", "--report-dir", "out")
    assert load_results(claims_pytester.path / "out")["run"]["interrupted"] is False
    assert "interrupted:" not in (claims_pytester.path / "out" / "index.html").read_text()


def test_a_run_killed_while_writing_its_report_loses_nothing(claims_pytester, monkeypatch, tmp_path):
    claims_pytester.path.joinpath("claims", "test_fake_claims.py").write_text(STOPPING_CLAIMS.split("@pytest.mark.claim")[0] + PASSING_CLAIM)
    run = (*UNUSED_PLUGINS, "claims", "--model", "tiny-stories-8M", "--report-dir", "out")
    claims_pytester.runpytest(*run).assert_outcomes(passed=1)
    out = claims_pytester.path / "out"
    previous = {p.name: p.read_bytes() for p in out.iterdir()}

    paused = tmp_path / "paused"
    monkeypatch.setenv(PAUSE_AFTER_STAGING_ENV, str(paused))
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the subprocess imports claims.framework from the repository
    with open(tmp_path / "log", "w") as log:
        child = claims_pytester.popen([sys.executable, "-m", "pytest", *run], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 120
        while not paused.exists():
            assert child.poll() is None and time.monotonic() < deadline, (tmp_path / "log").read_text()
            time.sleep(0.1)
        staged = Path(paused.read_text())
        assert sorted(p.name for p in staged.iterdir()) == ["index.html", "results.json"]  # fully staged, not yet in place
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    assert {p.name: p.read_bytes() for p in out.iterdir()} == previous
    assert staged.exists()  # the killed writer's leftover, for the next run to sweep

    monkeypatch.delenv(PAUSE_AFTER_STAGING_ENV)
    claims_pytester.runpytest(*run).assert_outcomes(passed=1)
    assert sorted(p.name for p in out.parent.iterdir() if p.name.startswith((".out", "out"))) == ["out"]
    assert load_results(out)["run"]["started_utc"] != json.loads(previous["results.json"])["run"]["started_utc"]


FAKE_CARD = '''
import pytest
from claims.framework import Measured

@pytest.mark.claim("circuit-card")
def test_card(subject, check):
    check(Measured({"logit_diff": 1.5}, details={"card": {"name movers": "H7.7 (+1.00)"}}))
'''


def test_a_claim_without_rows_that_ran_is_measured_and_every_row_names_its_model_identity(claims_pytester):
    claims_pytester.path.joinpath("claims", "test_fake_card.py").write_text(FAKE_CARD)
    result = claims_pytester.runpytest(*UNUSED_PLUGINS, "claims/test_fake_card.py", "--model", "planted:gpt2-small",
                                       "--report-dir", "out")
    assert result.ret == 0 and result.parseoutcomes() == {"measured": 1}  # the console's word is the page's
    (row,) = load_results(claims_pytester.path / "out")["results"]
    assert row["status"] == "measured" and row["quantities"][0]["passed"] is None
    assert row["identity"].startswith("planted twin of gpt2-small")


def test_collect_only_writes_no_report(claims_pytester):
    result = claims_pytester.runpytest(*UNUSED_PLUGINS, "claims", "--co", "--model", "tiny-stories-8M", "--report-dir", "out")
    assert result.ret == 0 and not (claims_pytester.path / "out").exists()
