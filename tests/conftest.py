"""Shared fixtures for the toolkit's own tests, and the order their files go to xdist workers."""

from __future__ import annotations

from pathlib import Path

import pytest

# Seconds of each test file in a cold `./run tests` (empty SAE cache) on the 2-core machine, from its
# --junitxml (measured 2026-12-07 beside other jobs: only the order matters). With --dist loadfile each
# file runs whole on one worker; sending the longest first lets the two workers end close together.
# Unlisted files count DEFAULT_FILE_SECONDS.
FILE_SECONDS: dict[str, float] = {}
DEFAULT_FILE_SECONDS = 5.0


def pytest_collection_modifyitems(config, items):
    if getattr(config.option, "numprocesses", None) or hasattr(config, "workerinput"):
        items.sort(key=lambda item: -FILE_SECONDS.get(Path(item.nodeid.partition("::")[0]).name, DEFAULT_FILE_SECONDS))


@pytest.fixture(scope="session")
def twin_model():
    """`twin_model(name)`: the twin loaded by `mechinterp.models.load(name)` through the real
    from_pretrained path (temporary offline HF cache), once per session per name. Shared: tests
    must not change its weights, and must remove any hooks they add."""
    from fixtures.twins import twin_cache
    from mechinterp.models import load

    loaded = {}

    def get(name: str):
        if name not in loaded:
            with twin_cache([name]):
                loaded[name] = load(name)
        return loaded[name]

    return get
