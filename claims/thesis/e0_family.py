"""E0.smallest-ioi (thesis s3.2): "I'll specifically use the 8M million parameter one as this is the
smallest one in the family that was able to perform the IOI task".

So tiny-stories-1M and -3M do not perform IOI on the protocol prompts and tiny-stories-8M does.
Measured on the 8 protocol prompts, as E2.logit-diff: the mean logit difference logit(IO) -
logit(S) at END, and the mean P(IO) - P(S) there. The thesis gives no numbers for 1M / 3M; the rows
(claims/thresholds.py, section E0) turn "able to perform" into bounds and say why.
"""

from __future__ import annotations

import torch

from claims.claim import Claim
from claims.framework import Measured, tokenizer_for
from mechinterp.ioi import make_batch, protocol_prompts
from mechinterp.metrics import logit_diff, p_io, p_s


def measure_smallest_ioi(model) -> Measured:
    batch = make_batch(tokenizer_for(model), protocol_prompts())
    with torch.inference_mode():
        logits = model(batch.tokens.to(model.cfg.device))
    io, s = p_io(logits, batch).item(), p_s(logits, batch).item()
    per_prompt = logit_diff(logits, batch, per_prompt=True).double().cpu()
    values = {"logit_diff": per_prompt.mean().item(), "p_io_minus_p_s": io - s, "p_io": io, "p_s": s,
              "fraction_io_above_s": (per_prompt > 0).double().mean().item()}
    return Measured(values, details={"per_prompt_logit_diff": per_prompt.tolist()})


SMALLEST_IOI = Claim(
    'E0.smallest-ioi', 's3.2',
    'TinyStories-8M is the smallest of its family that performs IOI; 1M and 3M do not.',
    measure=measure_smallest_ioi,
)

CLAIMS = [SMALLEST_IOI]
