"""The claims x models matrix and several runs merged into one page (`python -m mechinterp.report merge`)."""

from __future__ import annotations

from pathlib import Path


from mechinterp.report import main, write_report
from mechinterp.results import (
    ClaimResult, QuantityResult, RunInfo, load_results,
)

from tests.test_report import run_info, sample_results
ROOT = Path(__file__).resolve().parents[1]


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
