"""Where a long measurement is: named stages with k/N counts, for whoever listens.

The toolkit's loops (patching sites, the robustness distribution, SAE training tokens, head scores)
open a `stage` and advance it; they never print. A listener (the claims run's live line,
claims/live.py) sees every start, advance and end. With no listener a stage costs a function call.
Written by hand: tqdm's bars print to the captured stderr of a test, and cannot be read by another
process (a pytest-xdist worker's stage must reach the controller's terminal).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator


@dataclass
class Stage:
    name: str  # e.g. "patching sites", "distribution", "SAE training"
    total: int | None = None  # None: unknown length
    unit: str = ""  # e.g. "prompts", "tokens", "sites"
    detail: str = ""  # e.g. the hook or block
    done: int = 0
    started: float = field(default_factory=time.monotonic)

    def advance(self, n: int = 1) -> None:
        self.done += n
        _notify("advance", self)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def eta(self) -> float | None:
        """Seconds left at the rate so far (None before the first step or without a total)."""
        if not self.total or self.done <= 0:
            return None
        return self.elapsed() * (self.total - self.done) / self.done


Listener = Callable[[str, Stage], None]  # (event: "start" | "advance" | "end", stage)
_LISTENERS: list[Listener] = []
_OPEN: list[Stage] = []  # nested stages, innermost last


def listen(listener: Listener) -> Callable[[], None]:
    """Register `listener`; returns the function that removes it."""
    _LISTENERS.append(listener)
    return lambda: _LISTENERS.remove(listener) if listener in _LISTENERS else None


def current() -> Stage | None:
    """The innermost open stage."""
    return _OPEN[-1] if _OPEN else None


def open_stages() -> list[Stage]:
    """The open stages, outermost first (e.g. the distribution, then a patching pass inside it)."""
    return list(_OPEN)


def _notify(event: str, stage: Stage) -> None:
    for listener in list(_LISTENERS):
        listener(event, stage)


@contextmanager
def stage(name: str, total: int | None = None, unit: str = "", detail: str = "") -> Iterator[Stage]:
    """`with stage("patching sites", total=48, unit="sites") as s: ... s.advance()`."""
    opened = Stage(name, total, unit, detail)
    _OPEN.append(opened)
    _notify("start", opened)
    try:
        yield opened
    finally:
        _OPEN.remove(opened)
        _notify("end", opened)


def counted(iterable, name: str, total: int | None = None, unit: str = "", detail: str = ""):
    """Iterate `iterable` inside a stage advanced once per item (a tqdm-like wrapper)."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)
    with stage(name, total, unit, detail) as opened:
        for item in iterable:
            yield item
            opened.advance()
