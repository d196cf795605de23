"""The claims machinery: threshold rows, the HTML/JSON report, compare_results, and the pytest plugin
end to end (a claims run with fake models that passes, fails, skips and errors)."""

from __future__ import annotations

import errno
import fnmatch
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from claims.claim import claim
from claims.thesis.thresholds import THRESHOLDS
from claims.thresholds import Threshold, lookup_all
from mechinterp.models import missing_weights_message
from mechinterp.compare import compare_results
from mechinterp.report import PAUSE_AFTER_STAGING_ENV, ReportDirError, ReportWriteError, check_report_dir, main, write_report
from tests.plugin_fakes import FAKE_CLAIMS, UNUSED_PLUGINS, claims_pytester  # noqa: F401 - a fixture
from mechinterp.results import (
    ClaimResult, QuantityResult, ResultsFileError, RunInfo, check_baseline, figure_to_png, load_results, results_to_dict,
    save_results_fallback,
)

ROOT = Path(__file__).resolve().parents[1]


# --- threshold rows ---


def row(op, threshold, tolerance=None, model="tiny-stories-8M"):
    return Threshold("X.claim", model, "q", 1.0, op, threshold, tolerance, "because")


@pytest.mark.parametrize(
    "op, threshold, tolerance, value, passes",
    [
        (">=", 1.0, None, 1.0, True), (">=", 1.0, None, 0.999, False),
        (">", 1.0, None, 1.0, False), (">", 1.0, None, 1.001, True),
        ("<=", 1.0, None, 1.0, True), ("<=", 1.0, None, 1.001, False),
        ("<", 1.0, None, 1.0, False), ("<", 1.0, None, 0.999, True),
        ("within", 9.4, 0.15, 9.25, True), ("within", 9.4, 0.15, 9.55, True),
        ("within", 9.4, 0.15, 9.2, False), ("within", 9.4, 0.15, 9.6, False),
        ("within", 9.4, 0.15, math.nan, False), (">", 0.0, None, math.nan, False), ("<", 0.0, None, math.nan, False),
    ],
)
def test_threshold_passes(op, threshold, tolerance, value, passes):
    assert row(op, threshold, tolerance).passes(value) is passes


def test_threshold_describe():
    assert row("within", 9.4, 0.15).describe() == "q within 9.4 ± 0.15"
    assert row(">", 3.6).describe() == "q > 3.6"


def test_bad_threshold_rows_are_rejected():
    with pytest.raises(ValueError, match="op '=>' is not one of"):
        row("=>", 1.0)
    with pytest.raises(ValueError, match="'within' needs a tolerance >= 0"):
        row("within", 1.0)
    with pytest.raises(ValueError, match="needs a 'why'"):
        Threshold("X.claim", "gpt2-small", "q", None, ">", 0.0, None, "  ")


def test_family_rows_apply_to_the_whole_tinystories_family_only():
    family = row(">", 0.0, model="tiny-stories-*")
    assert family.family_wide and not row(">", 0.0).family_wide
    assert all(family.applies_to(m) for m in ("tiny-stories-1M", "tiny-stories-3M", "tiny-stories-8M", "tiny-stories-28M", "tiny-stories-33M"))
    assert not family.applies_to("gpt2-small")
    assert row(">", 0.0).applies_to("tiny-stories-8M") and not row(">", 0.0).applies_to("tiny-stories-28M")


def test_planted_specs_use_their_real_counterparts_rows():
    assert lookup_all("E2.logit-diff", "planted:tinystories-8m") == lookup_all("E2.logit-diff", "tiny-stories-8M") != []
    assert lookup_all("E2.logit-diff", "planted:gpt2-small/no-s-inhibition") == lookup_all("E2.logit-diff", "gpt2-small") != []
    assert lookup_all("E2.logit-diff", "tiny-stories-1M") == []


def test_every_row_states_its_reason_and_a_known_claim_id():
    for r in THRESHOLDS:
        assert r.claim.split(".")[0] in ("E0", "E1", "E2", "E3"), r  # E0: the TinyStories family (thesis s3.2)
        assert len(r.why) > 30, f"{r.claim}/{r.quantity} on {r.model}: 'why' must state thesis value, tolerance and reason"


def test_logit_diff_rows_separate_the_two_models():
    # Each model's thesis value (and GPT-2 small's public 3.55) passes its own rows and fails the other's:
    # the claim can fail, and a model with the other model's behaviour would fail it.
    def all_pass(spec, value):
        return all(r.passes(value) for r in lookup_all("E2.logit-diff", spec))

    assert all_pass("tiny-stories-8M", 9.4) and all_pass("gpt2-small", 3.6) and all_pass("gpt2-small", 3.55)
    assert not all_pass("tiny-stories-8M", 3.6) and not all_pass("gpt2-small", 9.4)
    assert not all_pass("tiny-stories-8M", 9.0) and not all_pass("gpt2-small", 4.0)


# --- report ---


def quantity(measured, passed):
    return QuantityResult("logit_diff", measured, 9.4, "within", 9.4, 0.15, "logit_diff within 9.4 ± 0.15", "thesis s3.4", passed)


def a_figure():
    figure = Figure()
    figure.add_subplot().plot([0, 1], [1, 0])
    return figure


def declared(result: ClaimResult) -> ClaimResult:
    """The record with its claim's statement, as the framework fills it from the declaration."""
    result.statement, result.where = claim(result.claim).statement, claim(result.claim).where
    return result


def sample_results(planted: bool = True) -> list[ClaimResult]:
    return [declared(result) for result in [
        ClaimResult("E2.logit-diff", "planted:tinystories-8m" if planted else "tiny-stories-8M", "tiny-stories-8M", planted,
                    "passed", quantities=[quantity(9.41, True)], figure_png=figure_to_png(a_figure()), details={"per_prompt": [9.0, 9.82]}),
        ClaimResult("E2.logit-diff", "gpt2-small", "gpt2-small", False, "failed", "logit_diff = 5 fails <b>", [quantity(5.0, False)]),
        ClaimResult("E2.logit-diff", "tiny-stories-1M", "tiny-stories-1M", False, "skipped", "no threshold row"),
        ClaimResult("E1.dup-weak", "tiny-stories-8M", "tiny-stories-8M", False, "error", "RuntimeError: <script>boom</script>"),
    ]]


def run_info():
    return RunInfo("2025-01-01 00:00:00 UTC", "2025-01-01 00:01:00 UTC", ["planted:tinystories-8m", "gpt2-small"], "pytest claims", {"torch": "2.13.0"})


def test_report_is_self_contained_and_shows_every_status(tmp_path):
    index = write_report(run_info(), sample_results(), tmp_path)
    page = index.read_text()
    assert index == tmp_path / "index.html"
    for text in ("E2.logit-diff", "E1.dup-weak", "passed", "failed", "skipped", "error", "no threshold row",
                 "logit_diff within 9.4 ± 0.15", "thesis s3.4", "9.41", "torch 2.13.0", "pytest claims"):
        assert text in page, text
    assert "data:image/png;base64," in page
    assert '<a href="#E1.dup-weak">' in page  # overview grid links to each claim's table
    assert "<script>boom" not in page and "&lt;script&gt;boom" in page  # messages are escaped
    assert "http://" not in page and "https://" not in page  # no CDN, nothing fetched


def test_planted_subjects_get_a_banner_and_a_tag(tmp_path):
    page = write_report(run_info(), sample_results(planted=True), tmp_path / "p").read_text()
    assert page.index('class="banner"') < page.index("<h1>")
    assert "not evidence about the real models" in page
    assert page.count('class="tag"') == 1  # only the planted row
    clean = write_report(run_info(), sample_results(planted=False), tmp_path / "r").read_text()
    assert 'class="banner"' not in clean and 'class="tag"' not in clean


def test_a_page_that_cannot_render_keeps_the_results(tmp_path, monkeypatch):
    import mechinterp.report as report_module

    def broken(*args, **kwargs):
        raise KeyError("a template bug")

    monkeypatch.setattr(report_module, "render_html", broken)
    with pytest.raises(ReportWriteError, match="could not be rendered .KeyError.*results are saved in"):
        write_report(run_info(), sample_results(), tmp_path / "out")
    assert len(load_results(tmp_path / "out")["results"]) == len(sample_results())
    assert "could not be rendered" in (tmp_path / "out" / "index.html").read_text()


def test_results_json_holds_the_table(tmp_path):
    write_report(run_info(), sample_results(), tmp_path)
    data = load_results(tmp_path)
    assert data["planted_in_run"] is True
    assert data["counts"] == {"passed": 1, "measured": 0, "failed": 1, "known gap": 0, "skipped": 1, "error": 1, "not run": 0}
    first = data["results"][0]
    assert first["has_figure"] is True and first["details"] == {"per_prompt": [9.0, 9.82]}
    assert first["quantities"][0] == {"quantity": "logit_diff", "measured": 9.41, "thesis_value": 9.4, "op": "within",
                                      "threshold": 9.4, "tolerance": 0.15, "rule": "logit_diff within 9.4 ± 0.15",
                                      "why": "thesis s3.4", "passed": True, "calibrated": False}


RESULTS_SHAPE_FAULTS = [
    ('{"foo": 1}', "no 'run' or 'results' entry"),
    ("[1, 2]", "expected a JSON object with 'run' and 'results', got a list"),
    ('{"run": {}, "results": {}}', "'results' is not a list"),
    ('{"run": {}, "results": [{"claim": "E2.x", "spec": "m", "status": "passed"}]}', "results[0] has no 'quantities'"),
    ('{"run": {}, "results": [{"claim": "E2.x", "spec": "m", "status": "passed", "quantities": [{"measured": 1}]}]}',
     "results[0].quantities[0] is not an object with a 'quantity'"),
    ('{"run": {}, "results": [', "not valid JSON (Expecting value at line 1"),
]


@pytest.mark.parametrize("text, fault", RESULTS_SHAPE_FAULTS)
def test_load_results_names_the_file_and_the_fault(tmp_path, text, fault):
    (tmp_path / "results.json").write_text(text)
    with pytest.raises(ResultsFileError) as raised:
        load_results(tmp_path)  # a run directory stands for its results.json
    message = str(raised.value)
    assert message.startswith(f"{tmp_path / 'results.json'}: ") and fault in message and "\n" not in message


def test_load_results_of_a_missing_file(tmp_path):
    with pytest.raises(ResultsFileError, match=f"^{tmp_path / 'nowhere.json'}: no such file$"):
        load_results(tmp_path / "nowhere.json")
    with pytest.raises(ResultsFileError, match="results.json: no such file$"):
        load_results(tmp_path)  # an empty run directory


def test_baseline_may_not_be_the_results_this_run_writes(tmp_path):
    write_report(run_info(), sample_results(), tmp_path / "old")
    (tmp_path / "link").symlink_to(tmp_path / "old")
    for baseline, report_dir in [("old", "old"), ("old/results.json", "old"), ("link", "old"), ("old", "link")]:
        with pytest.raises(ResultsFileError, match="is inside the report directory this run writes"):
            check_baseline(tmp_path / baseline, tmp_path / report_dir)
    assert check_baseline(tmp_path / "old", tmp_path / "new")["results"][0]["claim"] == "E2.logit-diff"
    with pytest.raises(ResultsFileError, match="no such file"):
        check_baseline(tmp_path / "missing", tmp_path / "new")


def test_report_dir_is_checked_before_the_run(tmp_path):
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    write_report(run_info(), sample_results(), tmp_path / "older-report")
    assert check_report_dir(tmp_path / "new" / "deeper") == (tmp_path / "new" / "deeper").resolve()
    assert check_report_dir(tmp_path / "older-report") == tmp_path / "older-report"
    with pytest.raises(ReportDirError, match="a-file is a file, not a directory$"):
        check_report_dir(tmp_path / "a-file")
    with pytest.raises(ReportDirError, match="cannot be created: .*a-file is a file$"):
        check_report_dir(tmp_path / "a-file" / "report")
    with pytest.raises(ReportDirError, match=r"holds files that are not a claims report \(notes.txt\)"):
        check_report_dir(tmp_path / "other")  # replacing it as a whole would delete the user's files


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions, so nothing is read-only to it")
def test_read_only_report_dir_is_refused(tmp_path):
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro").chmod(0o555)
    try:
        with pytest.raises(ReportDirError, match="cannot be written: .*ro is not writable"):
            check_report_dir(tmp_path / "ro" / "report")
        with pytest.raises(ReportWriteError, match="ro is not writable"):
            write_report(run_info(), sample_results(), tmp_path / "ro" / "report")
    finally:
        (tmp_path / "ro").chmod(0o755)


def siblings(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.parent.iterdir())


def test_an_older_report_is_replaced_as_a_whole(tmp_path):
    out = tmp_path / "out"
    old_results = sample_results()
    write_report(run_info(), old_results, out, changes=compare_results(results_to_dict(run_info(), old_results), results_to_dict(run_info(), old_results)))
    assert sorted(p.name for p in out.iterdir()) == ["comparison.csv", "index.html", "results.json"]
    newer = RunInfo("2025-02-02 00:00:00 UTC", "2025-02-02 00:01:00 UTC", ["gpt2-small"])
    write_report(newer, sample_results()[1:2], out)
    assert sorted(p.name for p in out.iterdir()) == ["index.html", "results.json"]  # no stale comparison.csv
    assert load_results(out)["run"]["started_utc"] == "2025-02-02 00:00:00 UTC"
    assert "2025-02-02 00:00:00 UTC" in (out / "index.html").read_text()
    assert siblings(out) == ["out"]  # no staging or moved-aside directory left


def test_a_failed_write_is_one_error_and_keeps_the_older_report(tmp_path, monkeypatch):
    out = tmp_path / "out"
    write_report(run_info(), sample_results(), out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real_write_text = Path.write_text

    def disk_full_at_the_page(self, text, *args, **kwargs):
        if self.name == "index.html":
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real_write_text(self, text, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", disk_full_at_the_page)
    with pytest.raises(ReportWriteError, match=f"^cannot write the report to {out}: No space left on device .*index.html"):
        write_report(run_info(), sample_results()[1:], out)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before and siblings(out) == ["out"]
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(ReportWriteError, match="a-file is a file, not a directory"):
        write_report(run_info(), sample_results(), tmp_path / "a-file")


def test_a_report_that_cannot_be_put_in_place_keeps_the_older_one(tmp_path, monkeypatch):
    out = tmp_path / "out"
    write_report(run_info(), sample_results(), out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real_rename = Path.rename

    def staged_rename_fails(self, target):
        if ".staging-" in self.name:
            raise OSError(errno.EXDEV, "Invalid cross-device link", str(self))
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", staged_rename_fails)
    with pytest.raises(ReportWriteError, match="Invalid cross-device link"):
        write_report(run_info(), sample_results()[1:], out)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before and siblings(out) == ["out"]


def test_results_saved_to_the_fallback_load_back(tmp_path):
    document = results_to_dict(run_info(), sample_results())
    saved = save_results_fallback(document)
    try:
        assert saved.name == "results.json" and saved.parent.parent == Path(tempfile.gettempdir())
        assert load_results(saved) == document
    finally:
        shutil.rmtree(saved.parent)


def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()  # reaped: its pid names no process now
    return child.pid


def test_leftovers_of_killed_writers_are_swept_and_live_ones_kept(tmp_path):
    out = tmp_path / "out"
    for name in (f".out.staging-{dead_pid()}-ab12", f".out.replaced-{dead_pid()}-cd34", f".out.staging-{os.getpid()}-ef56", ".out.keep-me"):
        (tmp_path / name).mkdir()
    write_report(run_info(), sample_results(), out)
    assert siblings(out) == [".out.keep-me", f".out.staging-{os.getpid()}-ef56", "out"]


def test_an_interrupted_run_says_so_at_the_top(tmp_path):
    stopped = RunInfo("2025-01-01 00:00:00 UTC", "2025-01-01 00:01:00 UTC", ["gpt2-small"], interrupted=True, not_run=3)
    page = write_report(stopped, sample_results(), tmp_path / "stopped").read_text()
    assert page.index("interrupted: 3 of 4 claims not run") < page.index("<h1>")
    assert load_results(tmp_path / "stopped")["run"]["interrupted"] is True
    assert "interrupted:" not in write_report(run_info(), sample_results(), tmp_path / "whole").read_text()


def test_model_identity_is_shown_beside_the_spec(tmp_path):
    results = sample_results()
    results[1].identity = "local directory, identified as gpt2-small by its config"
    page = write_report(run_info(), results, tmp_path).read_text()
    assert '<small class="identity">local directory, identified as gpt2-small by its config</small>' in page
    assert page.count('class="identity"') == 1  # only where one is known


def test_a_claim_section_states_the_claim_with_its_quantities_and_each_reason_under_its_row(tmp_path):
    page = write_report(run_info(), sample_results(), tmp_path).read_text()
    section = page[page.index('<section class="claim" id="E2.logit-diff">'):]
    section = section[:section.index("</section>")]
    assert '<p class="statement">Mean logit difference IO - S: 9.4 in TinyStories-8M, 3.6 in GPT-2 small.' in section
    assert "<tr><th>Quantity</th><th>Measured</th><th>Thesis</th><th>Rule</th><th>Status</th></tr>" in section
    assert ('<tr><td>logit_diff</td><td class="num">9.41</td><td class="num">9.4</td><td>logit_diff within 9.4 ± 0.15</td>\n'
            '<td class="passed">✓</td></tr>\n<tr class="why"><td colspan="5"><details><summary>why</summary>thesis s3.4</details></td></tr>') in section
    assert section.count('<div class="result"') == 3 and section.count("<img ") == 1  # one block per model


def test_every_thesis_inconsistency_touches_claims_and_rows_that_exist():
    from mechinterp.report import THESIS_INCONSISTENCIES

    assert THESIS_INCONSISTENCIES
    for entry in THESIS_INCONSISTENCIES:
        assert entry["note"].strip() and entry["claims"], entry
        for claim_id in entry["claims"]:
            assert claim(claim_id).id == claim_id
            rows = {t.quantity for t in THRESHOLDS if t.claim == claim_id}
            assert set(entry["quantities"]) <= rows, (claim_id, set(entry["quantities"]) - rows)


def test_a_thesis_inconsistency_is_stated_under_the_rows_and_sections_it_touches(tmp_path):
    # the thesis's contradictions were in DESIGN.md only, not on the rows a reader checks
    quantities = [QuantityResult(q, -3.0, -7.79, "<", -0.01, rule=f"{q} < -0.01", why="table 3.8", passed=True)
                  for q in ("attribution", "name_share_top_contexts")]
    result = declared(ClaimResult("E3.L6-negative-names", "tiny-stories-8M", "tiny-stories-8M", False, "passed", quantities=quantities))
    page = write_report(run_info(), [result], tmp_path).read_text()
    section = page[page.index('<section class="claim" id="E3.L6-negative-names">'):]
    attribution, other = section.index("<tr><td>attribution</td>"), section.index("<tr><td>name_share_top_contexts</td>")
    note = "Feature 2837&#39;s attribution is +2.07 in table 3.6 and -7.79 in table 3.8"
    assert section.count(note) == 1 and attribution < section.index(note) < other  # under its row only
    layers = section.index("its sections call the same SAEs layers 5, 6 and 7")  # a note on the claim: under its statement
    assert section.index('<p class="statement">') < layers < section.index('<div class="result"')


def test_known_gaps_not_applied_under_sae_config_are_said_in_one_line(tmp_path):
    # README's SAE-regression workflow: under --sae-config a gap measured with the default SAEs does not apply
    from claims.thesis.thresholds import KNOWN_GAPS
    from mechinterp.report import unapplied_known_gaps_note

    twin = "planted:tinystories-8m"
    collected = {("E3.L5-to-feature", twin), ("E3.L6-negative-names", twin), ("E2.logit-diff", twin)}
    assert unapplied_known_gaps_note(KNOWN_GAPS, collected, {"sae_config": None, "sae_dir": None}) == ""
    note = unapplied_known_gaps_note(KNOWN_GAPS, collected, {"sae_config": "changed.json", "sae_dir": None})
    assert note == ("2 known gap(s) not applied under --sae-config (each was measured without it), so these claim tests are "
                    "checked plainly and a failure reads 'failed': E3.L5-to-feature [planted:tinystories-8m], "
                    "E3.L6-negative-names [planted:tinystories-8m]")
    page = write_report(run_info(), sample_results(), tmp_path, run_notes=[note]).read_text()
    assert page.count("known gap(s) not applied under --sae-config") == 1


def test_calibrated_quantities_are_tagged_in_their_row():
    from mechinterp.report import _result_rows

    calibrated = quantity(9.36, True)
    calibrated.calibrated = True
    block = _result_rows(ClaimResult("E2.logit-diff", "planted:tinystories-8m", "tiny-stories-8M", True, "passed",
                                     quantities=[calibrated, quantity(9.36, True)]))
    assert block.count('<td class="passed">✓ <span class="tag calibrated"') == 1 and block.count("calibrated by construction") == 1


def test_report_figures_label_tokens_as_text_and_waste_no_height():
    import torch
    from mechinterp.plots import readable_token
    from mechinterp.plots.sae import attention_before_after

    assert [readable_token(t) for t in ("ĠJohn", "Ċ", "When", " John", "é", "Ã©")] == [" John", "\\n", "When", " John", "é", "é"]
    tokens = ["When", "ĠMary", "Ġand", "ĠJohn", "Ġwent", "Ġto", "Ġthe", "Ġstore", ",", "ĠJohn", "Ġgave", "Ġa", "Ġdrink", "Ġto"]
    pattern = torch.full((len(tokens), len(tokens)), 1 / len(tokens))
    figure = attention_before_after(pattern, pattern, tokens, "H7.7")
    assert [t.get_text() for t in figure.axes[0].get_yticklabels()][:2] == ["When", " Mary"]
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    renderer = canvas.get_renderer()
    patterns = [a.get_tightbbox(renderer) for a in figure.axes[:2]]  # pixels, titles and token labels included
    drawn = figure.get_tightbbox(renderer).height * figure.dpi  # what the report's PNG keeps (bbox_inches="tight")
    # the patterns fill the height but for the two-line title (0.78 before, with a one-line title)
    assert (max(p.y1 for p in patterns) - min(p.y0 for p in patterns)) / drawn > 0.85


# --- the claims x models matrix and merged runs ---


def card(spec, name_movers, handover):
    return ClaimResult("circuit-card", spec, spec, False, "passed", quantities=[QuantityResult("logit_diff", 3.3)],
                       details={"card": {"name movers": name_movers, "S2 -> END handover layer": handover}})


def test_a_multi_model_report_has_the_matrix_with_key_values(tmp_path):
    results = sample_results() + [card("gpt2-small", ["H9.9", "H10.0"], 8)]
    page = write_report(run_info(), results, tmp_path).read_text()
    overview = page[page.index('<h2 id="overview">Overview</h2>'):page.index("</table>", page.index('<h2 id="overview">'))]
    assert '<td data-model="planted:tinystories-8m" data-status="passed" class="passed">passed<br><span class="num">9.41 / 9.4</span></td>' in overview
    assert '<td data-model="gpt2-small" data-status="failed" class="failed">failed<br><span class="num">5 / 9.4</span></td>' in overview
    # the card's status too: an errored card shows
    assert '<td data-model="gpt2-small" data-status="passed" class="passed">passed<br><span class="num">3.3</span></td>' in overview
    assert "Mean logit difference IO - S: 9.4 in TinyStories-8M, 3.6 in GPT-2 small." in overview  # the claim in words
    assert "<th>name movers</th><td>H9.9, H10.0</td>" in page


def test_merge_puts_runs_side_by_side(tmp_path, capsys):
    small = RunInfo("2025-03-01 00:00:00 UTC", "", ["tiny-stories-8M"])
    gpt2 = RunInfo("2025-03-02 00:00:00 UTC", "", ["gpt2-small"], interrupted=True, not_run=1)
    write_report(small, [sample_results(planted=False)[0], card("tiny-stories-8M", ["H7.7"], 5)], tmp_path / "tox-8M")
    write_report(gpt2, [sample_results()[1], card("gpt2-small", ["H9.9", "H10.0"], 8)], tmp_path / "tox-gpt2")
    assert main(["merge", str(tmp_path / "tox-8M"), str(tmp_path / "tox-gpt2" / "results.json"), "--out", str(tmp_path / "all")]) == 0
    assert capsys.readouterr().out == (f"merged report: {tmp_path / 'all' / 'index.html'}\n"
                                       f"{tmp_path / 'tox-gpt2' / 'results.json'}: E2.logit-diff on gpt2-small: failed\n"
                                       f"{tmp_path / 'tox-gpt2' / 'results.json'}: interrupted: 1 claims not run\n")
    page = (tmp_path / "all" / "index.html").read_text()
    assert '<tr><th>Claim</th><th data-model="tiny-stories-8M">tiny-stories-8M</th><th data-model="gpt2-small">gpt2-small</th></tr>' in page
    assert ('<td data-model="tiny-stories-8M" data-status="passed" class="passed">passed<br><span class="num">9.41 / 9.4</span></td>'
            '<td data-model="gpt2-small" data-status="failed" class="failed">failed<br><span class="num">5 / 9.4</span></td></tr>') in page
    assert '<a href="#E2.logit-diff">' not in page  # the merged page has no claim sections to link to
    assert "<tr><th>name movers</th><td>H7.7</td><td>H9.9, H10.0</td></tr>" in page
    assert "<tr><th>S2 -&gt; END handover layer</th><td>5</td><td>8</td></tr>" in page
    assert "interrupted: 1 not run" in page
    assert 'class="banner"' not in page  # no planted model in these runs


def test_strict_merge_fails_on_a_failed_claim_after_writing_the_page(tmp_path):
    write_report(run_info(), sample_results()[:1], tmp_path / "good")
    assert main(["merge", str(tmp_path / "good"), "--out", str(tmp_path / "all"), "--strict"]) == 0
    write_report(run_info(), sample_results()[1:2], tmp_path / "bad")  # E2.logit-diff failed on gpt2-small
    assert main(["merge", str(tmp_path / "good"), str(tmp_path / "bad"), "--out", str(tmp_path / "all"), "--strict"]) == 1
    assert '<th data-model="gpt2-small">gpt2-small</th>' in (tmp_path / "all" / "index.html").read_text()


def test_merge_keeps_one_column_per_run_for_a_model_in_several_runs(tmp_path):
    for name in ("a", "b"):
        write_report(run_info(), sample_results()[1:2], tmp_path / name)
    assert main(["merge", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "all")]) == 0
    page = (tmp_path / "all" / "index.html").read_text()
    a, b = f"gpt2-small ({tmp_path / 'a'})", f"gpt2-small ({tmp_path / 'b'})"
    assert f'<th data-model="{a}">{a}</th><th data-model="{b}">{b}</th>' in page


def test_merge_expands_wildcards_itself_and_skips_its_own_output(tmp_path, monkeypatch):
    for name in ("tox-a", "tox-b"):
        write_report(RunInfo("", "", [name]), [ClaimResult("E2.logit-diff", name, name, False, "passed")], tmp_path / name)
    monkeypatch.chdir(tmp_path)
    for _ in range(2):  # the second time reports/tox-* also matches the merged page's directory
        assert main(["merge", "tox-*", "--out", "tox-matrix"]) == 0
    assert '<th data-model="tox-a">tox-a</th><th data-model="tox-b">tox-b</th>' in (tmp_path / "tox-matrix" / "index.html").read_text()
    assert main(["merge", "nothing-*", "--out", "tox-matrix"]) == 2


def test_merge_refuses_a_bad_run_or_writing_over_a_run(tmp_path, capsys):
    write_report(run_info(), sample_results(), tmp_path / "run")
    (tmp_path / "junk.json").write_text("[]")
    assert main(["merge", str(tmp_path / "run"), str(tmp_path / "junk.json"), "--out", str(tmp_path / "all")]) == 2
    assert capsys.readouterr().err == f"merge: {tmp_path / 'junk.json'}: expected a JSON object with 'run' and 'results', got a list\n"
    assert main(["merge", str(tmp_path / "run"), "--out", str(tmp_path / "run")]) == 2
    assert "is one of the runs being merged" in capsys.readouterr().err
    assert not (tmp_path / "all").exists() and load_results(tmp_path / "run")["results"]


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


def test_e3_results_show_each_seeds_sae_quality_and_mark_a_low_one(tmp_path):
    def sae(variance, architecture="gated"):
        return {"sae_hook": "blocks.6.hook_resid_post", "sae_architecture": architecture, "sae_width": 1024,
                "sae_quality": {"explained_variance": variance, "l0": 3.5}}

    details = {**sae(0.42), "sae_seed_details": {"0": sae(0.42), "1": sae(0.93, "topk")}}
    results = [ClaimResult("E3.L6-negative-names", "planted:tinystories-8m", "tiny-stories-8M", True, "passed",
                           quantities=[quantity(9.41, True)], details=details),
               ClaimResult("E3.L7-logit-feature", "planted:tinystories-8m", "tiny-stories-8M", True, "passed",
                           quantities=[quantity(9.41, True)], details={"sae_hook": "blocks.7.hook_resid_post", "sae_width": 64})]
    page = write_report(run_info(), results, tmp_path).read_text()
    assert "SAE seed 0: blocks.6.hook_resid_post, gated, 1024 features; held-out explained variance 0.42" in page
    assert "SAE seed 1: blocks.6.hook_resid_post, topk, 1024 features; held-out explained variance 0.93, L0 3.5" in page
    assert page.count('class="tag low-sae"') == 1  # seed 0 only
    # a run from before the architecture was recorded: none shown
    assert "SAE: blocks.7.hook_resid_post, 64 features; held-out explained variance not measured, L0 not measured" in page


def test_each_claim_shows_its_wall_time_and_its_stages(tmp_path):
    results = sample_results()
    results[0].seconds, results[0].stage_seconds = 12.34, {"distribution": 9.5}
    page = write_report(run_info(), results, tmp_path).read_text()
    assert '<small class="seconds" title="distribution 9.5 s">12.3 s</small>' in page
    assert load_results(tmp_path)["results"][0]["seconds"] == 12.34  # and results.json has it
