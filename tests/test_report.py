"""The HTML/JSON report: the page, results.json, atomic writing, the report directory, figures."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from claims.claim import claim
from claims.thesis.thresholds import THRESHOLDS
from mechinterp.compare import compare_results
from mechinterp.report import ReportDirError, ReportWriteError, check_report_dir, write_report
from mechinterp.results import (
    ClaimResult, QuantityResult, ResultsFileError, RunInfo, check_baseline, figure_to_png, load_results, results_to_dict,
    save_results_fallback,
)

ROOT = Path(__file__).resolve().parents[1]


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
