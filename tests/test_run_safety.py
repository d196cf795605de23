"""A run never loses or misreports a finished result: its own report directory, no page for a run
interrupted before it measured anything, a report directory proven writable at the start, a lost
report is a failed run, refusals are one line, paths are read where the user typed them (issue 27)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from claims import framework
from mechinterp.results import load_results
from tests.plugin_fakes import FAKE_MODELS, UNUSED_PLUGINS, claims_pytester  # noqa: F401 - a fixture

ROOT = Path(__file__).resolve().parents[1]


def test_run_directory_names_differ_within_one_second_and_one_millisecond():
    from datetime import datetime, timezone

    now = datetime(2026, 12, 7, 11, 35, 12, 123456, tzinfo=timezone.utc)
    assert framework.run_stamp(now, pid=4242) == "20261207T113512.123Z-4242"
    assert framework.run_stamp(now, pid=1) != framework.run_stamp(now, pid=2)


def test_two_runs_with_the_same_clock_and_pid_get_two_directories(claims_pytester, monkeypatch):
    # the worst case: same millisecond and same process id (inline runs share this process)
    monkeypatch.setattr(framework, "run_stamp", lambda now=None, pid=None: "20261207T113512.123Z-4242")
    for _ in range(2):
        claims_pytester.runpytest(*UNUSED_PLUGINS, "claims", "--model", "tiny-stories-8M")
    runs = sorted(p.name for p in (claims_pytester.path / "reports").iterdir())
    assert runs == ["20261207T113512.123Z-4242", "20261207T113512.123Z-4242-1"]
    first, second = (load_results(claims_pytester.path / "reports" / name) for name in runs)
    assert first["run"]["started_utc"] and second["results"] and first != second


def test_a_refused_run_leaves_no_empty_run_directory(claims_pytester):
    result = claims_pytester.runpytest(*UNUSED_PLUGINS, "claims", "--model", "tiny-stories-8M", "--baseline", "nowhere")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert not (claims_pytester.path / "reports").exists() or not any((claims_pytester.path / "reports").iterdir())


SLOW_LOAD = '''
import os, time
from pathlib import Path
import fake_models

_load = fake_models.fake_load

def slow_load(spec):
    Path(os.environ["LOADING_MARKER"]).write_text(spec)  # the test signals once the load has begun
    time.sleep(60)
    return _load(spec)

fake_models.fake_load = slow_load
'''


def test_ctrl_c_during_model_load_leaves_the_older_report_untouched(claims_pytester, tmp_path):
    run = (*UNUSED_PLUGINS, "claims", "--model", "tiny-stories-8M", "--report-dir", "out")
    claims_pytester.runpytest(*run)
    out = claims_pytester.path / "out"
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    claims_pytester.path.joinpath("fake_models.py").write_text(FAKE_MODELS + SLOW_LOAD)
    marker = tmp_path / "loading"
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{claims_pytester.path}", "LOADING_MARKER": str(marker)}
    # SIGINT back to its default in the child: a background job (CI) inherits it ignored, and Python then
    # installs no KeyboardInterrupt handler
    child = subprocess.Popen([sys.executable, "-m", "pytest", *run], cwd=claims_pytester.path, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert child.poll() is None and time.monotonic() < deadline, child.stdout.read()
            time.sleep(0.1)
        child.send_signal(signal.SIGINT)
        output, _ = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode == pytest.ExitCode.INTERRUPTED, output
    assert f"run interrupted before any claim was measured: no report written; {out / 'index.html'} is untouched" in output
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_a_report_dir_root_may_not_write_to_is_refused_at_the_start(claims_pytester):
    # os.access says root may write in /proc; only writing a file there shows it cannot
    result = claims_pytester.runpytest(*UNUSED_PLUGINS, "claims", "--model", "tiny-stories-8M", "--report-dir", "/proc/x")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --report-dir: /proc/x cannot be written: /proc is not writable (*)"])


def test_a_report_that_could_not_be_written_fails_the_run_and_says_where_the_results_are(claims_pytester, monkeypatch):
    from mechinterp import report

    def refuse(*args, **kwargs):
        raise report.ReportWriteError("disk full (simulated)")

    monkeypatch.setattr(report, "write_report", refuse)
    result = claims_pytester.runpytest(*UNUSED_PLUGINS, "claims", "--model", "tiny-stories-8M", "--report-dir", "out")
    assert result.ret == pytest.ExitCode.TESTS_FAILED  # the claims passed; the run did not
    result.stdout.fnmatch_lines(["claims report NOT written: disk full (simulated); the results are saved in *results*.json"])


BROKEN_LOAD = '''
from mechinterp.models import CheckpointError
import fake_models

def broken_load(spec):
    raise CheckpointError(f"/ckpt/model.safetensors is truncated (12 of 4096 bytes); download {spec} again")

fake_models.fake_load = broken_load
'''


def test_a_checkpoint_that_cannot_load_is_one_line_before_any_claim(claims_pytester):
    claims_pytester.path.joinpath("fake_models.py").write_text(FAKE_MODELS + BROKEN_LOAD)
    result = claims_pytester.runpytest(*UNUSED_PLUGINS, "claims", "--model", "tiny-stories-8M", "--report-dir", "out")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in result.stderr.lines + result.stdout.lines if "truncated" in line]
    assert errors == ["ERROR: --model tiny-stories-8M: /ckpt/model.safetensors is truncated (12 of 4096 bytes); "
                      "download tiny-stories-8M again"]
    assert "_pytest.outcomes.Exit" not in result.stdout.str() and not (claims_pytester.path / "out").exists()


SAE_CACHE_FAILURE = '''
import pytest
from claims.framework import Measured
from mechinterp.sae_cache import SAECacheError

@pytest.mark.claim("E2.logit-diff")
def test_reads_a_truncated_sae(subject, check):
    raise SAECacheError("/cache/saes/abc/sae_weights.safetensors is truncated; delete /cache/saes/abc to retrain")
'''


def test_a_corrupt_cached_sae_is_one_line_not_a_traceback(claims_pytester):
    claims_pytester.path.joinpath("claims", "test_fake_claims.py").write_text(SAE_CACHE_FAILURE)
    result = claims_pytester.runpytest(*UNUSED_PLUGINS, "claims", "--model", "tiny-stories-8M", "--report-dir", "out")
    result.assert_outcomes(failed=1)
    text = result.stdout.str()
    assert "SAECacheError: /cache/saes/abc/sae_weights.safetensors is truncated; delete /cache/saes/abc to retrain" in text
    assert "Traceback" not in text and "def test_reads_a_truncated_sae" not in text


@pytest.mark.skipif(not (ROOT / ".venv" / "bin" / "python").exists(), reason="./run needs the repository's .venv (./run setup)")
def test_run_reads_paths_from_the_callers_directory(tmp_path):
    (tmp_path / "old.json").write_text("[]")
    result = subprocess.run([str(ROOT / "run"), "claims", "--model", "planted:tinystories-8m", "--baseline", "old.json"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == pytest.ExitCode.USAGE_ERROR, result.stdout + result.stderr
    assert f"ERROR: --baseline old.json: {tmp_path / 'old.json'}: expected a JSON object" in result.stderr
