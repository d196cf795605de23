"""pytest plugin for the claims suite: --model / --report-dir, the `claim` marker, the `subject` and
`check` fixtures, and the HTML report written at session end.

Thin by design: the logic is in claims/framework.py (subjects, checks, the record) and
mechinterp/report.py (HTML and results.json). A report is written only when the session collected
claim tests, so `pytest tests/` leaves reports/ alone.
"""

from __future__ import annotations

import os
from pathlib import Path

import hypothesis
import pytest

from claims import framework
from mechinterp import compare, report, results

# Deterministic property tests, project-wide: examples derived from each test, no example database.
hypothesis.settings.register_profile("deterministic", derandomize=True, database=None)
hypothesis.settings.load_profile("deterministic")

pytest_plugins = ("pytester",)  # tests/test_report.py runs the plugin on fake claims

RECORDER = pytest.StashKey[framework.Recorder]()
REPORT_DIR = pytest.StashKey[Path]()  # checked at the start of the run
BASELINE = pytest.StashKey[dict]()  # --baseline, loaded once at the start of the run
REPORT_PATH = pytest.StashKey[Path]()
CHANGES = pytest.StashKey[object]()  # the comparison with the baseline (a DataFrame or None), computed once
REPORT_FAILURE = pytest.StashKey[str]()


def pytest_addoption(parser):
    group = parser.getgroup("claims", "thesis claims suite")
    group.addoption(
        "--model", action="append", default=None, metavar="SPEC",
        help="model(s) to check claims on; repeatable and/or comma separated "
        f"(default: {','.join(framework.DEFAULT_MODELS)})",
    )
    group.addoption("--allow-unchecked-models", action="store_true", default=False,
                    help="run even when a selected model gets no claim (by default that stops the run at its start)")
    group.addoption("--report-dir", default=None, metavar="DIR",
                    help="where to write index.html and results.json (default: reports/<UTC timestamp>)")
    group.addoption("--baseline", default=None, metavar="RESULTS",
                    help="regression mode: a results.json (or its run directory) to compare this run with; "
                    "the report lists every claim whose status, measured values or role feature changed")
    # E3 (claims/test_e3_features.py): where the gated SAEs come from
    group.addoption("--sae-dir", default=None, metavar="DIR",
                    help="E3: directory of trained gated SAEs (sae_lens format, one per subdirectory, hooks blocks.5/6/7.hook_resid_post)")
    group.addoption("--sae-config", default=None, metavar="FILE.json",
                    help="E3: SAETrainingConfig fields as JSON; SAEs are trained with it (or reused from the cache)")
    group.addoption("--distribution-prompts", type=int, metavar="N",
                    default=int(os.environ.get("MECHINTERP_DISTRIBUTION_PROMPTS", "256")),
                    help="E1/E2 robustness: prompts of the Wang-style distribution each claim is also measured on "
                    "(mechinterp.robustness; default $MECHINTERP_DISTRIBUTION_PROMPTS or 256, 0 turns it off)")
    group.addoption("--sae-seeds", default=None, metavar="SEEDS",
                    help="E3: train the SAEs once per seed (e.g. 0,1,2); each row must hold on every seed, the report shows each")


def pytest_configure(config):
    config.addinivalue_line("markers", "claim(id): a thesis claim test, e.g. claim('E2.logit-diff'); see claims/thresholds.py")
    config.stash[RECORDER] = framework.Recorder(framework.selected_models(config.getoption("model")))
    # The report options are checked here, before any model loads: a bad one is one line, not a lost run.
    try:
        report_dir = report.check_report_dir(config.getoption("report_dir") or framework.default_report_dir(config.rootpath))
    except report.ReportDirError as err:
        raise pytest.UsageError(f"--report-dir: {err}") from None
    config.stash[REPORT_DIR] = report_dir
    sae_config, sae_dir, sae_seeds = (config.getoption(name) for name in ("sae_config", "sae_dir", "sae_seeds"))
    if sae_config is not None or sae_dir is not None or sae_seeds is not None:  # checked even when no E3 test is selected
        from claims.sae_sources import check_sae_options
        from mechinterp.sae_training import SAEOptionError

        try:
            check_sae_options(sae_config, sae_dir, config.stash[RECORDER].models, sae_seeds)
        except SAEOptionError as err:
            raise pytest.UsageError(str(err)) from None
    baseline = config.getoption("baseline")
    if baseline is not None:
        try:
            config.stash[BASELINE] = results.check_baseline(baseline, report_dir)
        except results.ResultsFileError as err:
            raise pytest.UsageError(f"--baseline {baseline}: {err}") from None


def pytest_generate_tests(metafunc):
    if "subject" in metafunc.fixturenames:
        claim = framework.claim_of(metafunc.definition)
        specs = metafunc.config.stash[RECORDER].specs
        metafunc.parametrize("subject", framework.subject_params(claim, specs), indirect=True)


@pytest.fixture(scope="session")
def model_source():
    """Loads each model once per session; overridden with fakes in tests of the framework."""
    return framework.ModelSource()


@pytest.fixture(scope="session")
def loaded_models(request, model_source):
    """Every model some collected claim test runs on, loaded once before the first claim runs: a
    broken checkpoint ends the run here with one line, not as an error in each of its tests."""
    try:
        model_source.preload(list(framework.runnable_claims(request.session.items)))
    except framework.ModelLoadFailed as failed:
        pytest.exit(str(failed), returncode=pytest.ExitCode.USAGE_ERROR)
    return model_source


@pytest.fixture
def subject(request, loaded_models):
    return framework.make_subject(framework.claim_of(request.node), request.param, loaded_models)


@pytest.fixture
def robustness(request, subject):
    """robustness(measured, ClaimDistribution): `measured` with the claim's values over the distribution,
    their bootstrap intervals and robustness verdicts in details["robustness"] (mechinterp.robustness)."""
    from mechinterp.robustness import RobustnessConfig, with_robustness

    n_prompts = request.config.getoption("distribution_prompts")
    if n_prompts < 0:
        raise pytest.UsageError(f"--distribution-prompts must be >= 0, got {n_prompts}")
    cfg = RobustnessConfig(n_prompts=n_prompts) if n_prompts else None
    return lambda measured, spec: with_robustness(measured, subject.model, subject.tokenizer, spec, subject.thresholds, cfg)


@pytest.fixture
def check(request, subject):
    """check(measured): record every quantity against its threshold row for the report, then assert."""
    recorder = request.config.stash[RECORDER]

    def check_measured(measured: framework.Measured) -> None:
        results = framework.evaluate(measured, subject.thresholds)
        recorder.record_measurement(request.node.nodeid, measured, results)
        if any(q.passed is False for q in results):
            claim = framework.claim_of(request.node)
            raise framework.check_failure(claim, subject.spec, results, framework.active_known_gap(request.config, claim, subject.spec))

    return check_measured


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
    collect_report = yield
    collector.config.stash[RECORDER].record_collect_error(collect_report)
    return collect_report


def pytest_collection_finish(session):
    recorder = session.config.stash[RECORDER]
    recorder.expect(session.items)
    if recorder.has_claims and not session.config.getoption("allow_unchecked_models"):
        unchecked = framework.unchecked_models_message(session.items, recorder.specs)
        if unchecked:
            raise pytest.UsageError(unchecked)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    test_report = yield
    item.config.stash[RECORDER].record_phase(item, call, test_report)
    return test_report


def pytest_sessionfinish(session, exitstatus):
    recorder = session.config.stash[RECORDER]
    # A run refused at its start (usage error) measured nothing: it leaves any older report alone.
    # A collect-only run (--co) measured nothing either.
    if recorder.has_claims and exitstatus != pytest.ExitCode.USAGE_ERROR and not session.config.option.collectonly:
        config = session.config
        stopped = exitstatus == pytest.ExitCode.INTERRUPTED or bool(session.shouldfail or session.shouldstop)
        try:
            config.stash[REPORT_PATH], config.stash[CHANGES] = recorder.write(
                config.stash[REPORT_DIR], framework.command_line(config), config.stash.get(BASELINE, None),
                config.getoption("baseline") or "", interrupted=stopped)
        except report.ReportWriteError as failure:
            config.stash[REPORT_FAILURE] = f"claims report NOT written: {failure}"


def pytest_terminal_summary(terminalreporter, config):
    if REPORT_FAILURE in config.stash:
        terminalreporter.write_line(config.stash[REPORT_FAILURE], red=True, bold=True)
    if REPORT_PATH in config.stash:
        if config.stash[CHANGES] is not None:
            terminalreporter.section("changes since baseline")
            for line in compare.comparison_summary(config.stash[CHANGES]):
                terminalreporter.write_line(line)
        terminalreporter.write_line(f"claims report: {config.stash[REPORT_PATH]}")
