"""The claims of claims/thesis/circuit_card.py as pytest tests (declared there, with their measures)."""

from claims.claim import claim_tests
from claims.thesis.circuit_card import CLAIMS

globals().update(claim_tests(CLAIMS))
