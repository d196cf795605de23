"""pytest plugin for the claims suite: --paper / --model / --report-dir / --device, the `claim` marker, the
`subject`, `run_claim` and `check` fixtures, live progress, and the HTML report written at session end.

Thin by design: the logic is in claims/options.py (every option, parsed once), claims/claim.py (the claim
declarations and papers), claims/framework.py (subjects, checks, the record), claims/live.py
(the progress line), claims/parallel.py (xdist lanes, threads) and mechinterp/report.py (HTML and
results.json). A report is written only when the session collected claim tests, so `pytest tests/`
leaves reports/ alone. Under pytest-xdist (`./run claims` uses two workers) the controller collects
the claims itself, so it knows every claim test; workers send each claim's record in its test report.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import hypothesis
import pytest

import fixtures.planted  # noqa: F401 - registers the planted builders with mechinterp (planted: specs)
import fixtures.tokenizer  # noqa: F401 - registers the offline GPT-2 tokenizer (local checkpoints without one)
from claims import framework, live, parallel
from claims.claim import DEFAULT_PAPER
from claims.options import RUN_OPTIONS, RunOptions, run_options
from mechinterp import compare, report

# Deterministic property tests, project-wide: examples derived from each test, no example database.
hypothesis.settings.register_profile("deterministic", derandomize=True, database=None)
hypothesis.settings.load_profile("deterministic")

# pytester: the plugin's tests run it on fake claims; claims.sae_sources: the E3 claims' `e3_sae_sets` fixture
pytest_plugins = ("pytester", "claims.sae_sources")

RECORDER = pytest.StashKey[framework.Recorder]()
REPORT_DIR = pytest.StashKey[Path]()  # checked at the start of the run
CREATED_DIR = pytest.StashKey[Path]()  # the default report directory this run created (removed if left empty)
REPORT_PATH = pytest.StashKey[Path]()
CHANGES = pytest.StashKey[object]()  # the comparison with the baseline (a compare.Comparison or None), computed once
REPORT_FAILURE = pytest.StashKey[str]()
NOT_WRITTEN = pytest.StashKey[str]()  # why no report was written (an interrupt before any claim was measured)
STATUS = pytest.StashKey[live.StatusWriter]()  # this process's progress state file
DISPLAY = pytest.StashKey[live.LiveDisplay]()  # the live line, in the process that owns the terminal
LIVE_DIR = pytest.StashKey[Path]()  # where the state files go (a temporary directory of the run)
LIVE_DIR_KEY = "mechinterp_live_dir"  # the same, in an xdist worker's workerinput
PAYLOAD = "mechinterp_claim"  # user_properties key of a claim's record sent from a worker


def pytest_addoption(parser):
    group = parser.getgroup("claims", "thesis claims suite")
    group.addoption("--paper", action="append", default=None, metavar="NAME",
                    help=f"the paper(s) whose claims run: a folder under claims/ or a package registering one "
                    f"(repeatable, comma separated; default: {DEFAULT_PAPER})")
    group.addoption(
        "--model", action="append", default=None, metavar="SPEC",
        help="model(s) to check claims on; repeatable and/or comma separated (default: the paper's default models, "
        "for the thesis planted:tinystories-8m, planted:gpt2-small, tiny-stories-8M, gpt2-small)",
    )
    group.addoption("--allow-unchecked-models", action="store_true", default=False,
                    help="run even when a selected model gets no claim (by default that stops the run at its start)")
    group.addoption("--report-dir", default=None, metavar="DIR",
                    help="where to write index.html and results.json (default: reports/<UTC time>-<pid>, new for every run)")
    group.addoption("--baseline", default=None, metavar="RESULTS",
                    help="regression mode: a results.json (or its run directory) to compare this run with; "
                    "the report lists every claim whose status, measured values or role feature changed")
    group.addoption("--compare-all", action="store_true", default=False,
                    help="regression mode: compare every row of both runs, also models and claim tests only one of them has "
                    "(default: the models both selected and the tests this run collected)")
    group.addoption("--device", default="auto", metavar="DEVICE",
                    help="where models run, patch and train SAEs: auto (cuda when visible, else cpu), cpu, cuda, cuda:N")
    group.addoption("--live", default="auto", choices=("auto", "line", "plain", "off"),
                    help="progress of each claim and stage: one updating line on a terminal, plain lines in a log (default auto)")
    # E3 (claims/thesis/e3_features.py): where the gated SAEs come from
    group.addoption("--sae-dir", default=None, metavar="DIR",
                    help="E3: directory of trained gated SAEs (sae_lens format, one per subdirectory, hooks blocks.5/6/7.hook_resid_post)")
    group.addoption("--sae-config", default=None, metavar="FILE.json",
                    help="E3: SAETrainingConfig fields as JSON; SAEs are trained with it (or reused from the cache)")
    group.addoption("--distribution-prompts", type=int, metavar="N", default=None,
                    help="E1/E2 robustness: prompts of the Wang-style distribution each claim is also measured on "
                    "(mechinterp.robustness; default $MECHINTERP_DISTRIBUTION_PROMPTS, else 256 on models narrower "
                    "than d_model 512 and 64 on wider ones; 0 turns it off)")
    group.addoption("--sae-seeds", default=None, metavar="SEEDS",
                    help="E3: train the SAEs once per seed (e.g. 0,1,2); each row must hold on every seed, the report shows each")
    group.addoption("--ioi-templates", default=None, metavar="FILE",
                    help="circuit card: read IOI on these templates (one a line, e.g. "
                    "'When {A} and {B} went to the {PLACE}, {C} gave a {OBJECT} to') instead of the protocol prompts")


def pytest_configure(config):
    config.addinivalue_line("markers", "claim(id): a thesis claim test, e.g. claim('E2.logit-diff'); see claims/thresholds.py")
    import torch

    torch.set_num_threads(parallel.torch_threads())  # see claims/parallel.py: processes use the cores, not threads
    # Every option is read and checked here, once, before any model loads: a bad one is one line, not a lost run.
    options = config.stash[RUN_OPTIONS] = RunOptions.from_config(config)
    config.stash[RECORDER] = framework.Recorder(list(options.models))
    config.stash[REPORT_DIR] = options.report_dir
    config.pluginmanager.register(ClaimLines(config), "mechinterp-claim-lines")
    _start_progress(config)


def _start_progress(config) -> None:
    """A state file for this process (if it runs tests) and, where the terminal is, the live line."""
    if parallel.is_worker(config):
        if LIVE_DIR_KEY in config.workerinput:  # absent under --live off
            directory = Path(config.workerinput[LIVE_DIR_KEY])
            config.stash[STATUS] = live.StatusWriter(directory / f"{config.workerinput['workerid']}.json")
        return
    if run_options(config).live == "off":
        return
    directory = Path(tempfile.mkdtemp(prefix="mechinterp-live-"))
    config.stash[LIVE_DIR] = directory
    if not parallel.is_controller(config):
        config.stash[STATUS] = live.StatusWriter(directory / "main.json")
    # A dup of the terminal taken now, before pytest's capture redirects fd 1 around each test.
    fd = os.dup(1)
    mode = live.display_mode(run_options(config).live, fd, config.getoption("verbose"))
    config.stash[DISPLAY] = live.LiveDisplay(directory, fd, mode)  # started once claims are known to run


class ClaimLines:
    """The controller's (or single process's) side of each claim test's end: a worker's record
    replaces the expected one, and a line goes above the live line (skips are summed up per model at
    the end). A plugin object, since pytest_runtest_logreport is given no config."""

    def __init__(self, config):
        self.config = config

    def pytest_runtest_logreport(self, report):
        recorder = self.config.stash[RECORDER]
        if parallel.is_controller(self.config):
            for key, payload in report.user_properties:
                if key == PAYLOAD and payload is not None:
                    recorder.apply(payload)
        result = recorder.results.get(report.nodeid)
        display = self.config.stash.get(DISPLAY, None)
        if result is None or display is None or report.when != "teardown" or result.status == "skipped":
            return
        display.line(framework.finished_line(result))


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    """xdist: tell each worker where the live state files go."""
    if LIVE_DIR in node.config.stash:
        node.workerinput[LIVE_DIR_KEY] = str(node.config.stash[LIVE_DIR])


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    if config.getoption("dist") == "load" and parallel.may_run_claims(config):
        return parallel.make_lane_scheduler(config, log)
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_collection(session):
    """Under xdist the controller collects nothing by default; for the claims it collects them itself,
    so the record knows every claim test (a test a worker never reached is 'not run', not absent)."""
    if parallel.is_controller(session.config) and parallel.may_run_claims(session.config):
        session.perform_collect()


def pytest_unconfigure(config):
    for key in (STATUS, DISPLAY):
        if key in config.stash:
            config.stash[key].close()
    if LIVE_DIR in config.stash:
        shutil.rmtree(config.stash[LIVE_DIR], ignore_errors=True)
    created = config.stash.get(CREATED_DIR, None)
    if created is not None and created.is_dir() and not any(created.iterdir()):
        created.rmdir()  # nothing was written there (refused or interrupted run)


def pytest_ignore_collect(collection_path, config):
    """The claims of papers the run did not select (--paper) are not collected."""
    if collection_path.parent == config.rootpath / "claims" and (collection_path / "__init__.py").exists():
        return None if collection_path.name in run_options(config).papers else True
    return None


def pytest_generate_tests(metafunc):
    if "subject" in metafunc.fixturenames:
        claim = framework.claim_of(metafunc.definition)
        metafunc.parametrize("subject", framework.subject_params(claim, run_options(metafunc.config)), indirect=True)


@pytest.fixture(scope="session")
def model_source(request):
    """Loads each model once per session (framework.session_model_source; fakes go in config.stash)."""
    return framework.session_model_source(request.config)


@pytest.fixture
def subject(request, model_source):
    return framework.make_subject(framework.claim_of(request.node), request.param, model_source, run_options(request.config))


@pytest.fixture
def run_claim(request, subject):
    """run_claim(claim): the claim's measurement on the subject (framework.run_claim), with the run's SAEs for E3."""

    def run(claim):
        sae_sets = request.getfixturevalue("e3_sae_sets") if claim.over_sae_seeds else None
        return framework.run_claim(claim, subject, sae_sets)

    return run


@pytest.fixture
def check(request, subject):
    """check(measured): record every quantity against its threshold row for the report, then assert."""
    recorder = request.config.stash[RECORDER]

    def check_measured(measured: framework.Measured) -> None:
        results = framework.evaluate(measured, subject.thresholds)
        recorder.record_measurement(request.node.nodeid, measured, results)
        if any(q.passed is False for q in results):
            claim = framework.claim_of(request.node)
            gap = framework.active_known_gap(run_options(request.config), claim, subject.spec.raw)
            raise framework.check_failure(claim, subject.spec.raw, results, gap)

    return check_measured


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
    collect_report = yield
    collector.config.stash[RECORDER].record_collect_error(collect_report)
    return collect_report


def pytest_collection_modifyitems(config, items):
    if parallel.worker_count(config) > 1 and parallel.may_run_claims(config):
        items[:] = parallel.order_longest_first(items)


def pytest_collection_finish(session):
    config = session.config
    recorder = config.stash[RECORDER]
    recorder.expect(session.items)
    if not recorder.has_claims or parallel.is_worker(config):
        return
    options = run_options(config)
    if not options.models_given:  # the default models: those no selected claim runs on are left out
        recorder.leave_out(framework.unchecked_models(session.items, recorder.specs))
    elif not options.allow_unchecked_models:
        unchecked = framework.unchecked_models_message(session.items, recorder.specs)
        if unchecked:
            raise pytest.UsageError(unchecked)
    if not config.option.collectonly:
        if not options.report_dir_given:
            try:
                config.stash[REPORT_DIR] = config.stash[CREATED_DIR] = framework.create_run_directory(config.stash[REPORT_DIR])
            except (OSError, report.ReportDirError) as err:
                raise pytest.UsageError(f"report directory {config.stash[REPORT_DIR]}: {err}") from None
        # Every model a claim runs on is loaded now (the controller checks all but the planted ones, which
        # are built from code): a broken checkpoint stops the run with one line, before any claim runs.
        specs = [spec for spec in framework.runnable_claims(session.items)
                 if not (parallel.is_controller(config) and spec.startswith("planted:"))]
        try:
            framework.session_model_source(config).preload(specs)
        except framework.ModelLoadFailed as failed:
            raise pytest.UsageError(str(failed)) from None
    if DISPLAY in config.stash and config.stash[DISPLAY].mode != "off":
        display = config.stash[DISPLAY]
        display.start()
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.showfspath = False  # the live line and the claims' own lines replace pytest's per-file dots


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    if STATUS in item.config.stash and item.get_closest_marker("claim") is not None:
        spec = framework.subject_spec(item)
        item.config.stash[STATUS].start_test(f"{framework.claim_of(item)} {spec.raw if spec else ''}".strip())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    test_report = yield
    recorder = item.config.stash[RECORDER]
    if call.excinfo is not None and call.excinfo.errisinstance(framework.one_line_errors()):
        # a refusal that already says what is wrong and what to do: its line, not a traceback around it
        test_report.longrepr = f"{call.excinfo.typename}: {call.excinfo.value}"
    recorder.record_phase(item, call, test_report)
    if STATUS in item.config.stash and item.nodeid in recorder.results:
        status = item.config.stash[STATUS]
        result = recorder.results[item.nodeid]
        result.stage_seconds = dict(status.stage_seconds)
        if test_report.when == "teardown":
            status.end_test()
    if parallel.is_worker(item.config) and item.nodeid in recorder.results:
        test_report.user_properties.append((PAYLOAD, recorder.payload(item.nodeid)))
    return test_report


@pytest.hookimpl(wrapper=True)
def pytest_report_teststatus(report, config):
    outcome = yield
    result = config.stash[RECORDER].results.get(report.nodeid)
    if result is None or not isinstance(outcome, tuple):
        return outcome
    category, letter, word = outcome
    if framework.measured_only(result.claim) and category == "passed":
        category, letter, word = "measured", letter, "MEASURED"  # the card has no threshold: measured, not passed
    display = config.stash.get(DISPLAY, None)
    if display is not None and display.mode != "off":
        letter = ""  # the claim's own line says it
    return category, letter, word


def pytest_sessionfinish(session, exitstatus):
    config = session.config
    if DISPLAY in config.stash:
        config.stash[DISPLAY].close()
    if parallel.is_worker(config):
        return
    recorder = config.stash[RECORDER]
    # A run refused at its start (usage error) measured nothing: it leaves any older report alone.
    # A collect-only run (--co) measured nothing either.
    if not recorder.has_claims or exitstatus == pytest.ExitCode.USAGE_ERROR or config.option.collectonly:
        return
    stopped = exitstatus == pytest.ExitCode.INTERRUPTED or bool(session.shouldfail or session.shouldstop)
    if stopped and not recorder.measured_anything():
        # Interrupted before any claim ended (e.g. Ctrl-C during model load): nothing to report, and an
        # older report in --report-dir stays as it was.
        older = config.stash[REPORT_DIR] / "index.html"
        config.stash[NOT_WRITTEN] = ("run interrupted before any claim was measured: no report written"
                                     + (f"; {older} is untouched" if older.exists() else ""))
        return
    options = run_options(config)
    gap_note = framework.unapplied_known_gaps_note(options, recorder)
    if gap_note:
        recorder.notes.append(gap_note)
    try:
        config.stash[REPORT_PATH], config.stash[CHANGES] = recorder.write(
            config.stash[REPORT_DIR], framework.command_line(config), options.baseline,
            options.baseline_label, interrupted=stopped, compare_all=options.compare_all)
    except report.ReportWriteError as failure:
        config.stash[REPORT_FAILURE] = f"claims report NOT written: {failure}"
        if session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED  # a run whose report is lost is not a success


def pytest_terminal_summary(terminalreporter, config):
    if parallel.is_worker(config):
        return
    recorder = config.stash[RECORDER]
    for line in recorder.notes:
        terminalreporter.write_line(line)
    for line in framework.skipped_models_lines(recorder.results.values()):
        terminalreporter.write_line(line, yellow=True)
    if NOT_WRITTEN in config.stash:
        terminalreporter.write_line(config.stash[NOT_WRITTEN], yellow=True, bold=True)
    if REPORT_FAILURE in config.stash:
        terminalreporter.write_line(config.stash[REPORT_FAILURE], red=True, bold=True)
    if REPORT_PATH in config.stash:
        if config.stash[CHANGES] is not None:
            terminalreporter.section("changes since baseline")
            for line in compare.comparison_summary(config.stash[CHANGES]):
                terminalreporter.write_line(line)
        terminalreporter.write_line(f"claims report: {config.stash[REPORT_PATH]}")
