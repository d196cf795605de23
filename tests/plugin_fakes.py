"""Fake claims and models for tests of the pytest plugin (conftest.py) run through pytester.

The fakes `load` instantly; everything else (collection, checks, the record, the report) is the
plugin's own code. `claims_pytester` is a pytester directory holding a copy of the repository's
conftest.py, a fake claims file, and the fake model source where the plugin looks for it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# The fake models, for the claims' conftest (loaded at the end of collection) and the tests (LOADS).
FAKE_MODELS = '''
from mechinterp.models import WeightsUnavailable

LOADS = []

def fake_load(spec):
    # every model "loads" except gpt2-small, whose weights are "absent"
    LOADS.append(spec)
    if spec == "gpt2-small":
        raise WeightsUnavailable(spec)
    return object()
'''

# The run's model source is a fake: put where the plugin looks for it, before models load.
FAKE_SOURCE_CONFTEST = '''
from claims.framework import MODEL_SOURCE, ModelSource
from fake_models import fake_load

def pytest_configure(config):
    config.stash[MODEL_SOURCE] = ModelSource(load=fake_load)
'''

FAKE_CLAIMS = '''
import pytest
import pandas as pd
from matplotlib.figure import Figure
from claims.framework import Measured
from fake_models import LOADS

@pytest.mark.claim("E2.logit-diff")
def test_measures_nine_point_four(subject, check):
    figure = Figure()
    figure.add_subplot().bar([0], [9.4])
    check(Measured({"logit_diff": 9.4}, figure=figure, details={"n": 8}))

@pytest.mark.claim("E2.logit-diff")
def test_crashes(subject, check):
    raise RuntimeError("measurement crashed")

def test_zz_each_model_loaded_once_per_session():  # runs last: after 2 claim tests on each of 3 models
    assert sorted(LOADS) == ["gpt2-small", "planted:gpt2-small", "tiny-stories-8M"]
'''


# Plugins the fake runs do not need; dropping them saves ~3 s of imports per in-process run.
UNUSED_PLUGINS = ("-p", "no:hypothesispytest", "-p", "no:benchmark", "-p", "no:cacheprovider")


@pytest.fixture
def claims_pytester(pytester):
    pytester.makeconftest((ROOT / "conftest.py").read_text())
    pytester.mkdir("claims")
    pytester.path.joinpath("claims", "test_fake_claims.py").write_text(FAKE_CLAIMS)
    pytester.path.joinpath("claims", "conftest.py").write_text(FAKE_SOURCE_CONFTEST)
    pytester.path.joinpath("fake_models.py").write_text(FAKE_MODELS)
    return pytester
