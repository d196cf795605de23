"""Previous-token, duplicate-token and induction scores of every head (thesis 3.3, figs 3.1-3.6).

Protocol: sequences of uniformly random tokens, each repeated once ([BOS] x_1..x_n x_1..x_n).
A score is the fraction of attention weight a head puts on its target key, averaged over the
query positions that have one and over sequences:
  previous-token   query i -> key i-1, queries in the first copy. Causal attention makes those rows
                   exactly the rows of an unrepeated random sequence, as the thesis specifies.
  duplicate-token  query i -> key i-n (the earlier copy of the same token), queries in the second copy.
  induction        query i -> key i-n+1 (the token after the earlier copy; the thesis's i-(n-1)),
                   queries in the second copy.
So all three come from one batch of forward passes that keeps only the attention patterns.

Vocabulary: uniform over the model's whole vocabulary by default; `HeadScoreConfig.vocabulary` restricts
the draw to given token ids (e.g. the tokens of TinyStories, which most of GPT-2's 50k tokens never occur in).

BOS and special tokens: BOS is prepended when the model prepends it (cfg.default_prepend_bos), as
attention sinks depend on it; it is never a target (the query right after BOS, whose previous
token is BOS, is not scored). Random tokens are drawn from the vocabulary minus the BOS/EOS/pad
ids, without replacement within a sequence, so each query has exactly one earlier copy.

transformer_lens.head_detector is used for the target patterns; its scoring is not used because it
takes strings (random ids do not round-trip through text), runs one forward pass per sequence, and
averages over every query row, rows without a target included (which caps a perfect induction head
at about one half instead of the thesis's "fraction of attention weight").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from mechinterp import progress

from transformer_lens import HookedTransformer
from transformer_lens.head_detector import (
    get_duplicate_token_head_detection_pattern,
    get_induction_head_detection_pattern,
    get_previous_token_head_detection_pattern,
)

SCORE_NAMES = ("previous_token", "duplicate_token", "induction")


@dataclass
class HeadScoreConfig:
    n_sequences: int = 32  # random sequences averaged over
    seq_len: int = 50  # n, the length of one random copy; the model sees 2n tokens (+ BOS)
    seed: int = 0
    batch_size: int = 16  # sequences per forward pass
    prepend_bos: bool | None = None  # None: the model's cfg.default_prepend_bos
    bos_token_id: int | None = None  # None: the tokenizer's BOS id
    progress: bool = False
    # Token ids the random tokens are drawn from; None: the whole vocabulary (the thesis's protocol).
    # E.g. the tokens a model was trained on: TinyStories uses a small part of GPT-2's 50k vocabulary.
    vocabulary: tuple[int, ...] | None = None


def _bos_id(model: HookedTransformer, config: HeadScoreConfig) -> int:
    if config.bos_token_id is not None:
        return config.bos_token_id
    if model.tokenizer is None or model.tokenizer.bos_token_id is None:
        raise ValueError("model has no tokenizer with a BOS id; set HeadScoreConfig.bos_token_id (or prepend_bos=False)")
    return model.tokenizer.bos_token_id


def _special_ids(model: HookedTransformer, config: HeadScoreConfig, prepend_bos: bool) -> set[int]:
    ids = {_bos_id(model, config)} if prepend_bos else set()
    if model.tokenizer is not None:
        ids |= {i for i in (model.tokenizer.bos_token_id, model.tokenizer.eos_token_id, model.tokenizer.pad_token_id) if i is not None}
    return ids


def repeated_random_tokens(model: HookedTransformer, config: HeadScoreConfig) -> torch.Tensor:
    """[n_sequences, (1 +) 2 * seq_len] tokens: BOS (if the model prepends it), x, x."""
    prepend_bos = model.cfg.default_prepend_bos if config.prepend_bos is None else config.prepend_bos
    n = config.seq_len
    total = 2 * n + int(prepend_bos)
    if n < 2 or total > model.cfg.n_ctx:
        raise ValueError(f"seq_len={n} gives {total} tokens; need seq_len >= 2 and at most n_ctx={model.cfg.n_ctx} tokens")
    if config.n_sequences < 1:
        raise ValueError(f"n_sequences must be >= 1, got {config.n_sequences}")
    if config.vocabulary is None:
        allowed = torch.ones(model.cfg.d_vocab)
    else:
        ids = torch.tensor(sorted(set(config.vocabulary)), dtype=torch.long)
        if len(ids) and (ids.min() < 0 or ids.max() >= model.cfg.d_vocab):
            raise ValueError(f"vocabulary has token ids outside the model's vocabulary of {model.cfg.d_vocab}")
        allowed = torch.zeros(model.cfg.d_vocab)
        allowed[ids] = 1
    allowed[list(_special_ids(model, config, prepend_bos))] = 0
    if allowed.sum() < n:
        raise ValueError(f"vocabulary of {int(allowed.sum())} usable tokens is smaller than seq_len={n}")
    generator = torch.Generator().manual_seed(config.seed)
    # Uniform over the usable vocabulary, without replacement within a sequence.
    first = torch.multinomial(allowed.expand(config.n_sequences, -1), n, replacement=False, generator=generator)
    parts = [first, first]
    if prepend_bos:
        parts.insert(0, torch.full((config.n_sequences, 1), _bos_id(model, config), dtype=first.dtype))
    return torch.cat(parts, dim=1)


def target_masks(tokens: torch.Tensor, seq_len: int, prepend_bos: bool) -> dict[str, torch.Tensor]:
    """[T, T] 0/1 masks (query row, key column) of each score's target, from one sequence's tokens.

    Rows that must not be scored are zero: the BOS column, the query after BOS (its previous token
    is BOS), the second copy for previous-token, the first copy for duplicate and induction.
    """
    start = int(prepend_bos)  # index of x_1
    masks = {
        "previous_token": get_previous_token_head_detection_pattern(tokens),
        "duplicate_token": get_duplicate_token_head_detection_pattern(tokens),
        "induction": get_induction_head_detection_pattern(tokens),
    }
    second_copy = start + seq_len
    masks["previous_token"][second_copy:] = 0
    masks["previous_token"][: start + 1] = 0
    for name in ("duplicate_token", "induction"):
        masks[name][:second_copy] = 0
    for mask in masks.values():
        if prepend_bos:
            mask[:, 0] = 0
    return masks


def head_scores(model: HookedTransformer, config: HeadScoreConfig | None = None) -> dict[str, torch.Tensor]:
    """All three scores, name -> [n_layers, n_heads] (float64), from shared forward passes: the mean over
    sequences of `per_sequence_head_scores`."""
    return {name: scores.mean(0) for name, scores in per_sequence_head_scores(model, config).items()}


def per_sequence_head_scores(model: HookedTransformer, config: HeadScoreConfig | None = None) -> dict[str, torch.Tensor]:
    """All three scores of each sequence, name -> [n_sequences, n_layers, n_heads] (float64)."""
    config = config or HeadScoreConfig()
    prepend_bos = model.cfg.default_prepend_bos if config.prepend_bos is None else config.prepend_bos
    tokens = repeated_random_tokens(model, config)
    masks = target_masks(tokens[0].cpu(), config.seq_len, prepend_bos)
    # Every sequence has the same target structure (copies at a fixed offset, no repeats inside a copy).
    assert torch.equal(tokens[:, prepend_bos : prepend_bos + config.seq_len], tokens[:, prepend_bos + config.seq_len :])
    rows_scored = {name: (m.sum(-1) > 0).sum().item() for name, m in masks.items()}
    device = model.cfg.device
    stacked_masks = torch.stack([masks[name] for name in SCORE_NAMES]).to(device)  # [3, T, T]
    totals = torch.zeros(config.n_sequences, len(SCORE_NAMES), model.cfg.n_layers, model.cfg.n_heads,
                         dtype=torch.float64, device=device)
    done = 0

    def accumulate(pattern: torch.Tensor, hook) -> None:
        # pattern [batch, head, query, key] -> attention on target per sequence, summed over rows.
        on_target = torch.einsum("bhqk,sqk->bsh", pattern.double(), stacked_masks.to(torch.float64))
        totals[done : done + len(pattern), :, hook.layer()] = on_target

    batches = tokens.split(config.batch_size)
    with torch.no_grad():
        bar = tqdm(batches, desc="head scores", disable=not config.progress)
        for chunk in progress.counted(bar, "head scores", total=len(batches), unit="batches"):
            # stop_at_layer skips the unembedding, which dominates the cost on a 50k vocabulary.
            model.run_with_hooks(
                chunk.to(device),
                stop_at_layer=model.cfg.n_layers,
                fwd_hooks=[(lambda name: name.endswith("attn.hook_pattern"), accumulate)],
            )
            done += len(chunk)
    return {name: (totals[:, i] / rows_scored[name]).cpu() for i, name in enumerate(SCORE_NAMES)}


def induction_scores(model: HookedTransformer, n_sequences: int = 32, seq_len: int = 50, seed: int = 0) -> torch.Tensor:
    """[n_layers, n_heads] fraction of attention on the token after the earlier copy."""
    config = HeadScoreConfig(n_sequences=n_sequences, seq_len=seq_len, seed=seed)
    return head_scores(model, config)["induction"]
