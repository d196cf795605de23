"""The claims of claims/thesis/e2_attention.py as pytest tests (declared there, with their measures)."""

from claims.claim import claim_tests
from claims.thesis.e2_attention import CLAIMS

globals().update(claim_tests(CLAIMS))
