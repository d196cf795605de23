"""Live progress: stages (mechinterp.progress), a process's state file and the line drawn from it (claims/live.py)."""

from __future__ import annotations

import json
import os
import time

import pytest

from claims import live
from mechinterp import progress


def test_stages_nest_count_and_tell_their_listeners():
    events = []
    stop = progress.listen(lambda event, stage: events.append((event, stage.name, stage.done)))
    try:
        with progress.stage("distribution", total=4, unit="prompts") as outer:
            for _ in progress.counted(range(2), "patching", unit="passes"):
                assert [s.name for s in progress.open_stages()] == ["distribution", "patching"]
            outer.advance(4)
            assert outer.eta() == pytest.approx(0.0)
    finally:
        stop()
    assert progress.current() is None
    assert events == [("start", "distribution", 0), ("start", "patching", 0), ("advance", "patching", 1),
                      ("advance", "patching", 2), ("end", "patching", 2), ("advance", "distribution", 4),
                      ("end", "distribution", 4)]


def test_a_stage_ends_when_its_work_raises():
    with pytest.raises(RuntimeError), progress.stage("SAE training", total=10):
        raise RuntimeError("out of memory")
    assert progress.current() is None


def test_the_state_file_holds_the_claim_and_its_outer_and_inner_stage(tmp_path):
    writer = live.StatusWriter(tmp_path / "gw0.json")
    try:
        writer.start_test("E2.patching planted:gpt2-small")
        with progress.stage("distribution", total=64, unit="prompts") as outer, progress.stage("patching", total=6, unit="passes", detail="z"):
            outer.advance(32)
            writer._write(force=True)
            state = json.loads((tmp_path / "gw0.json").read_text())
        assert state["test"] == "E2.patching planted:gpt2-small"
        assert (state["stage"]["name"], state["stage"]["done"], state["inner"]["name"]) == ("distribution", 32, "patching")
        assert set(writer.stage_seconds) == {"distribution"}  # top-level stages only: the claim's time by stage
        text = live.describe(state, now=state["test_started"] + 75)
        assert text.startswith("E2.patching planted:gpt2-small 1:15 · distribution 32/64 prompts, ~")
        assert text.endswith("(patching z 0/6 passes)")
    finally:
        writer.close()
    assert not (tmp_path / "gw0.json").exists()


def test_an_idle_process_and_a_stage_without_total():
    assert live.describe({"test": ""}) == "idle"
    state = {"test": "E3.L6-to-feature planted:tinystories-8m", "test_started": 0.0, "written": 10.0,
             "stage": {"name": "SAE corpus pass", "detail": "blocks.6.hook_resid_post", "done": 37_000, "total": None,
                       "unit": "tokens", "eta": None}}
    assert live.describe(state, now=10.0) == ("E3.L6-to-feature planted:tinystories-8m 0:10 · SAE corpus pass "
                                              "blocks.6.hook_resid_post 37k tokens")


def _draw(tmp_path, mode: str, states: dict) -> str:
    for name, state in states.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(state))
    read, write = os.pipe()
    display = live.LiveDisplay(tmp_path, write, mode)
    display.draw()
    display.line("  passed    E2.logit-diff on planted:tinystories-8m (3.2 s)")
    display.close()  # closes `write`
    with os.fdopen(read, "rb") as pipe:
        return pipe.read().decode()


def test_a_terminal_gets_one_line_redrawn_and_a_log_gets_plain_lines(tmp_path):
    now = time.time()
    states = {"gw0": {"test": "E2.eap planted:gpt2-small", "test_started": now, "written": now,
                      "stage": {"name": "edge attribution", "detail": "", "done": 1, "total": 4, "unit": "passes", "eta": 3.0}},
              "gw1": {"test": "", "test_started": 0.0}}
    line = _draw(tmp_path, "line", states)
    # one busy worker: no worker names (gw1 is idle, not shown); the finished claim's line clears the live one
    assert line.startswith("\r\x1b[2KE2.eap planted:gpt2-small 0:00 · edge attribution 1/4 passes, ~0:03 left\r\x1b[2K"
                           "  passed    E2.logit-diff on planted:tinystories-8m (3.2 s)\n")
    assert line.endswith("\r\x1b[2K") and "gw1" not in line
    plain = _draw(tmp_path, "plain", states)
    assert "\r" not in plain and "\x1b" not in plain
    assert plain.splitlines()[0].startswith("  [gw0] E2.eap planted:gpt2-small")


def test_auto_mode_is_plain_off_a_terminal_and_under_verbose(tmp_path):
    read, write = os.pipe()
    try:
        assert live.display_mode("auto", write, verbosity=0) == "plain"
        assert live.display_mode("off", write, verbosity=0) == "off"
    finally:
        os.close(read), os.close(write)
