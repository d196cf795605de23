"""A second paper, made up and tiny, run through the same framework as the thesis: two claims, their rows,
the planted model that breaks each row, one declaration per claim. tests/test_second_paper.py runs it with
`--paper tests.toy_paper` (a package that registers a paper, as a folder under claims/ would).

"Toy et al." claim that the planted TinyStories twin prefers the indirect object and that its name mover
H7.7 looks at it: made-up findings, measured with the toolkit's own functions on the protocol prompts.
"""

from __future__ import annotations

import torch

from claims.claim import Claim, Paper, register
from claims.framework import Measured, tokenizer_for
from claims.thresholds import Threshold
from mechinterp.attention import attention_between
from mechinterp.ioi import make_batch, protocol_prompts
from mechinterp.metrics import logit_diff


def measure_prefers_io(model) -> Measured:
    batch = make_batch(tokenizer_for(model), protocol_prompts())
    with torch.inference_mode():
        logits = model(batch.tokens.to(model.cfg.device))
    return Measured({"logit_diff": logit_diff(logits, batch).item()})


def measure_mover_looks(model) -> Measured:
    batch = make_batch(tokenizer_for(model), protocol_prompts())
    return Measured({"H7.7_END_to_IO": attention_between(model, batch, "END", "IO")[7, 7].item()})


PREFERS_IO = Claim("toy.prefers-io", "Toy et al. s1", "The model prefers the indirect object to the subject.",
                   measure=measure_prefers_io)
MOVER_LOOKS = Claim("toy.mover-looks", "Toy et al. s2", "H7.7 attends from END to the indirect object.",
                    measure=measure_mover_looks)
CLAIMS = [PREFERS_IO, MOVER_LOOKS]

THRESHOLDS = [
    Threshold("toy.prefers-io", "tiny-stories-8M", "logit_diff", None, ">", 1.0, None,
              "Toy et al. s1: 'prefers' read as IO's logit above S's by more than 1."),
    Threshold("toy.mover-looks", "tiny-stories-8M", "H7.7_END_to_IO", None, ">=", 0.5, None,
              "Toy et al. s2: 'attends' read as at least half of END's attention on IO."),
]
ROW_BREAKERS = {
    ("toy.prefers-io", "tiny-stories-8M", "logit_diff", ">"): ("tinystories-8m/no-s-inhibition",),
    ("toy.mover-looks", "tiny-stories-8M", "H7.7_END_to_IO", ">="): ("tinystories-8m/name-mover-moved",),
}

PAPER = register(Paper("toy", "Toy et al., a made-up paper for the framework's tests", tuple(CLAIMS), tuple(THRESHOLDS),
                       row_breakers=ROW_BREAKERS, default_models=("planted:tinystories-8m",)))
