"""The run's live progress on the terminal: which claim each process measures, at which stage.

Every process that runs claim tests (the single pytest process, or each pytest-xdist worker) keeps a
small state file: the claim and model it is on, and its innermost progress stage (mechinterp.progress)
with k/N and times. The process that owns the terminal (the controller) reads those files twice a
second and draws one updating line, or, when the output is not a terminal (CI logs), prints a plain
line per stage and every 30 s. Files, not pipes: an xdist worker's only channel to the controller is
its test reports, which arrive when a test ends, and a claim's stages are minutes inside one test.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from mechinterp import progress

REFRESH_S = 0.5  # how often the line is redrawn and a state file at most rewritten
PLAIN_EVERY_S = 30.0  # in plain mode, a still-running stage is reported again after this long


def clock(seconds: float | None) -> str:
    if seconds is None or seconds != seconds:
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


def _count(n: float) -> str:
    if n >= 1e6:
        return f"{n / 1e6:.1f}M"
    if n >= 1e4:
        return f"{n / 1e3:.0f}k"
    return f"{n:g}"


class StatusWriter:
    """One process's state file: its current claim test and innermost stage, rewritten at most every
    REFRESH_S (and at every stage start and end)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.test: str = ""  # "E2.patching on planted:gpt2-small"
        self.test_started = 0.0
        self.stage_seconds: dict[str, float] = {}  # per test: seconds spent in each top-level stage
        self._last_write = 0.0
        self._stop = progress.listen(self._on_stage)

    def close(self) -> None:
        self._stop()
        self.path.unlink(missing_ok=True)

    def start_test(self, label: str) -> None:
        self.test, self.test_started, self.stage_seconds = label, time.time(), {}
        self._write(force=True)

    def end_test(self) -> None:
        self.test = ""
        self._write(force=True)

    def _on_stage(self, event: str, stage: progress.Stage) -> None:
        if event == "end" and progress.current() is None:  # a top-level stage: its time goes to the claim's record
            self.stage_seconds[stage.name] = self.stage_seconds.get(stage.name, 0.0) + stage.elapsed()
        self._write(force=event != "advance")

    def _write(self, force: bool) -> None:
        now = time.time()
        if not force and now - self._last_write < REFRESH_S:
            return
        self._last_write = now
        stages = progress.open_stages()
        state = {"test": self.test, "test_started": self.test_started, "written": now}
        if stages and self.test:  # the outermost stage, and the innermost inside it when they differ
            state["stage"] = _stage_state(stages[0])
            if len(stages) > 1:
                state["inner"] = _stage_state(stages[-1])
        staged = self.path.with_name(f".{self.path.name}.tmp")
        staged.write_text(json.dumps(state))
        os.replace(staged, self.path)  # the reader never sees half a file


def _stage_state(stage: progress.Stage) -> dict:
    return {"name": stage.name, "detail": stage.detail, "done": stage.done, "total": stage.total,
            "unit": stage.unit, "elapsed": stage.elapsed(), "eta": stage.eta()}


def _stage_text(stage: dict) -> str:
    count = _count(stage["done"]) + (f"/{_count(stage['total'])}" if stage.get("total") else "")
    detail = f" {stage['detail']}" if stage.get("detail") else ""
    return f"{stage['name']}{detail} {count} {stage['unit']}".rstrip()


def describe(state: dict, now: float | None = None) -> str:
    """One process's part of the line: claim and model, stage k/N, elapsed and what is left."""
    if not state.get("test"):
        return "idle"
    now = time.time() if now is None else now
    text = f"{state['test']} {clock(now - state['test_started'])}"
    stage = state.get("stage")
    if stage:
        late = max(0.0, now - state.get("written", now))  # time since the worker wrote: the stage went on meanwhile
        eta = "" if stage.get("eta") is None else f", ~{clock(max(0.0, stage['eta'] - late))} left"
        inner = f" ({_stage_text(state['inner'])})" if state.get("inner") else ""
        text += f" · {_stage_text(stage)}{eta}{inner}"
    return text


@dataclass
class LiveDisplay:
    """Draws the state files of `directory` on `fd` (a dup of the terminal taken before pytest's
    capture could redirect it). mode: "line" (a terminal: one line, redrawn), "plain" (a log: lines),
    "off"."""

    directory: Path
    fd: int
    mode: str

    def __post_init__(self):
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._drawn = False
        self._plain_seen: dict[str, tuple[str, float]] = {}  # file -> (test + stage name, when printed)
        self._thread = threading.Thread(target=self._loop, name="mechinterp-live", daemon=True)

    def start(self) -> None:
        if self.mode != "off" and not self._thread.is_alive():
            self._thread.start()

    def states(self) -> dict[str, dict]:
        found = {}
        for path in sorted(self.directory.glob("*.json")):
            try:
                found[path.stem] = json.loads(path.read_text())
            except (OSError, ValueError):
                continue  # being replaced right now: next time
        return found

    def _write(self, text: str) -> None:
        try:
            os.write(self.fd, text.encode("utf-8", "replace"))
        except OSError:
            self.mode = "off"

    def _clear(self) -> None:
        if self._drawn:
            self._write("\r\x1b[2K")
            self._drawn = False

    def _loop(self) -> None:
        while not self._stop.wait(REFRESH_S):
            with self._lock:
                self.draw()

    def draw(self) -> None:
        states = {name: s for name, s in self.states().items() if s.get("test")}
        if self.mode == "line":
            if not states:
                self._clear()
                return
            width = shutil.get_terminal_size((120, 20)).columns
            prefix = len(states) > 1
            line = " | ".join((f"{name}: " if prefix else "") + describe(state) for name, state in states.items())
            line = line if len(line) < width else line[: width - 2] + "…"
            self._write("\r\x1b[2K" + line)
            self._drawn = True
        elif self.mode == "plain":
            now = time.time()
            for name, state in states.items():
                if not state.get("stage"):
                    continue  # between stages: the claim's own line says when it ends
                key = state["test"] + "/" + (state.get("stage") or {}).get("name", "")
                seen = self._plain_seen.get(name)
                if seen is None or seen[0] != key or now - seen[1] >= PLAIN_EVERY_S:
                    self._plain_seen[name] = (key, now)
                    self._write(f"  [{name}] {describe(state, now)}\n")

    def line(self, text: str) -> None:
        """A finished claim's line, above the live line."""
        if self.mode == "off":
            return
        with self._lock:
            self._clear()
            self._write(text + "\n")
            if self.mode == "line":
                self.draw()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        with self._lock:
            self._clear()
            self.mode = "off"
        try:
            os.close(self.fd)
        except OSError:
            pass


def display_mode(option: str, fd: int, verbosity: int) -> str:
    """--live auto|line|plain|off -> the mode used: auto is a line on a terminal, plain lines otherwise;
    -v prints a line per test already, so auto gives plain lines there too."""
    if option != "auto":
        return option
    return "line" if os.isatty(fd) and verbosity <= 0 and os.environ.get("TERM") != "dumb" else "plain"
