"""SAE training on a residual stream (thesis section 3.5: gated), cached on disk by what made it.

Training is sae_lens's: its training SAE of `config.architecture` (gated by default), its activation
store and its trainer. This module runs
it (`train_sae`) and measures quality on held-out text (explained variance, L0, the model's loss with
the SAE spliced in), with sae_lens's own evals, stored beside the weights. The settings are
`sae_config.SAETrainingConfig`; the keyed cache, its locks and checked loading are `sae_cache`.

Corpus: `corpus_texts=None` streams TinyStories from the Hugging Face hub (`config.dataset_path`),
the default for users with network or a datasets cache; a list of strings trains offline.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from tqdm.auto import tqdm

from mechinterp import progress
from mechinterp.sae_cache import (
    RECORD_FILENAME,
    STAGING_MARK,
    cache_key,
    corpus_identity,
    default_cache_dir,
    entry_lock,
    load_sae_dir,
    model_identity,
    sae_directory,
    sweep_stale_staging,
)
from mechinterp.sae_config import SAETrainingConfig


def _token_rate_trainer_class():
    from sae_lens.training.sae_trainer import SAETrainer

    class TokenRateTrainer(SAETrainer):
        """sae_lens's trainer; its bar moves every 100 steps, this one every step and reads tokens/s."""

        def _update_pbar(self, step_output, pbar, update_interval: int = 100) -> None:
            pbar.unit, pbar.unit_scale = "tok", True
            pbar.update(self.cfg.train_batch_size_samples)
            if (stage := progress.current()) is not None and stage.name == "SAE training":
                stage.advance(self.cfg.train_batch_size_samples)
            if self.n_training_steps % 10 == 0:
                pbar.set_postfix(loss=f"{step_output.loss.item():.4f}", refresh=False)

    return TokenRateTrainer


def _split_heldout(texts: list[str], fraction: float) -> tuple[list[str], list[str]]:
    n_heldout = int(round(len(texts) * fraction))
    if fraction > 0 and n_heldout == 0 and len(texts) > 1:
        n_heldout = 1
    if n_heldout >= len(texts):
        raise ValueError(f"corpus of {len(texts)} texts is too small to hold out {fraction:.0%} for evaluation")
    return texts[: len(texts) - n_heldout], texts[len(texts) - n_heldout :]


def _runner_config(model, config: SAETrainingConfig):
    from sae_lens import LanguageModelSAERunnerConfig, LoggingConfig

    _, config_class = _training_classes(config.architecture)
    sae_config = config_class(
        d_in=model.cfg.d_model,
        d_sae=config.d_sae(model.cfg.d_model),
        normalize_activations=config.normalize_activations,
        dtype=config.dtype,
        device=config.device,
        **_architecture_knobs(config),
    )
    return LanguageModelSAERunnerConfig(
        sae=sae_config,
        model_name=model.cfg.model_name,
        hook_name=config.hook_name,
        dataset_path=config.dataset_path,
        streaming=True,
        is_dataset_tokenized=False,
        context_size=config.context_size,
        training_tokens=config.training_tokens,
        train_batch_size_tokens=config.train_batch_size_tokens,
        store_batch_size_prompts=config.store_batch_size_prompts,
        n_batches_in_buffer=config.n_batches_in_buffer,
        lr=config.lr,
        lr_warm_up_steps=config.lr_warm_up_steps,
        lr_scheduler_name=config.lr_scheduler_name,
        n_batches_for_norm_estimate=config.n_batches_for_norm_estimate,
        seed=config.seed,
        device=config.device,
        dtype=config.dtype,
        logger=LoggingConfig(log_to_wandb=False),
        checkpoint_path=None,
        output_path=None,
        verbose=False,
        model_from_pretrained_kwargs={},  # the model is given, never loaded by name
        exclude_special_tokens=config.exclude_special_tokens,
    )


def _training_classes(architecture: str):
    """sae_lens's (training SAE class, its config class) registered under `architecture`."""
    import sae_lens  # noqa: F401 (registers the architectures)
    from sae_lens.registry import get_sae_training_class

    return get_sae_training_class(architecture)


def _architecture_knobs(config: SAETrainingConfig) -> dict:
    """The architecture's own settings, under sae_lens's names for them."""
    if config.architecture in ("gated", "standard"):
        return {"l1_coefficient": config.l1_coefficient, "l1_warm_up_steps": config.l1_warm_up_steps}
    if config.architecture == "topk":
        return {"k": config.topk_k}
    return {"l0_coefficient": config.jumprelu_l0_coefficient, "jumprelu_init_threshold": config.jumprelu_init_threshold,
            "jumprelu_bandwidth": config.jumprelu_bandwidth}


def _dataset(texts: list[str] | None, dataset_path: str, split: str):
    import datasets

    if texts is not None:
        return datasets.Dataset.from_dict({"text": list(texts)})
    return datasets.load_dataset(dataset_path, split=split, streaming=True)


def _activation_store(model, runner_config, dataset):
    from sae_lens.training.activations_store import ActivationsStore

    with warnings.catch_warnings():
        # "dataset is not tokenized" / "fewer samples than tokens": expected for a small text corpus
        warnings.simplefilter("ignore", UserWarning)
        return ActivationsStore.from_config(model, runner_config, override_dataset=dataset)


# Activations of the last corpus passes, reused in-process by SAEs that differ only in what does not change
# them (seed, width, sparsity, lr, training length: several seeds per block pay the model's pass once).
_ACTIVATION_MEMO: collections.OrderedDict[tuple, torch.Tensor] = collections.OrderedDict()
_ACTIVATION_MEMO_SIZE = 3  # one entry per block of the E3 SAEs
_ACTIVATION_FIELDS = ("block", "hook_point", "context_size", "store_batch_size_prompts", "n_batches_in_buffer",
                      "normalize_activations", "exclude_special_tokens", "device", "dtype", "dataset_path")


def corpus_activations(model, texts: list[str], config: SAETrainingConfig) -> torch.Tensor:
    """[n_tokens, d_model] activations at `config.hook_name` over one pass of `texts`, packed into
    `config.context_size` windows by sae_lens's ActivationsStore (its tokenization, BOS handling and
    special-token filter). The last partial LM batch of the pass is dropped. Memoised per model
    weights, texts and the settings that shape the pass (not the seed); callers must not modify it."""
    key = (model_identity(model)["weights_sha256"], corpus_identity(texts, config.dataset_path)["sha256"],
           tuple(getattr(config, name) for name in _ACTIVATION_FIELDS))
    if key in _ACTIVATION_MEMO:
        _ACTIVATION_MEMO.move_to_end(key)
        return _ACTIVATION_MEMO[key]
    activations = _corpus_pass(model, texts, config)
    _ACTIVATION_MEMO[key] = activations
    while len(_ACTIVATION_MEMO) > _ACTIVATION_MEMO_SIZE:
        _ACTIVATION_MEMO.popitem(last=False)
    return activations


@torch.no_grad()
def _corpus_pass(model, texts: list[str], config: SAETrainingConfig) -> torch.Tensor:
    store = _activation_store(model, _runner_config(model, config), _dataset(texts, config.dataset_path, "train"))
    chunks = []
    with tqdm(desc=f"activations at {config.hook_name}", unit="tok", unit_scale=True) as bar, \
            progress.stage("SAE corpus pass", unit="tokens", detail=config.hook_name) as stage:
        while True:
            try:
                chunk = store.get_filtered_llm_batch(raise_on_epoch_end=True)
            except StopIteration:
                break
            chunks.append(chunk.to(config.device))
            bar.update(chunk.shape[0])
            stage.advance(chunk.shape[0])
    if not chunks:
        raise ValueError(
            f"the corpus ({len(texts)} texts) does not fill one LM batch of {config.store_batch_size_prompts} x "
            f"{config.context_size} tokens; give more text or lower store_batch_size_prompts/context_size"
        )
    return torch.cat(chunks)


def shuffled_batches(activations: torch.Tensor, batch_size: int, seed: int) -> Iterator[torch.Tensor]:
    """Endless batches of `activations` rows, reshuffled every epoch with a seeded generator."""
    if len(activations) < batch_size:
        raise ValueError(f"{len(activations)} activations do not fill one training batch of {batch_size}")
    generator = torch.Generator().manual_seed(seed)
    while True:
        for index in torch.randperm(len(activations), generator=generator).split(batch_size):
            if len(index) == batch_size:
                yield activations[index.to(activations.device)]


def fit_sae(model, corpus_texts: list[str] | None, config: SAETrainingConfig):
    """Train an SAE of `config.architecture` with sae_lens's trainer; returns (training SAE, seconds, tokens seen).

    A finite text corpus is run through the model once and its activations are cycled in shuffled
    epochs (sae_lens's ActivationsStore would rerun the model every epoch: on CPU that is most of the
    cost). Without texts, sae_lens's ActivationsStore streams `config.dataset_path` as usual.
    """
    start = time.perf_counter()
    if corpus_texts is None:
        data = _activation_store(model, _runner_config(model, config), _dataset(None, config.dataset_path, "train"))
    else:
        data = shuffled_batches(corpus_activations(model, corpus_texts, config), config.train_batch_size_tokens, config.seed)
    sae, tokens_seen = fit_on_activations(model, data, config)
    return sae, time.perf_counter() - start, tokens_seen


def fit_on_activations(model, data: Iterator[torch.Tensor], config: SAETrainingConfig):
    """sae_lens's training SAE and trainer on batches of activations; (training SAE, tokens seen)."""
    trainer = sae_trainer(model, data, config)
    with progress.stage("SAE training", total=config.training_tokens, unit="tokens", detail=config.hook_name):
        return trainer.fit(), trainer.n_training_samples


def sae_trainer(model, data: Iterator[torch.Tensor], config: SAETrainingConfig):
    """A fresh, seeded sae_lens training SAE of `config.architecture` inside sae_lens's SAETrainer (bar in tokens/s)."""
    sae_class, config_class = _training_classes(config.architecture)
    runner_config = _runner_config(model, config)
    torch.manual_seed(config.seed)  # SAE init (and sae_lens's mixing-buffer shuffles when streaming)
    sae = sae_class(config_class.from_sae_runner_config(runner_config))
    return _token_rate_trainer_class()(cfg=runner_config.to_sae_trainer_config(), sae=sae, data_provider=data, evaluator=None)


@torch.no_grad()
def sae_quality(model, sae, texts: list[str] | None, config: SAETrainingConfig) -> dict[str, float]:
    """Held-out explained variance, L0 and (config.next_token_loss) next-token loss clean / with the SAE spliced in /
    zero-ablated.

    `texts=None` evaluates on the dataset's validation split. Computed by sae_lens's `run_evals`.
    """
    from sae_lens.evals import EvalConfig, run_evals
    from sae_lens.training.activation_scaler import ActivationScaler
    from sae_lens.training.activations_store import ActivationsStore

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        store = ActivationsStore.from_sae(
            model,
            sae,
            dataset=_dataset(texts, config.dataset_path, "validation"),
            context_size=config.context_size,
            streaming=texts is None,
            store_batch_size_prompts=config.store_batch_size_prompts,
            device=config.device,
        )
        eval_config = EvalConfig(
            n_eval_reconstruction_batches=config.n_eval_batches,
            n_eval_sparsity_variance_batches=config.n_eval_batches,
            compute_ce_loss=config.next_token_loss,
            compute_sparsity_metrics=True,
            compute_variance_metrics=True,
        )
        metrics, _ = run_evals(sae, store, model, ActivationScaler(), eval_config)
    quality = {
        "explained_variance": float(metrics["reconstruction_quality"]["explained_variance"]),
        "l0": float(metrics["sparsity"]["l0"]),
    }
    if config.next_token_loss:
        loss = metrics["model_performance_preservation"]
        quality.update({
            "ce_loss_clean": float(loss["ce_loss_without_sae"]),
            "ce_loss_with_sae": float(loss["ce_loss_with_sae"]),
            "ce_loss_zero_ablation": float(loss["ce_loss_with_ablation"]),
            "ce_loss_recovered": float(loss["ce_loss_score"]),
        })
    return quality


def train_sae(model, corpus_texts: list[str] | None, config: SAETrainingConfig, cache_dir: str | os.PathLike | None = None):
    """An SAE of `config.architecture` on `config.hook_name` of `model`, trained on `corpus_texts` (None: TinyStories from HF).

    Reused from `cache_dir` (default $MECHINTERP_SAE_CACHE or ~/.cache/mechinterp/saes) when an entry
    for exactly this config, model weights and corpus exists; trained, evaluated and saved otherwise.
    Returns sae_lens's inference `SAE` with unit-norm decoder rows; `sae.cfg.metadata.training_record`
    holds its quality on held-out text, training time and identities.

    Runs sharing a cache are safe: an entry is trained under a lock of its own (`<entry>.lock`), so
    of two runs started together one trains and the other waits, then loads that entry.
    """
    if not 0 <= config.block < model.cfg.n_layers:
        raise ValueError(f"block {config.block} is outside the model's {model.cfg.n_layers} blocks")
    if config.context_size > model.cfg.n_ctx:
        raise ValueError(f"context_size {config.context_size} is longer than the model's context ({model.cfg.n_ctx})")
    if config.architecture == "topk" and config.topk_k > config.d_sae(model.cfg.d_model):
        raise ValueError(f"topk_k {config.topk_k} is more than the SAE's width {config.d_sae(model.cfg.d_model)}")
    if corpus_texts is not None and len(corpus_texts) == 0:
        raise ValueError("corpus_texts is empty; pass None to use the Hugging Face dataset")
    model_id = model_identity(model)
    corpus_id = corpus_identity(corpus_texts, config.dataset_path)
    key = cache_key(config, model_id, corpus_id)
    directory = sae_directory(cache_dir if cache_dir is not None else default_cache_dir(), model_id, config, key)
    expected = {"key": key, "config": config.key_dict(), "model": model_id, "corpus": corpus_id}
    if not directory.exists():
        directory.parent.mkdir(parents=True, exist_ok=True)
        with entry_lock(directory):
            if not directory.exists():  # else another run saved it while this one waited
                sweep_stale_staging(directory.parent)
                _train_entry(model, corpus_texts, config, expected, directory)
    return load_sae_dir(directory, device=config.device, expected_record=expected)


def _train_entry(model, corpus_texts: list[str] | None, config: SAETrainingConfig, expected: dict, directory: Path) -> None:
    """Train, evaluate and save the entry `directory`: written into `<entry>.tmp-<pid>` and renamed, so a
    run stopped while saving never leaves a half entry (an interrupt deletes its staging; a killed
    run's staging is swept by the next one)."""
    if corpus_texts is None:
        train_texts, heldout_texts = None, None
    else:
        train_texts, heldout_texts = _split_heldout(list(corpus_texts), config.heldout_fraction)
    training_sae, seconds, tokens_seen = fit_sae(model, train_texts, config)
    training_sae.fold_W_dec_norm()  # unit decoder rows: activations are lengths along a unit direction

    from sae_lens import SAE

    staging = directory.with_name(f"{directory.name}{STAGING_MARK}{os.getpid()}")
    try:
        shutil.rmtree(staging, ignore_errors=True)
        training_sae.save_inference_model(str(staging))
        sae = SAE.load_from_disk(str(staging), device=config.device)
        quality = sae_quality(model, sae, heldout_texts, config) if (heldout_texts or corpus_texts is None) else {}
        record = {
            **expected,
            "quality": quality,
            "train_seconds": seconds,
            "tokens_per_second": tokens_seen / seconds,
            "sae_lens_version": _sae_lens_version(),
        }
        (staging / RECORD_FILENAME).write_text(json.dumps(record, indent=2, sort_keys=True))
        try:
            staging.rename(directory)
        except OSError:
            if not directory.exists():
                raise
            # Lost the rename to a process that saved this entry without the lock (an older version, or a
            # filesystem that does not share flocks): its entry is loaded and checked like any cached one.
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _sae_lens_version() -> str:
    import sae_lens

    return str(sae_lens.__version__)
