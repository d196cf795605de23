"""The claims of claims/thesis/e0_family.py as pytest tests (declared there, with their measures)."""

from claims.claim import claim_tests
from claims.thesis.e0_family import CLAIMS

globals().update(claim_tests(CLAIMS))
