"""Experiment 1 (thesis s3.3, figs 3.1-3.6): previous-token, induction and duplicate-token heads.

E1.prev-weaker    TinyStories-8M's previous-token heads are far weaker than GPT-2 small's, whose H4.11
                  puts about all its attention on the previous token.
E1.no-induction   TinyStories-8M has no induction heads; GPT-2 small has several (5.5, 6.9 in the literature).
E1.dup-weak       TinyStories-8M's only duplicate-token head is the weak H4.0; GPT-2 small's H3.0 and
                  H0.5 are strong (the thesis's heads; the literature's 0.1, 0.10, 3.0 are shown too).

Scores: mechinterp.head_scores on repeated uniformly random tokens. Every measure reports the same
quantities on every model; the threshold rows (claims/thresholds.py, section E1) pick which apply.
"""

from __future__ import annotations

import functools
import math
from dataclasses import replace
from pathlib import Path

import torch

from claims.claim import Claim
from claims.framework import Measured
from claims.thesis.heads import (
    DUPLICATE_HEAD_TS8M,
    LITERATURE_DUPLICATE_HEADS_GPT2,
    LITERATURE_INDUCTION_HEADS_GPT2,
    PREVIOUS_TOKEN_HEAD_GPT2,
    THESIS_DUPLICATE_HEADS_GPT2,
)
from mechinterp.head_scores import (
    SCORE_NAMES,
    HeadScoreConfig,
    head_scores,
    per_sequence_head_scores,
)
from mechinterp.heads import Head, argmax_head, top_heads
from mechinterp.memo import memoized
from mechinterp.plots.circuit import head_scores_figure
from mechinterp.robustness import (
    ClaimDistribution,
    PerPrompt,
    RobustnessConfig,
    robustness_block_of,
)

# The protocol's free knobs: 20 sequences of 50 random tokens, repeated (101 tokens with BOS). The
# thesis gives no sizes; 50 is the usual length (Olsson et al., ARENA); each sequence's score already
# averages 50 rows, so 20 sequences put a head's standard error near 0.01, far inside every margin.
CONFIG = HeadScoreConfig(n_sequences=20, seq_len=50, seed=0)

# Head "present" cut-off for counting induction heads: a head spending at least 40% of its attention
# on the induction target (chance on 50-100 keys is ~0.01-0.02). Stated with the rows too.
INDUCTION_HEAD_MIN_SCORE = 0.4

# For information (a measured value with no row): the thesis draws random tokens from all of GPT-2's
# 50k-token vocabulary, most of which TinyStories never contains, so TS-8M's heads see embeddings its
# training never updated. The same induction score on TinyStories's own tokens is shown beside "no
# induction heads". Offline, TinyStories's vocabulary is approximated by the tokens of the synthetic story
# corpus (fixtures.corpus, a few hundred tokens: a subset of the real one); a text file of real stories
# given as $MECHINTERP_TINYSTORIES_TEXT (claims.options) replaces it.
CORPUS_STORIES = 500


@functools.lru_cache(maxsize=None)
def tinystories_vocabulary(path: str | None = None) -> tuple[tuple[int, ...], str]:
    """(token ids, where they came from): the tokens of `path` (real TinyStories text) or of the synthetic corpus."""
    from fixtures.corpus import story_corpus
    from fixtures.tokenizer import gpt2_tokenizer

    if path:
        texts, source = Path(path).read_text(encoding="utf-8").splitlines(), f"tokens of {path}"
    else:
        texts = story_corpus(CORPUS_STORIES, seed=0)
        source = f"tokens of {CORPUS_STORIES} synthetic stories (fixtures.corpus), standing in for TinyStories offline"
    tokenizer = gpt2_tokenizer()
    return tuple(sorted({t for text in texts for t in tokenizer.encode(text)})), source




def protocol_head_scores(model) -> dict:
    """The three E1 claims read the same scores: computed once per model (mechinterp.memo)."""
    return memoized(model, ("head_scores", repr(CONFIG)), lambda: head_scores(model, CONFIG))


def _score(scores, head) -> float:
    layer, h = head
    if layer >= scores.shape[0] or h >= scores.shape[1]:
        return float("nan")  # the head does not exist in this model: the row fails, it is not skipped
    return scores[layer, h].item()


def _name(head) -> str:
    return str(Head.parse(head))


def _details(scores) -> dict:
    return {name: {"top_heads": top_heads(values, 5)} for name, values in scores.items()}


def prev_weaker_values(scores) -> dict[str, float]:
    prev = scores["previous_token"]
    return {
        "max_prev_token_score": prev.max().item(),
        f"{_name(PREVIOUS_TOKEN_HEAD_GPT2)}_prev_token_score": _score(prev, PREVIOUS_TOKEN_HEAD_GPT2),
    }


def no_induction_values(scores) -> dict[str, float]:
    induction = scores["induction"]
    return {
        "max_induction_score": induction.max().item(),
        f"n_heads_induction_score_ge_{INDUCTION_HEAD_MIN_SCORE}": float((induction >= INDUCTION_HEAD_MIN_SCORE).sum().item()),
    }


def dup_weak_values(scores) -> dict[str, float]:
    dup = scores["duplicate_token"]
    others = dup.clone()
    layer, h = DUPLICATE_HEAD_TS8M
    if layer < dup.shape[0] and h < dup.shape[1]:
        others[layer, h] = float("-inf")
    values = {
        f"{_name(DUPLICATE_HEAD_TS8M)}_dup_score": _score(dup, DUPLICATE_HEAD_TS8M),
        # > 0 exactly when H4.0 is the top duplicate-token head
        f"{_name(DUPLICATE_HEAD_TS8M)}_dup_margin_over_next_head": _score(dup, DUPLICATE_HEAD_TS8M) - others.max().item(),
    }
    values.update({f"{_name(head)}_dup_score": _score(dup, head) for head in THESIS_DUPLICATE_HEADS_GPT2})
    return values


def measure_prev_weaker(model) -> Measured:
    scores = protocol_head_scores(model)
    prev = scores["previous_token"]
    values = prev_weaker_values(scores)
    figure = head_scores_figure({"previous_token": prev}, model.cfg.model_name, {"previous_token": [PREVIOUS_TOKEN_HEAD_GPT2]})
    return Measured(values, figure, _details({"previous_token": prev}))


def measure_no_induction(model, tinystories_text: str | None = None) -> Measured:
    """`tinystories_text`: a file of real stories whose tokens stand for TinyStories's vocabulary (else the synthetic corpus's)."""
    scores = protocol_head_scores(model)
    induction = scores["induction"]
    values = no_induction_values(scores)
    vocabulary, source = tinystories_vocabulary(tinystories_text)
    on_ts_tokens = head_scores(model, replace(CONFIG, vocabulary=vocabulary))["induction"]
    values["max_induction_score_tinystories_vocab"] = on_ts_tokens.max().item()
    details = _details({"induction": induction})
    details["tinystories_vocabulary"] = {"source": source, "n_tokens": len(vocabulary),
                                         "top_heads": top_heads(on_ts_tokens, 5)}
    details["literature_induction_heads_gpt2"] = {_name(h): _score(induction, h) for h in LITERATURE_INDUCTION_HEADS_GPT2}
    figure = head_scores_figure({"induction": induction}, model.cfg.model_name, {"induction": LITERATURE_INDUCTION_HEADS_GPT2})
    return Measured(values, figure, details)


def measure_dup_weak(model) -> Measured:
    scores = protocol_head_scores(model)
    dup = scores["duplicate_token"]
    values = dup_weak_values(scores)
    details = _details({"duplicate_token": dup})
    details["literature_duplicate_heads_gpt2 (Wang et al.)"] = {_name(h): _score(dup, h) for h in LITERATURE_DUPLICATE_HEADS_GPT2}
    details["thesis_duplicate_heads_gpt2"] = {_name(h): _score(dup, h) for h in THESIS_DUPLICATE_HEADS_GPT2}
    # Boxed: every head the claim names (H4.0 for TS-8M; H3.0, H0.5 for GPT-2 small).
    named = [h for h in [DUPLICATE_HEAD_TS8M, *THESIS_DUPLICATE_HEADS_GPT2] if not math.isnan(_score(dup, h))]
    figure = head_scores_figure({"duplicate_token": dup}, model.cfg.model_name, {"duplicate_token": named})
    return Measured(values, figure, details)


# --- over a distribution (mechinterp.robustness) ---------------------------------------------------
# E1's scores are on random tokens, not IOI prompts: here the "distribution" is RobustnessConfig.n_prompts
# fresh random sequences (seeds other than the protocol's) split evenly over eight copy lengths n = 10, 20,
# ..., 80 (2n + 1 tokens each); the bootstrap resamples sequences and the held-out groups are the lengths.
DISTRIBUTION_SEQ_LENS = (10, 20, 30, 40, 50, 60, 70, 80)


def per_sequence_distribution(model, cfg: RobustnessConfig) -> PerPrompt:
    def compute() -> PerPrompt:
        per_length = max(1, cfg.n_prompts // len(DISTRIBUTION_SEQ_LENS))
        arrays, groups = {name: [] for name in SCORE_NAMES}, []
        for i, seq_len in enumerate(DISTRIBUTION_SEQ_LENS):
            config = replace(CONFIG, n_sequences=per_length, seq_len=seq_len, seed=1000 + 100 * cfg.seed + i)
            for name, scores in per_sequence_head_scores(model, config).items():
                arrays[name].append(scores)
            groups += [f"n={seq_len}"] * per_length
        return PerPrompt({name: torch.cat(parts) for name, parts in arrays.items()}, groups)

    return memoized(model, ("e1-distribution", repr(CONFIG), cfg.n_prompts, cfg.seed), compute)


def _describe(cfg: RobustnessConfig) -> str:
    per_length = max(1, cfg.n_prompts // len(DISTRIBUTION_SEQ_LENS))
    return (f"{per_length * len(DISTRIBUTION_SEQ_LENS)} random-token sequences, {per_length} at each copy length "
            f"{', '.join(map(str, DISTRIBUTION_SEQ_LENS))} (seeds apart from the protocol's); {cfg.confidence:.0%} "
            f"percentile bootstrap over sequences ({cfg.n_bootstrap} resamples); spread: each length held out once")


DISTRIBUTIONS = {
    "E1.prev-weaker": ClaimDistribution(per_sequence_head_scores, prev_weaker_values,
                                        {"top previous-token head": (Head(*PREVIOUS_TOKEN_HEAD_GPT2), lambda m: argmax_head(m["previous_token"]))}),
    "E1.no-induction": ClaimDistribution(per_sequence_head_scores, no_induction_values),
    "E1.dup-weak": ClaimDistribution(per_sequence_head_scores, dup_weak_values,
                                     {"top duplicate-token head": (Head(*DUPLICATE_HEAD_TS8M), lambda m: argmax_head(m["duplicate_token"]))}),
}


def random_token_pass(claim: str):
    """Claim.robustness of an E1 claim: its scores over fresh random sequences at eight copy lengths."""

    def add(measured: Measured, subject, cfg: RobustnessConfig) -> Measured:
        per_sequence = per_sequence_distribution(subject.model, cfg)
        measured.details["robustness"] = robustness_block_of(per_sequence, DISTRIBUTIONS[claim], subject.thresholds,
                                                             measured.values, cfg, _describe(cfg))
        return measured

    return add


PREV_WEAKER = Claim(
    'E1.prev-weaker', 's3.3, figs 3.1-3.6',
    "TinyStories-8M's previous-token heads are far weaker than GPT-2 small's (H4.11 attends almost only to the previous token).",
    measure=measure_prev_weaker,
    robustness=random_token_pass("E1.prev-weaker"),
)


NO_INDUCTION = Claim(
    'E1.no-induction', 's3.3, figs 3.1-3.6',
    'TinyStories-8M has no induction heads; GPT-2 small has several.',
    measure=measure_no_induction,
    inputs=(lambda subject: subject.options.tinystories_text if subject.options else None,),
    robustness=random_token_pass("E1.no-induction"),
)


DUP_WEAK = Claim(
    'E1.dup-weak', 's3.3, figs 3.1-3.6',
    "TinyStories-8M has one weak duplicate-token head, H4.0; GPT-2 small's H3.0 and H0.5 are strong.",
    measure=measure_dup_weak,
    robustness=random_token_pass("E1.dup-weak"),
)

CLAIMS = [PREV_WEAKER, NO_INDUCTION, DUP_WEAK]
