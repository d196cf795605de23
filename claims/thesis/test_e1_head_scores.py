"""The claims of claims/thesis/e1_head_scores.py as pytest tests (declared there, with their measures)."""

from claims.claim import claim_tests
from claims.thesis.e1_head_scores import CLAIMS

globals().update(claim_tests(CLAIMS))
