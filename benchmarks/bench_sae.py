"""Gated SAE training throughput on the random-init TinyStories-8M twin (real shape, real loading path).

Under pytest-benchmark, every time is a ratio to a baseline measured in the same run: the model's
forward pass to block 6 over one LM batch (8 x 128 tokens), i.e. generating that batch's activations
(`ratio_to_forward` in extra_info; `tokens_per_second` there too, for the record). Benchmarks: one
sae_lens training step of a gated SAE of width 1024 (the CI budget) and 4096 (the thesis's 16 x 256)
on a batch of the same size, and a full `fit_sae` run (activations once, then training) on a
story corpus. Nothing is asserted about time.

    ./run bench -k sae                                   (CPU)
    MECHINTERP_BENCH_DEVICE=cuda ./run bench -k sae      (a GPU, if there is one)

Run as a script it measures end-to-end throughput once and estimates thesis-scale training time
(width 4096, blocks 5, 6 and 7, TinyStories streamed so every token is a fresh LM forward):

    python benchmarks/bench_sae.py --device cuda --budget 100000000
"""

from __future__ import annotations

import argparse
import os
import time

import pytest
import torch

DEVICE = os.environ.get("MECHINTERP_BENCH_DEVICE", "cpu")
LM_BATCH = (8, 128)  # prompts x context: one activation batch = 1024 tokens = one SAE training batch
BLOCK = 6
BASELINE: dict[str, float] = {}  # mean seconds of the forward-pass baseline


def twin_model(device: str):
    from fixtures.twins import twin_cache
    from mechinterp.models import load

    with twin_cache(["tiny-stories-8M"]):
        return load("tiny-stories-8M", device=device)


def random_tokens(seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 50257, LM_BATCH, generator=torch.Generator().manual_seed(seed))


def trainer_for(model, width: int, device: str):
    """sae_lens's SAETrainer around a fresh gated training SAE, as mechinterp.sae_training builds it."""
    from mechinterp.sae_config import SAETrainingConfig
    from mechinterp.sae_training import sae_trainer

    config = SAETrainingConfig(block=BLOCK, width=width, train_batch_size_tokens=LM_BATCH[0] * LM_BATCH[1],
                               n_batches_in_buffer=8, training_tokens=10**6, device=device, normalize_activations="none")
    return sae_trainer(model, iter(()), config)  # fed by hand with trainer.step(batch)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


# --- pytest-benchmark ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model():
    return twin_model(DEVICE)


@pytest.fixture(scope="module")
def activations(model):
    from mechinterp.features import residual_at

    return residual_at(model, random_tokens(), f"blocks.{BLOCK}.hook_resid_post").reshape(-1, model.cfg.d_model)


def record(benchmark, tokens: int) -> None:
    mean = benchmark.stats.stats.mean
    benchmark.extra_info["tokens_per_second"] = tokens / mean
    benchmark.extra_info["device"] = DEVICE
    if "forward" in BASELINE:
        benchmark.extra_info["ratio_to_forward"] = mean / BASELINE["forward"]


def test_baseline_forward_to_block(benchmark, model):
    """Baseline: activations of one LM batch at block 6 (the forward stops after the block)."""
    from mechinterp.features import residual_at

    benchmark.group = "sae-training"
    tokens = random_tokens()

    def forward():
        residual_at(model, tokens, f"blocks.{BLOCK}.hook_resid_post")
        _sync(DEVICE)

    benchmark.pedantic(forward, rounds=5, iterations=1, warmup_rounds=1)
    BASELINE["forward"] = benchmark.stats.stats.mean
    record(benchmark, tokens.numel())


@pytest.mark.parametrize("width", [1024, 4096])
def test_sae_training_step(benchmark, model, activations, width):
    """One sae_lens training step (forward, losses, backward, Adam) on one batch of activations."""
    benchmark.group = "sae-training"
    trainer = trainer_for(model, width, DEVICE)
    batch = activations.to(DEVICE)

    def step():
        trainer.step(batch)
        _sync(DEVICE)

    benchmark.pedantic(step, rounds=5, iterations=1, warmup_rounds=1)
    record(benchmark, batch.shape[0])


def test_fit_sae_end_to_end(benchmark, model, tmp_path):
    """mechinterp.sae_training.fit_sae: one LM pass over a story corpus, then 16 training steps (width 1024)."""
    from fixtures.corpus import story_corpus
    from mechinterp.sae_config import SAETrainingConfig
    from mechinterp.sae_training import fit_sae

    benchmark.group = "sae-training"
    config = SAETrainingConfig(block=BLOCK, width=1024, training_tokens=16 * 1024, train_batch_size_tokens=1024,
                               n_batches_in_buffer=8, store_batch_size_prompts=8, n_batches_for_norm_estimate=2,
                               device=DEVICE)
    texts = story_corpus(150, seed=0)
    result = benchmark.pedantic(lambda: fit_sae(model, texts, config), rounds=1, iterations=1)
    record(benchmark, result[2])


# --- script: end-to-end throughput and the thesis-scale estimate -----------------------------------


def measure(device: str, width: int, steps: int) -> dict[str, float]:
    """tokens/s of the LM forward to each thesis block and of one gated SAE training step."""
    from mechinterp.features import residual_at

    model = twin_model(device)
    tokens = random_tokens().to(device)
    rates = {}
    for block in (5, 6, 7):
        residual_at(model, tokens, f"blocks.{block}.hook_resid_post")  # warm-up
        _sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            acts = residual_at(model, tokens, f"blocks.{block}.hook_resid_post")
        _sync(device)
        rates[f"lm_to_block_{block}"] = steps * tokens.numel() / (time.perf_counter() - start)
    trainer = trainer_for(model, width, device)
    batch = acts.reshape(-1, model.cfg.d_model)
    trainer.step(batch)
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        trainer.step(batch)
    _sync(device)
    rates["sae_step"] = steps * batch.shape[0] / (time.perf_counter() - start)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description="gated SAE training throughput on the TinyStories-8M twin")
    parser.add_argument("--device", default=DEVICE)
    parser.add_argument("--width", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--budget", type=int, default=100_000_000, help="training tokens per SAE for the estimate")
    args = parser.parse_args()
    rates = measure(args.device, args.width, args.steps)
    for name, rate in rates.items():
        print(f"{name:>16}: {rate:10.0f} tokens/s")
    total = 0.0
    for block in (5, 6, 7):
        per_token = 1 / rates[f"lm_to_block_{block}"] + 1 / rates["sae_step"]  # streamed: LM forward + SAE step
        seconds = args.budget * per_token
        total += seconds
        print(f"block {block}: {args.budget:.2e} tokens at {1 / per_token:.0f} tokens/s -> {seconds / 3600:.1f} h")
    print(f"thesis scale (width {args.width}, blocks 5, 6, 7, {args.budget:.2e} tokens each) on {args.device}: {total / 3600:.1f} h")


if __name__ == "__main__":
    main()
