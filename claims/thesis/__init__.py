"""The thesis ("Analyzing Indirect Object Identification Circuits in TinyStories-8M"): its claims, one folder.

Each module declares its claims (`CLAIMS`) beside their measures; thresholds.py holds their rows, the planted
models each row fails on and the known gaps; each test_*.py turns a module's claims into pytest tests.
"""

from __future__ import annotations

from claims.claim import Paper, register
from claims.thesis import (
    circuit_card,
    e0_family,
    e1_head_scores,
    e2_attention,
    e2_dla,
    e2_eap,
    e2_logit_diff,
    e2_logit_lens,
    e2_patching,
    e3_features,
    thresholds,
)

# In the order of the thesis (and of the report's overview).
MODULES = (e0_family, e1_head_scores, e2_logit_diff, e2_logit_lens, e2_dla, e2_patching, e2_attention, e2_eap,
           e3_features, circuit_card)

PAPER = register(Paper(
    name="thesis",
    title="Analyzing Indirect Object Identification Circuits in TinyStories-8M",
    claims=tuple(claim for module in MODULES for claim in module.CLAIMS),
    thresholds=tuple(thresholds.THRESHOLDS),
    known_gaps=tuple(thresholds.KNOWN_GAPS),
    row_breakers=thresholds.ROW_BREAKERS,
    default_models=("planted:tinystories-8m", "planted:gpt2-small", "tiny-stories-8M", "gpt2-small"),
))
