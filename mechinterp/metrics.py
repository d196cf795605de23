"""IOI metrics: logit difference logit(IO) - logit(S) at END, P(IO) and P(S)."""

from __future__ import annotations

import torch

from mechinterp.ioi import IOIBatch


def end_logits(logits: torch.Tensor, batch: IOIBatch) -> torch.Tensor:
    """[batch, vocab] logits at each prompt's END; accepts [batch, seq, vocab] or [batch, vocab]."""
    if logits.ndim == 2:
        return logits
    return logits[torch.arange(len(batch), device=logits.device), batch.pos("END").to(logits.device)]


def logit_diff(logits: torch.Tensor, batch: IOIBatch, per_prompt: bool = False) -> torch.Tensor:
    """logit(IO) - logit(S) at END: per prompt [batch], or its mean (a scalar)."""
    at_end = end_logits(logits, batch)
    io = at_end.gather(-1, batch.io_token.to(at_end.device)[:, None])[:, 0]
    s = at_end.gather(-1, batch.s_token.to(at_end.device)[:, None])[:, 0]
    diff = io - s
    return diff if per_prompt else diff.mean()


def _token_probability(logits: torch.Tensor, batch: IOIBatch, tokens: torch.Tensor, per_prompt: bool) -> torch.Tensor:
    probs = end_logits(logits, batch).float().softmax(-1)
    p = probs.gather(-1, tokens.to(probs.device)[:, None])[:, 0]
    return p if per_prompt else p.mean()


def p_io(logits: torch.Tensor, batch: IOIBatch, per_prompt: bool = False) -> torch.Tensor:
    """Softmax probability of the IO token at END: per prompt [batch], or its mean."""
    return _token_probability(logits, batch, batch.io_token, per_prompt)


def p_s(logits: torch.Tensor, batch: IOIBatch, per_prompt: bool = False) -> torch.Tensor:
    """Softmax probability of the S token at END: per prompt [batch], or its mean."""
    return _token_probability(logits, batch, batch.s_token, per_prompt)
