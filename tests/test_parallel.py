"""Two workers report what one process reports: lanes, their order, and each claim's record sent from a worker."""

from __future__ import annotations

import os
import re
import sys

import pytest

from claims import parallel
from mechinterp.results import load_results
from tests.plugin_fakes import FAKE_CLAIMS, UNUSED_PLUGINS, claims_pytester  # noqa: F401 - a fixture

E3 = "claims/thesis/test_e3_features.py::{}[planted:tinystories-8m]"


def test_a_lane_is_a_file_on_one_model_and_e3_is_split_by_sae_block():
    assert parallel.lane_of("claims/thesis/test_e2_dla.py::test_dla_single[planted:gpt2-small]") == "claims/thesis/test_e2_dla.py[planted:gpt2-small]"
    assert parallel.lane_of(E3.format("test_l5_gave_feature")) == parallel.lane_of(E3.format("test_random_control"))
    assert parallel.lane_of(E3.format("test_l6_negative_names")) == parallel.lane_of(E3.format("test_l7_logit_feature"))
    assert parallel.lane_of(E3.format("test_l5_to_feature")) != parallel.lane_of(E3.format("test_l7_logit_feature"))


class Item:
    def __init__(self, nodeid):
        self.nodeid = nodeid


def test_lanes_go_out_longest_first_keeping_each_lane_together_in_collection_order():
    ids = ["claims/thesis/test_e0_family.py::test_e0[planted:tinystories-8m]", E3.format("test_l6_to_feature_collapse"),
           E3.format("test_l5_to_feature"), E3.format("test_l7_logit_feature"),
           "claims/thesis/test_e2_patching.py::test_head_patch[planted:gpt2-small]"]
    ordered = [item.nodeid for item in parallel.order_longest_first([Item(i) for i in ids])]
    assert ordered == [ids[1], ids[3], ids[4], ids[2], ids[0]]


def test_one_torch_thread_per_process_unless_told(monkeypatch):
    monkeypatch.delenv("MECHINTERP_TORCH_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert parallel.torch_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    assert parallel.torch_threads() == 4
    monkeypatch.setenv("MECHINTERP_TORCH_THREADS", "2")
    assert parallel.torch_threads() == 2


def _records(directory):
    rows = load_results(directory)["results"]
    # the HF cache in a skip line is under $HOME, which pytester's subprocess sets to its own directory
    return sorted((r["nodeid"], r["status"], re.sub(r"HF cache \S+;", "HF cache;", r["message"]), [(q["quantity"], q["measured"], q["passed"]) for q in r["quantities"]],
                   r["details"], r["has_figure"]) for r in rows)


def test_two_workers_write_the_record_one_process_writes(claims_pytester, monkeypatch):
    args = (*UNUSED_PLUGINS, "claims", "--model", "tiny-stories-8M,planted:gpt2-small", "--model", "gpt2-small")
    single = claims_pytester.runpytest(*args, "--report-dir", "one", "-p", "no:xdist")  # in this process: cheap
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(claims_pytester.path), *sys.path]))
    # --live off: the record travels from the workers without the progress files too
    double = claims_pytester.runpytest_subprocess(*args, "--report-dir", "two", "-n", "2", "--live", "off")
    assert single.ret == double.ret == pytest.ExitCode.TESTS_FAILED  # the fake claims fail on purpose
    assert "2 workers" in double.stdout.str() and "claims report:" in double.stdout.str()
    one, two = _records(claims_pytester.path / "one"), _records(claims_pytester.path / "two")
    assert len(one) == 6 and one == two


E3_ONLY = '''
import pytest
from claims.framework import Measured

@pytest.mark.claim("E3.L6-to-feature-collapse")
def test_e3_only(subject, check):
    check(Measured({"p_io_ablated": 0.001}))
'''


def test_default_models_no_selected_claim_runs_on_are_left_out_with_one_line(claims_pytester):
    claims_pytester.path.joinpath("claims", "test_fake_claims.py").write_text(E3_ONLY)
    result = claims_pytester.runpytest(*UNUSED_PLUGINS, "claims", "--report-dir", "out")  # no --model: the defaults
    result.stdout.fnmatch_lines(["left out gpt2-small, planted:gpt2-small: default model(s) no selected claim runs on"])
    document = load_results(claims_pytester.path / "out")
    assert document["run"]["models"] == ["planted:tinystories-8m", "tiny-stories-8M"]
    assert {row["spec"] for row in document["results"]} == {"planted:tinystories-8m", "tiny-stories-8M"}


def test_a_left_out_models_record_from_a_worker_stays_out():
    """Workers still run a left-out model's tests (as skips) and send their records: the controller drops them."""
    from claims.framework import Recorder
    from mechinterp.model_specs import parse_spec

    recorder = Recorder([parse_spec("planted:tinystories-8m"), parse_spec("gpt2-small")])
    recorder.leave_out([parse_spec("gpt2-small")])
    recorder.apply({"claim": "E2.logit-diff", "spec": "gpt2-small", "real_model": "gpt2-small", "planted": False,
                    "status": "skipped", "nodeid": "claims/thesis/test_e2_logit_diff.py::test_logit_diff[gpt2-small]"})
    assert recorder.results == {} and recorder.models == ["planted:tinystories-8m"]
