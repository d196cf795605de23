"""Shared fixtures for the toolkit's own tests."""

from __future__ import annotations

import pytest


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
