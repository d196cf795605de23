"""The report in a real browser: Debian's chromium, headless, on a report built from a fixture run (fake
ClaimResults with real matplotlib figures). The page's own `?selftest` script measures it (overflow,
decoded images, overview links, filters, external URLs) and writes JSON into <pre id="selftest">, read
back with --dump-dom; a net log shows whether the page asked the network for anything.

Skipped with one line where chromium is absent (.ci/install-chromium installs it). Set
REPORT_SCREENSHOT_DIR to keep the overview screenshot and its report (e.g. as a CI artifact)."""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
import torch
from matplotlib.figure import Figure

from mechinterp.plots.sae import attention_before_after
from mechinterp.compare import compare_results
from mechinterp.report import main, write_report
from mechinterp.results import ClaimResult, QuantityResult, RunInfo, figure_to_png, results_to_dict

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("chromium not installed (.ci/install-chromium installs Debian's package)", allow_module_level=True)

# Quiet, headless, 1280 x 800, no browser-own traffic; the virtual time budget lets the load event
# (and the selftest it runs) finish before the DOM is dumped.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1280,800",
         "--virtual-time-budget=5000", "--no-first-run", "--disable-extensions", "--disable-sync",
         "--disable-background-networking", "--disable-component-update", "--disable-default-apps"]
MODELS = ["planted:tinystories-8m", "tiny-stories-8M", "gpt2-small", "/data/checkpoints/a-rather-long-local-directory-name/TinyStories-8M"]
LONG_WHY = ("thesis s3.4: the mean logit difference over the protocol prompts is 9.4 for TinyStories-8M; the band "
            "of ± 0.15 is the spread of the per-prompt means over resampled name sets, so a value outside it is a "
            "different model, not noise. " * 3)


def browser(url: str, profile: Path, *extra: str) -> str:
    run = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *extra, url],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout


def q(name, measured, thesis, rule, passed, why="thesis s3.4: the value the thesis reports, with its tolerance."):
    return QuantityResult(name, measured, thesis, None, None, None, rule, why, passed)


def attention_figure():
    tokens = ["When", "ĠMary", "Ġand", "ĠJohn", "Ġwent", "Ġto", "Ġthe", "Ġstore", ",", "ĠJohn", "Ġgave", "Ġa", "Ġdrink", "Ġto"]
    before = torch.softmax(torch.randn(len(tokens), len(tokens), generator=torch.Generator().manual_seed(0)), -1).tril()
    return attention_before_after(before, before.flip(-1).tril(), tokens, "H7.7 before / after ablating feature 44")


def wide_figure():  # wider than the page: it must scale down, not push the page sideways
    figure = Figure(figsize=(18, 3))
    figure.add_subplot().plot(range(10), [v * v for v in range(10)])
    return figure


def sae_details(variance: float) -> dict:
    return {"sae_hook": "blocks.5.hook_resid_post", "sae_width": 1024, "sae_quality": {"explained_variance": variance, "l0": 2.26}}


# Three seeds' SAEs, one of them low: the lines under an E3 row must fit the page like the rest.
E3_DETAILS = {**sae_details(0.65), "sae_seed_details": {str(seed): sae_details(v) for seed, v in enumerate((0.65, 0.91, 0.88))}}


def fixture_results() -> list[ClaimResult]:
    planted, small, gpt2, local = MODELS
    return [
        ClaimResult("E2.logit-diff", planted, "tiny-stories-8M", True, "passed",
                    quantities=[q("logit_diff", 9.36, 9.4, "logit_diff within 9.4 ± 0.15", True, LONG_WHY)],
                    figure_png=figure_to_png(wide_figure()), details={"per_prompt": [9.0, 9.82] * 20}),
        ClaimResult("E2.logit-diff", small, small, False, "failed", "logit_diff = 7.1 fails 'logit_diff within 9.4 ± 0.15'",
                    [q("logit_diff", 7.1, 9.4, "logit_diff within 9.4 ± 0.15", False, LONG_WHY)]),
        ClaimResult("E2.logit-diff", gpt2, gpt2, False, "skipped", "weights of gpt2-small are not in the HF cache: " + "x" * 300),
        ClaimResult("E2.logit-diff", local, small, False, "passed", identity="local directory, identified as tiny-stories-8M by its config",
                    quantities=[q("logit_diff", 9.41, 9.4, "logit_diff within 9.4 ± 0.15", True)]),
        ClaimResult("E3.L5-to-feature", planted, "tiny-stories-8M", True, "known gap", "the twin's SAE cannot show it",
                    [q("p_io_ablated_over_clean_with_a_long_quantity_name_that_must_wrap", 0.4, 0.062, "p_io_ablated <= 0.15", False)],
                    figure_png=figure_to_png(attention_figure()), details=E3_DETAILS),
        ClaimResult("E1.dup-weak", small, small, False, "error", "RuntimeError: <script>boom</script>"),
        ClaimResult("circuit-card", gpt2, gpt2, False, "measured", quantities=[QuantityResult("logit_diff", 3.3)],
                    details={"card": {"name movers": ["H9.9", "H9.6", "H10.0"], "S2 -> END handover layer": 8}}),
    ]


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    run = RunInfo("2025-01-01 00:00:00 UTC", "2025-01-01 00:01:00 UTC", MODELS, "pytest claims", {"torch": "2.13.0"})
    baseline = fixture_results()
    baseline[1].quantities[0].measured = 9.38  # the regression table is on the page too
    changes = compare_results(results_to_dict(run, fixture_results()), results_to_dict(run, baseline))
    return write_report(run, fixture_results(), tmp_path_factory.mktemp("report") / "run", changes, "reports/2024-12-31")


@pytest.fixture(scope="module")
def selftest(report, tmp_path_factory) -> dict:
    dom = browser(report.as_uri() + "?selftest", tmp_path_factory.mktemp("profile"), "--dump-dom")
    found = re.search(r'<pre id="selftest">(.*?)</pre>', dom, re.S)
    assert found, "the page's selftest wrote nothing"
    return json.loads(found.group(1))


def test_no_horizontal_scrolling_at_1280(selftest):
    assert selftest["innerWidth"] == 1280 and 0 < selftest["scrollWidth"] <= 1280
    assert selftest["scrolledInside"] == []


def test_the_changes_since_baseline_are_one_line_with_the_changed_rows_collapsed_under_it(selftest):
    changes = selftest["changes"]  # the fixture's baseline differs in one value of one claim
    assert changes["lines"] == 1 and not changes["shownCollapsed"] and changes["shownOpen"]
    assert changes["collapsedHeight"] == changes["summaryHeight"] < changes["openHeight"]


def test_every_figure_is_decoded(selftest):
    assert len(selftest["images"]) == 2 and all(i["complete"] and i["naturalWidth"] > 0 for i in selftest["images"])


def test_every_overview_link_lands_on_its_section(selftest):
    claims = {"#E1.dup-weak", "#E2.logit-diff", "#E3.L5-to-feature", "#circuit-card"}
    assert {link["href"] for link in selftest["links"]} == claims
    assert all(link["target"] and link["landed"] for link in selftest["links"]), selftest["links"]


def test_filters_hide_and_show_rows(selftest):
    planted, small, gpt2, local = MODELS
    everything = ["E1.dup-weak", "E2.logit-diff", "E3.L5-to-feature", "circuit-card"]
    assert selftest["byStatus"] == {"": everything, "passed": ["E2.logit-diff"], "measured": ["circuit-card"],
                                    "failed": ["E2.logit-diff"], "known gap": ["E3.L5-to-feature"],
                                    "skipped": ["E2.logit-diff"], "error": ["E1.dup-weak"]}
    assert selftest["byModel"][""] == {"columns": MODELS, "claims": everything, "results": 7}
    assert selftest["byModel"][planted] == {"columns": [planted], "claims": ["E2.logit-diff", "E3.L5-to-feature"], "results": 2}
    assert selftest["byModel"][gpt2] == {"columns": [gpt2], "claims": ["E2.logit-diff", "circuit-card"], "results": 2}


def page_requests(netlog: Path) -> list[str]:
    """URLs the page itself asked for (its network isolation key is the file:// site; the browser's
    own background requests carry none)."""
    log = json.loads(netlog.read_text())
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return [e["params"]["url"] for e in log["events"] if e["type"] == start
            and e.get("params", {}).get("network_isolation_key", "").startswith("file://")]


def test_nothing_is_fetched(report, selftest, tmp_path):
    assert selftest["external"] == []
    browser(report.as_uri() + "?selftest", tmp_path / "profile", f"--log-net-log={tmp_path / 'report.json'}", "--dump-dom")
    assert page_requests(tmp_path / "report.json") == []
    # The log sees a page's request, and the report's Content-Security-Policy blocks one injected into it.
    probe = '<img src="http://127.0.0.1:9/probe.png">'
    (tmp_path / "plain.html").write_text(f"<!DOCTYPE html>{probe}")
    (tmp_path / "injected.html").write_text(report.read_text().replace("</h1>", "</h1>" + probe))
    for name in ("plain", "injected"):
        browser((tmp_path / f"{name}.html").as_uri(), tmp_path / "profile", f"--log-net-log={tmp_path / name}.json", "--dump-dom")
    assert page_requests(tmp_path / "plain.json") == ["http://127.0.0.1:9/probe.png"]
    assert page_requests(tmp_path / "injected.json") == []


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def test_a_screenshot_of_the_overview_is_written_beside_the_report(report, tmp_path):
    screenshot = report.parent / "overview.png"
    browser(report.as_uri(), tmp_path / "profile", f"--screenshot={screenshot}")
    assert png_size(screenshot) == (1280, 800) and screenshot.stat().st_size > 20_000  # not a blank page
    keep = os.environ.get("REPORT_SCREENSHOT_DIR")
    if keep:
        shutil.copytree(report.parent, keep, dirs_exist_ok=True)


def test_the_merged_page_fits_1280_too(report, tmp_path):
    out = tmp_path / "merged"
    assert main(["merge", str(report.parent), "--out", str(out)]) == 0
    dom = browser((out / "index.html").as_uri() + "?selftest", tmp_path / "profile", "--dump-dom")
    found = json.loads(re.search(r'<pre id="selftest">(.*?)</pre>', dom, re.S).group(1))
    assert found["scrollWidth"] <= found["innerWidth"] == 1280 and found["external"] == [] and found["links"] == []
    assert found["byModel"]["gpt2-small"]["columns"] == ["gpt2-small"]


def test_an_e3_row_names_each_seeds_sae_and_tags_the_low_one(report, tmp_path):
    dom = browser(report.as_uri(), tmp_path / "profile", "--dump-dom")
    lines = re.findall(r'<p class="sae"><small>(.*?)</small></p>', dom, re.S)
    assert [re.sub(r"<[^>]+>", "", line).split(":")[0] for line in lines] == ["SAE seed 0", "SAE seed 1", "SAE seed 2"]
    assert [">low<" in line for line in lines] == [True, False, False]
