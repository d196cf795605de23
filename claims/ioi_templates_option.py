"""`--ioi-templates FILE`: the circuit card (claims/test_circuit_card.py) reads IOI on these templates, the
model's own wording, instead of the thesis's protocol prompts. One template a line, with the slots of
mechinterp.ioi's built-in templates ({A} and {B} the names in order, {C} the subject's repeat, optional {PLACE}
and {OBJECT}), checked as those are, when the run starts: a bad file is one line before any model loads.

A plugin of its own so the option and its check live beside each other; conftest.py lists it in pytest_plugins.
"""

from __future__ import annotations

import pytest

from mechinterp.ioi import IOIDataError, read_templates

TEMPLATES = pytest.StashKey[list]()


def pytest_addoption(parser):
    parser.getgroup("claims", "thesis claims suite").addoption(
        "--ioi-templates", default=None, metavar="FILE",
        help="circuit card: read IOI on these templates (one a line, e.g. "
        "'When {A} and {B} went to the {PLACE}, {C} gave a {OBJECT} to') instead of the protocol prompts")


def pytest_configure(config):
    path = config.getoption("ioi_templates", None)
    if path is not None:
        try:
            config.stash[TEMPLATES] = read_templates(path)
        except IOIDataError as err:
            raise pytest.UsageError(f"--ioi-templates: {err}") from None


def ioi_templates(config) -> tuple[list[str] | None, str | None]:
    """(templates, file) from --ioi-templates, or (None, None) when it is not given."""
    templates = config.stash.get(TEMPLATES, None)
    return templates, (config.getoption("ioi_templates", None) if templates else None)
