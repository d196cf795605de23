"""The circuit card (thesis ch. 5, "explore larger models in the TinyStories family"): the IOI
circuit of every selected model, found by role (mechinterp.circuit_card), measured and shown with
no threshold. It runs on every model, so a TinyStories version the thesis makes no claim about
(28M, 33M) or an unidentified checkpoint still gets a measured answer, never an empty run.
"""

from __future__ import annotations

import pytest

from claims.framework import Measured, tokenizer_for
from mechinterp.circuit_card import circuit_card


def measure_circuit_card(model) -> Measured:
    card = circuit_card(model, tokenizer_for(model))
    return Measured(card.values(), details={"card": card.table()})


@pytest.mark.claim("circuit-card")
def test_circuit_card(subject, check):
    check(measure_circuit_card(subject.model))
