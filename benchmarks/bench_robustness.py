"""Cost of the robustness pass (mechinterp.robustness, issue 12) on the random-init twins of TinyStories-8M
and GPT-2 small: every E1 and E2 claim's distribution measure (E2.eap-edges's per-prompt EAP included), with its bootstrap
(1000 resamples) and leave-one-template-out, at 256 prompts against the same pass at 8 prompts, in one run.
The memo is cleared before every round, so each round does every forward pass. One thread.

    OMP_NUM_THREADS=1 pytest benchmarks/bench_robustness.py --benchmark-only

extra_info["ratio_to_8_prompts"] on the 256-prompt benchmark: its mean time over the 8-prompt one's
(32x the prompts; the issue's bound is 30x on the TinyStories-8M twin). Nothing is asserted about time.
"""

from __future__ import annotations

import pytest
import torch

import claims.thesis.e1_head_scores as e1
from claims.claim import paper
from claims.framework import tokenizer_for
from fixtures.twins import twin_cache
from mechinterp import memo
from mechinterp.models import load
from mechinterp.robustness import (
    RobustnessConfig,
    distribution_per_prompt,
    evaluate_distribution,
)

TWINS = ["tiny-stories-8M", "gpt2-small"]
SIZES = [8, 256]
SECONDS: dict[tuple[str, int], float] = {}


@pytest.fixture(scope="module", params=TWINS)
def twin(request):
    torch.set_num_threads(1)
    with twin_cache([request.param]):
        model = load(request.param)
    return request.param, model


def e2_distributions(model) -> dict:
    """Every thesis claim's distribution over IOI prompts, from its declaration (claims.claim.Claim.distribution)."""
    return {claim.id: claim.distribution(model) for claim in paper("thesis").claims if claim.distribution is not None}


def robustness_pass(model, n_prompts: int) -> int:
    """Every E1/E2 claim's values, intervals and held-out ranges over `n_prompts` prompts; returns the claim count."""
    memo.forget(model)
    cfg = RobustnessConfig(n_prompts=n_prompts)
    tokenizer = tokenizer_for(model)
    count = 0
    for spec in e2_distributions(model).values():
        collects = spec.collect if isinstance(spec.collect, tuple) else (spec.collect,)
        parts = [distribution_per_prompt(model, tokenizer, c, cfg) for c in collects]
        merged = type(parts[0])({k: v for p in parts for k, v in p.arrays.items()}, parts[0].groups)
        evaluate_distribution(merged, spec.statistic, cfg, spec.roles)
        count += 1
    per_sequence = e1.per_sequence_distribution(model, cfg)
    for spec in e1.DISTRIBUTIONS.values():
        evaluate_distribution(per_sequence, spec.statistic, cfg, spec.roles)
        count += 1
    return count


@pytest.mark.parametrize("n_prompts", SIZES)
def test_robustness_pass(benchmark, twin, n_prompts):
    name, model = twin
    benchmark.group = f"robustness {name}"
    claims = benchmark.pedantic(robustness_pass, args=(model, n_prompts), rounds=1, iterations=1, warmup_rounds=0)
    assert claims == 14
    SECONDS[(name, n_prompts)] = benchmark.stats.stats.mean
    benchmark.extra_info["seconds"] = benchmark.stats.stats.mean
    if n_prompts != SIZES[0] and (name, SIZES[0]) in SECONDS:
        benchmark.extra_info["ratio_to_8_prompts"] = benchmark.stats.stats.mean / SECONDS[(name, SIZES[0])]
