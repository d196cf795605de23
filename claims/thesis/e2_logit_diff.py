"""E2.logit-diff (thesis s3.4): mean logit difference logit(IO) - logit(S) on the 8 protocol prompts.

Thesis: TinyStories-8M 9.4, GPT-2 small 3.6 (public reference 3.55), so TS-8M > GPT-2 small.
Thresholds and their reasons: claims/thresholds.py, section E2.
"""

from __future__ import annotations

import torch

from claims.claim import Claim
from claims.framework import Measured, tokenizer_for
from mechinterp.ioi import make_batch, protocol_prompts
from mechinterp.metrics import logit_diff
from mechinterp.plots.basic import per_prompt_bars
from mechinterp.robustness import ClaimDistribution


def measure_logit_diff(model) -> Measured:
    """Mean logit diff over the protocol prompts; per-prompt values in details and as a bar figure."""
    batch = make_batch(tokenizer_for(model), protocol_prompts())
    with torch.inference_mode():
        logits = model(batch.tokens.to(model.cfg.device))
    per_prompt = logit_diff(logits, batch, per_prompt=True).double().cpu()
    labels = [f"{p.text} →{p.io}" for p in batch.prompts]
    figure = per_prompt_bars(per_prompt.tolist(), labels, "Logit difference per protocol prompt", "logit(IO) - logit(S)")
    return Measured(
        values={"logit_diff": per_prompt.mean().item()},
        figure=figure,
        details={"per_prompt": dict(zip(labels, per_prompt.tolist()))},
    )


def collect_logit_diff(model, batch) -> dict[str, torch.Tensor]:
    """Per prompt: logit(IO) - logit(S) at END."""
    with torch.inference_mode():
        logits = model(batch.tokens.to(model.cfg.device))
    return {"logit_diff": logit_diff(logits, batch, per_prompt=True)}


# Over the distribution (mechinterp.robustness): the mean logit difference.
DISTRIBUTION = ClaimDistribution(collect_logit_diff, lambda means: {"logit_diff": float(means["logit_diff"])})


LOGIT_DIFF = Claim(
    'E2.logit-diff', 's3.4',
    'Mean logit difference IO - S: 9.4 in TinyStories-8M, 3.6 in GPT-2 small.',
    measure=measure_logit_diff,
    distribution=lambda model: DISTRIBUTION,
)

CLAIMS = [LOGIT_DIFF]
