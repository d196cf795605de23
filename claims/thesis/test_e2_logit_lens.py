"""The claims of claims/thesis/e2_logit_lens.py as pytest tests (declared there, with their measures)."""

from claims.claim import claim_tests
from claims.thesis.e2_logit_lens import CLAIMS

globals().update(claim_tests(CLAIMS))
