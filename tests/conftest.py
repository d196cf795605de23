"""Shared fixtures for the toolkit's own tests, and the order their files go to xdist workers."""

from __future__ import annotations

from pathlib import Path

import pytest

# Seconds of each test file in a cold `./run tests` (empty SAE cache) on the 2-core machine, from its
# --junitxml (measured 2026-12-07 beside other jobs: only the order matters). With --dist loadfile each
# file runs whole on one worker; sending the longest first lets the two workers end close together.
# Unlisted files count DEFAULT_FILE_SECONDS.
FILE_SECONDS: dict[str, float] = {
    "test_e3_superposition.py": 420, "test_e3_trained_graded.py": 300, "test_claim_pairs_e3_graded.py": 257, "test_claim_pairs_e3.py": 251,
    "test_rehearsal.py": 227, "test_claim_pairs_e1_e2obs.py": 197, "test_learned.py": 172, "test_sae_training.py": 159,
    "test_planted.py": 142, "test_patching.py": 104, "test_circuit_card.py": 76, "test_claim_pairs_e2_causal.py": 70,
    "test_sae_cache.py": 59, "test_model_specs.py": 58, "test_parallel.py": 50, "test_report.py": 12, "test_plugin.py": 26, "test_report_merge.py": 3, "test_thresholds.py": 1,
    "test_run_safety.py": 40, "test_twins.py": 36, "test_claim_pairs_robustness.py": 28, "test_report_browser.py": 11,
}
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
