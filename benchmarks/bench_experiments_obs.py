"""Speed of experiment 1 and the observational half of experiment 2, on the random-init twins of
TinyStories-8M and GPT-2 small (real shapes, real loading path).

Times are reported as ratios to a baseline measured in the same run: one plain forward pass of
the same model on the 100-prompt IOI dataset (`ratio_to_forward` in each benchmark's extra_info).
Nothing is asserted about time. Groups: one per twin.

    pytest benchmarks/bench_experiments_obs.py --benchmark-only
"""

from __future__ import annotations

import pytest
import torch

import claims.thesis.e1_head_scores as e1
from claims.framework import measure_claim
from fixtures.tokenizer import gpt2_tokenizer
from fixtures.twins import twin_cache
from mechinterp import memo
from mechinterp.attention import attention_between
from mechinterp.dla import dla_table
from mechinterp.head_scores import head_scores
from mechinterp.ioi import generate_dataset, make_batch, protocol_prompts
from mechinterp.logit_lens import logit_lens
from mechinterp.models import load

TWINS = ["tiny-stories-8M", "gpt2-small"]
ROUNDS = {"tiny-stories-8M": 3, "gpt2-small": 1}  # GPT-2 size analyses take seconds each
BASELINE: dict[str, float] = {}  # twin -> mean seconds of the forward-pass baseline


@pytest.fixture(scope="module", params=TWINS)
def twin(request):
    with twin_cache([request.param]):
        model = load(request.param)
    return request.param, model


@pytest.fixture(scope="module")
def batches():
    tokenizer = gpt2_tokenizer()
    return {"protocol": make_batch(tokenizer, protocol_prompts()),
            "dataset100": make_batch(tokenizer, generate_dataset(tokenizer, 100, seed=0))}


def run(benchmark, name, fn):
    benchmark.group = name
    result = benchmark.pedantic(fn, rounds=ROUNDS[name], iterations=1, warmup_rounds=0)
    if name in BASELINE:
        benchmark.extra_info["ratio_to_forward"] = benchmark.stats.stats.mean / BASELINE[name]
    return result


def test_baseline_forward(benchmark, twin, batches):
    """Baseline: one forward pass on the 100-prompt dataset (runs first in each twin's group)."""
    name, model = twin
    benchmark.group = name
    with torch.no_grad():
        benchmark.pedantic(lambda: model(batches["dataset100"].tokens), rounds=ROUNDS[name] + 2, iterations=1, warmup_rounds=1)
    BASELINE[name] = benchmark.stats.stats.mean
    benchmark.extra_info["ratio_to_forward"] = 1.0


def test_head_scores(benchmark, twin):
    name, model = twin
    run(benchmark, name, lambda: head_scores(model, e1.CONFIG))


@pytest.mark.parametrize("data", ["protocol", "dataset100"])
def test_logit_lens(benchmark, twin, batches, data):
    name, model = twin
    run(benchmark, name, lambda: logit_lens(model, batches[data]))


@pytest.mark.parametrize("data", ["protocol", "dataset100"])
def test_dla(benchmark, twin, batches, data):
    name, model = twin
    run(benchmark, name, lambda: dla_table(model, batches[data]))


@pytest.mark.parametrize("data", ["protocol", "dataset100"])
def test_attention_between(benchmark, twin, batches, data):
    name, model = twin
    run(benchmark, name, lambda: attention_between(model, batches[data], "END", "IO"))


@pytest.mark.parametrize("data", ["protocol", "dataset100"])
def test_direction_attribution(benchmark, twin, batches, data):
    """features.direction_attribution over 12 random 16-dim subspaces at the middle block (the shape of the planted
    models' ground truth that E3 records there): one forward and backward pass plus the per-position sums."""
    from mechinterp.features import direction_attribution

    name, model = twin
    generator = torch.Generator().manual_seed(0)
    basis, _ = torch.linalg.qr(torch.randn(model.cfg.d_model, 192, generator=generator))
    subspaces = {f"s{k}": basis[:, 16 * k:16 * (k + 1)].T.contiguous() for k in range(12)}
    hook = f"blocks.{model.cfg.n_layers // 2}.hook_resid_post"
    run(benchmark, name, lambda: direction_attribution(model, batches[data], hook, subspaces))


# The E1 and E2-observational claims, measured through their declarations (claims/thesis).
OBS_CLAIMS = ("E1.prev-weaker", "E1.no-induction", "E1.dup-weak", "E2.lens-monotone", "E2.lens-jump", "E2.dla-single",
              "E2.no-neg-mover", "E2.h77-name-mover", "E2.h57-s-inhibition", "E2.h611-secondary")


def test_all_obs_claims(benchmark, twin):
    """Every E1 and E2-observational claim's protocol (what the claims suite runs, figures included)."""
    name, model = twin

    def all_claims():
        memo.forget(model)  # the E1 claims share one head-score run (mechinterp.memo); time it too
        for claim in OBS_CLAIMS:
            measure_claim(claim, model, name)

    run(benchmark, name, all_claims)
