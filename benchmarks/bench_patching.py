"""Speed of the causal half of experiment 2 on the random-init twins of TinyStories-8M and GPT-2
small (real shapes, real loading path). Nothing is asserted about time.

1. Batched patching vs transformer_lens.patching (one full forward pass per patch) on the thesis's
   pair, same inputs, same run: each pair of benchmarks shares a group, the results are asserted
   equal (1e-4), and our benchmark records `speedup_vs_transformer_lens` in extra_info.
2. Every analysis on the 8 protocol prompts and the 100-prompt dataset, as `ratio_to_forward`: its
   time over one plain forward pass of the same model on the 100-prompt dataset, measured first.
   Left out as too slow for a CPU benchmark: head outputs by position on the 100 prompts (~2,000
   sites x 100 prompts), and GPT-2's head-output patching on the 100 prompts.

    pytest benchmarks/bench_patching.py --benchmark-only --benchmark-columns=mean,rounds
"""

from __future__ import annotations

import functools

import pytest
import torch
import transformer_lens.patching as tl_patching

from fixtures.tokenizer import gpt2_tokenizer
from fixtures.twins import twin_cache
from mechinterp import attribution_patching, eap, patching
from mechinterp.ioi import generate_dataset, protocol_prompts
from mechinterp.metrics import logit_diff
from mechinterp.models import load

TWINS = ["tiny-stories-8M", "gpt2-small"]
ROUNDS = {"tiny-stories-8M": 2, "gpt2-small": 1}
RAW = patching.PatchingConfig(normalize=False, progress=False)
QUIET = patching.PatchingConfig(progress=False)
OURS: dict[tuple[str, str], tuple[float, torch.Tensor]] = {}  # (twin, analysis) -> (mean s, result)
BASELINE: dict[str, float] = {}


@pytest.fixture(scope="module", params=TWINS)
def twin(request):
    with twin_cache([request.param]):
        model = load(request.param)
    return request.param, model


@functools.lru_cache(maxsize=None)
def data(name: str):
    tokenizer = gpt2_tokenizer()
    if name == "pair":
        return patching.patching_pair_batches(tokenizer)
    prompts = protocol_prompts() if name == "protocol" else generate_dataset(tokenizer, 100, seed=0)
    return patching.dataset_batches(tokenizer, prompts)


# --- 1. ours vs transformer_lens.patching ------------------------------------------------------

VERSUS = {
    "resid_pre": (patching.patch_resid_pre_by_pos, tl_patching.get_act_patch_resid_pre),
    "head_out_all_pos": (patching.patch_head_out_all_pos, tl_patching.get_act_patch_attn_head_out_all_pos),
    "head_out_by_pos": (patching.patch_head_out_by_pos, tl_patching.get_act_patch_attn_head_out_by_pos),
}
# transformer_lens's head-by-position run is ~2,000 full passes per twin: TS-8M only
VERSUS_CASES = [(t, a) for t in TWINS for a in VERSUS if not (t == "gpt2-small" and a == "head_out_by_pos")]


def _bench(benchmark, group: str, rounds: int, fn):
    benchmark.group = group
    return benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=0)


@pytest.mark.parametrize("analysis", list(VERSUS))
def test_ours(benchmark, twin, analysis):
    name, model = twin
    if (name, analysis) not in VERSUS_CASES:
        pytest.skip("no transformer_lens comparison for this case")
    clean, corrupt = data("pair")
    result = _bench(benchmark, f"{name} {analysis}", ROUNDS[name], lambda: VERSUS[analysis][0](model, clean, corrupt, cfg=RAW))
    OURS[(name, analysis)] = (benchmark.stats.stats.mean, result)


@pytest.mark.parametrize("analysis", list(VERSUS))
def test_transformer_lens(benchmark, twin, analysis):
    name, model = twin
    if (name, analysis) not in OURS:
        pytest.skip("our benchmark did not run")
    clean, corrupt = data("pair")
    _, cache = model.run_with_cache(clean.tokens)
    theirs = VERSUS[analysis][1]
    result = _bench(benchmark, f"{name} {analysis}", 1, lambda: theirs(model, corrupt.tokens, cache, lambda logits: logit_diff(logits, clean)))
    ours_mean, ours_result = OURS[(name, analysis)]
    torch.testing.assert_close(ours_result, result.to(ours_result.dtype), atol=1e-4, rtol=0)
    speedup = benchmark.stats.stats.mean / ours_mean
    benchmark.extra_info["speedup_of_ours"] = speedup
    print(f"\n{name} {analysis}: ours {ours_mean:.3g} s, transformer_lens {benchmark.stats.stats.mean:.3g} s, speedup {speedup:.1f}x")


# --- 2. every analysis on the protocol prompts and the 100-prompt dataset ----------------------

ANALYSES = {
    "patch_resid_pre_by_pos": lambda m, c, x: patching.patch_resid_pre_by_pos(m, c, x, cfg=QUIET),
    "patch_head_out_all_pos": lambda m, c, x: patching.patch_head_out_all_pos(m, c, x, cfg=QUIET),
    "patch_head_out_by_pos": lambda m, c, x: patching.patch_head_out_by_pos(m, c, x, cfg=QUIET),
    "attribute_resid_pre_by_pos": lambda m, c, x: attribution_patching.attribute_resid_pre_by_pos(m, c, x, cfg=QUIET),
    "attribute_head_out_by_pos": lambda m, c, x: attribution_patching.attribute_head_out_by_pos(m, c, x, cfg=QUIET),
    "edge_attribution": lambda m, c, x: eap.edge_attribution(m, c, x, cfg=eap.EAPConfig(progress=False)),
}
TOO_SLOW = {("dataset100", "patch_head_out_by_pos"), ("dataset100", "patch_head_out_all_pos", "gpt2-small")}


def test_baseline_forward(benchmark, twin):
    """One plain forward pass on the 100-prompt dataset (the unit of `ratio_to_forward`)."""
    name, model = twin
    clean, _ = data("dataset100")
    with torch.no_grad():
        _bench(benchmark, f"{name} analyses", ROUNDS[name] + 2, lambda: model(clean.tokens))
    BASELINE[name] = benchmark.stats.stats.mean


@pytest.mark.parametrize("dataset", ["protocol", "dataset100"])
@pytest.mark.parametrize("analysis", list(ANALYSES))
def test_analysis(benchmark, twin, dataset, analysis):
    name, model = twin
    if (dataset, analysis) in TOO_SLOW or (dataset, analysis, name) in TOO_SLOW:
        pytest.skip("too slow for a CPU benchmark (see module docstring)")
    clean, corrupt = data(dataset)
    _bench(benchmark, f"{name} analyses", 1, lambda: ANALYSES[analysis](model, clean, corrupt))
    if name in BASELINE:
        benchmark.extra_info["ratio_to_forward"] = benchmark.stats.stats.mean / BASELINE[name]
