"""The claims of claims/thesis/e3_features.py as pytest tests (declared there, with their measures)."""

from claims.claim import claim_tests
from claims.thesis.e3_features import CLAIMS

globals().update(claim_tests(CLAIMS))
