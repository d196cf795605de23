"""Where the E3 claims' SAEs come from: the SAE set of a model, --sae-config / --sae-dir, the corpus,
and the session fixture `e3_sae_sets`.

- `--sae-dir DIR`: trained SAEs, one sae_lens SAE per subdirectory;
- `--sae-config FILE.json`: SAETrainingConfig fields over the model kind's defaults; trained on
  TinyStories from the HF hub for real models, on the story corpus for planted ones, and cached;
- `--sae-config oracle` (planted models only): fixtures.planted.oracle_sae, decoder rows = the
  planted directions, no training (checks the measuring code, not the thesis);
- `--sae-config thesis`: THESIS_SAE_CONFIG, the thesis's SAEs (gated, 4096 wide, blocks 5-7,
  TinyStories), every setting with its source in THESIS_SAE_SOURCES;
- by default, planted models train PLANTED_SAE_CONFIG on the story corpus. A real model with neither
  option is skipped with one line saying how to provide them;
- `--sae-seeds 0,1,2`: the trained SAEs once per seed; every claim is measured on each seed's SAEs and
  each row checked on every seed (claims.thresholds.SAE_SEED_RULE); the report shows each seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable

import pytest

from claims.framework import Measured
from fixtures.planted.sae_config import PLANTED_SAE_CONFIG
from mechinterp.models import is_planted, real_counterpart
from mechinterp.sae_cache import load_sae_dir
from mechinterp.sae_config import SAETrainingConfig
from mechinterp.sae_options import SAEOptionError, check_sae_dir, sae_config_from_file
from mechinterp.sae_training import train_sae

SAE_BLOCKS = (5, 6, 7)
ORACLE = "oracle"  # --sae-config value: planted models get fixtures.planted.oracle_sae

# The planted models' default SAE config (and why it is what it is): fixtures/planted/sae_config.py.
# The superposition world (planted:tinystories-8m/e3-superposition, fixtures/planted/superposition.py) trains its own
# SAEs: PLANTED_SAE_CONFIG with L1 10, on its own corpus (fixtures/corpus_superposition.py, 600 stories, ~38k tokens).
# Why 10: a token holds 10 background atoms (5 own, 5 of the previous token's) besides the twin's own content, and at
# 10 the SAEs' L0 is about that (10.8-11.3 / 10.5-11.1 / 13.8-14.1 at blocks 5 / 6 / 7, seeds 0-2;
# EV 0.94 / 0.92-0.93 / 0.87-0.88). Sweep on seed 0 (EV and L0 at blocks 5 / 6 / 7; E3 claims passing on the thesis prompt):
# L1 5: 0.96 / 0.96 / 0.92, L0 12 / 13 / 26, the triggers split over features (L6-to, L5-to fail: 2 of 7 pass);
# L1 20: 0.82 / 0.80 / 0.68, L0 5.6 / 4.5 / 4.2 (the same 4 of 7 as at 10); L1 40 (PLANTED_SAE_CONFIG's): 0.38 / 0.34 /
# 0.14, L0 4.2 / 3.2 / 3.0, the background is not reconstructed and L6-to fails (3 of 7). ~30-45 s per block and seed
# on this project's 2-core CPU (shared), 100k tokens.
SUPERPOSITION = "planted:tinystories-8m/e3-superposition"
SUPERPOSITION_SAE_CONFIG = replace(PLANTED_SAE_CONFIG, l1_coefficient=10.0)
PLANTED_SAE_CONFIGS = {SUPERPOSITION: SUPERPOSITION_SAE_CONFIG}  # --model value -> its default SAE config
THESIS = "thesis"  # --sae-config value: THESIS_SAE_CONFIG

# The thesis's SAEs (s3.5). Where each setting comes from; a test checks every SAETrainingConfig field is here.
# "suite default" = SAETrainingConfig's value: the thesis does not state it, so it is an assumption (sae_lens's
# gated-SAE runner defaults where the suite has none), to be swept before reading a failure as the thesis's.
THESIS_SAE_SOURCES = {
    "block": "thesis s3.5: residual streams of 'layer 6, 7, and 8' (1-indexed), the features it names are of "
             "layers 5, 6, 7 (0-indexed blocks 5, 6, 7); set per block by SAESet, the value here is a placeholder",
    "hook_point": "thesis s3.5.1: the ablation projects 'the residual stream in layer 5', the block's output",
    "width": "thesis s3.5: feature indices up to 4021 (table 3.8) on d_model 256: 4096 = 16 x d_model",
    "width_factor": "unused when width is set (16 would give the same 4096)",
    "architecture": "thesis s3.5: gated SAEs",
    "topk_k": "unused: the thesis's SAEs are gated",
    "jumprelu_l0_coefficient": "unused: the thesis's SAEs are gated",
    "jumprelu_init_threshold": "unused: the thesis's SAEs are gated",
    "jumprelu_bandwidth": "unused: the thesis's SAEs are gated",
    "l1_coefficient": "not in the thesis: suite default 3.0 (gated sparsity on normalized activations)",
    "l1_warm_up_steps": "not in the thesis: suite default (none)",
    "lr": "not in the thesis: suite default 3e-4 (sae_lens's default)",
    "lr_warm_up_steps": "not in the thesis: suite default (none)",
    "lr_scheduler_name": "not in the thesis: suite default (constant, sae_lens's default)",
    "training_tokens": "not in the thesis: suite default 5M tokens per SAE",
    "context_size": "not in the thesis: suite default 128 (sae_lens's; TinyStories stories are ~200 tokens)",
    "train_batch_size_tokens": "not in the thesis: suite default 4096 (sae_lens's)",
    "store_batch_size_prompts": "not in the thesis: suite default 16",
    "n_batches_in_buffer": "not in the thesis: suite default 64 (mixing buffer of 8k tokens)",
    "normalize_activations": "not in the thesis: suite default (expected average norm, so l1 is scale-free)",
    "exclude_special_tokens": "not in the thesis: suite default (BOS residuals are outliers, not text)",
    "n_batches_for_norm_estimate": "not in the thesis: suite default 10",
    "seed": "not in the thesis: 0 (one SAE per block, as the thesis trained)",
    "device": "not in the thesis: 'cuda' when a GPU is visible at the start of the run, else 'cpu'",
    "dtype": "not in the thesis: float32",
    "dataset_path": "thesis s3.5: trained on TinyStories text (roneneldan/TinyStories, the model's own training data)",
    "heldout_fraction": "unused for a streamed dataset (quality is measured on its validation split)",
    "n_eval_batches": "not in the thesis: suite default 4 (quality on the validation split)",
    "next_token_loss": "not in the thesis (evaluation only): suite default, next-token loss with the SAE spliced in measured",
}


# Cost, measured with benchmarks/bench_sae.py --budget 5000000 (streamed: an LM forward plus an SAE step per
# token) on this project's 2-core CPU, one thread, shared: ~420-500 tokens/s, about 3 h per block, 9 h for all
# three. Not measured on a GPU (none lent to this task).
def thesis_sae_config() -> SAETrainingConfig:
    import torch

    return SAETrainingConfig(block=SAE_BLOCKS[0], width=4096, dataset_path="roneneldan/TinyStories",
                             device="cuda" if torch.cuda.is_available() else "cpu")


PLANTED_CORPUS_STORIES = 600  # fixtures.corpus.story_corpus(600, seed=0): ~37k tokens, ~850 giving "to"s
TINYSTORIES_CONTEXT_STORIES = 2000  # real models: validation stories searched for max-activating contexts


def planted_corpus(spec=None) -> list[str]:
    """The story corpus planted SAEs train on; the superposition world has its own (600 stories, ~38k tokens).
    `spec`: a --model value or its ModelSpec."""
    if getattr(spec, "raw", spec) == SUPERPOSITION:
        from fixtures.corpus_superposition import superposition_corpus

        return superposition_corpus(PLANTED_CORPUS_STORIES, seed=0)
    from fixtures.corpus import story_corpus

    return story_corpus(PLANTED_CORPUS_STORIES, seed=0)


def planted_sae_config(spec=None) -> SAETrainingConfig:
    """The default SAE config of a planted --model value or ModelSpec (PLANTED_SAE_CONFIG unless PLANTED_SAE_CONFIGS
    names one)."""
    return PLANTED_SAE_CONFIGS.get(getattr(spec, "raw", spec), PLANTED_SAE_CONFIG)


def read_sae_config(path: str | None, planted: bool, spec: str | None = None) -> SAETrainingConfig | str | None:
    """--sae-config: a JSON object of SAETrainingConfig fields over the model kind's defaults (a planted `spec`'s own,
    planted_sae_config), THESIS (the thesis's SAEs, any model; a planted one trains them on its story corpus), or
    ORACLE (planted models only)."""
    base = planted_sae_config(spec) if planted else SAETrainingConfig()
    if path is None:
        return base if planted else None
    if path == THESIS:
        return thesis_sae_config()
    if path == ORACLE:
        if not planted:
            raise SAEOptionError("--sae-config oracle: oracle SAEs exist for planted models only (their decoder rows "
                                 "are the planted directions); give a config file or --sae-dir for real models")
        return ORACLE
    try:
        return sae_config_from_file(path, base)
    except SAEOptionError as err:
        if not planted:
            raise
        raise SAEOptionError(f"{err} (fields the file does not set come from PLANTED_SAE_CONFIG, the planted twin's)") from None


def parse_sae_seeds(text: str | None) -> tuple[int, ...] | None:
    """--sae-seeds '0,1,2' -> (0, 1, 2): distinct non-negative integers, in the order given; None when absent."""
    if text is None:
        return None
    parts = [part.strip() for part in text.split(",")]
    try:
        seeds = tuple(int(part) for part in parts)
    except ValueError:
        raise SAEOptionError(f"--sae-seeds {text!r}: give comma-separated integers, e.g. 0,1,2") from None
    if not seeds or any(seed < 0 for seed in seeds):
        raise SAEOptionError(f"--sae-seeds {text!r}: seeds are integers >= 0")
    if len(set(seeds)) != len(seeds):
        raise SAEOptionError(f"--sae-seeds {text!r}: a seed is repeated")
    return seeds


def check_sae_options(sae_config: str | None, sae_dir: str | None, specs: Iterable[str] = (),
                      sae_seeds: str | None = None) -> None:
    """--sae-config / --sae-dir / --sae-seeds checked at the start of a run, before any model loads
    (conftest): a one-line SAEOptionError naming the bad file or value. The config file is read over the
    defaults of each kind of model in `specs` (planted and/or real; both when no specs are given, except
    for `oracle`, which is for planted models). Seeds train SAEs, so they need SAEs that are trained."""
    if parse_sae_seeds(sae_seeds) is not None:
        if sae_dir is not None:
            raise SAEOptionError("--sae-seeds trains one SAE per seed; --sae-dir holds SAEs already trained: give one of them")
        if sae_config == ORACLE:
            raise SAEOptionError("--sae-seeds: oracle SAEs are not trained, so they have no seed")
    if sae_config is not None:
        kinds = {is_planted(spec) for spec in specs} or ({True} if sae_config == ORACLE else {True, False})
        for planted in sorted(kinds):
            read_sae_config(sae_config, planted)
    if sae_dir is not None:
        check_sae_dir(sae_dir)


@dataclass
class SAESet:
    """The SAE of each block for one model under test, fetched on first use."""

    spec: str
    model: object
    sae_dir: str | None = None
    config: SAETrainingConfig | str | None = None  # or ORACLE
    cache_dir: str | None = None
    _saes: dict = field(default_factory=dict)

    @property
    def seed(self) -> int | None:
        """The training seed of this set's SAEs (None for --sae-dir and oracle SAEs)."""
        return self.config.seed if isinstance(self.config, SAETrainingConfig) else None

    def how_to_provide(self) -> str:
        return (f"E3 needs gated SAEs of {real_counterpart(self.spec)} blocks {', '.join(map(str, SAE_BLOCKS))}: "
                "pass --sae-dir DIR (trained SAEs, sae_lens format), --sae-config thesis (the thesis's settings) or "
                "--sae-config FILE.json (each trains them on TinyStories from the HF hub; mechinterp/sae_config.py)")

    def __getitem__(self, block: int):
        if block not in self._saes:
            self._saes[block] = self._fetch(block)
        return self._saes[block]

    def _fetch(self, block: int):
        hook = f"blocks.{block}.hook_resid_post"
        if self.sae_dir is not None:
            found = check_sae_dir(self.sae_dir)
            if hook not in found:
                pytest.skip(f"--sae-dir {self.sae_dir} has no SAE for {hook} (found: {', '.join(found) or 'none'})")
            return load_sae_dir(found[hook]) if (found[hook] / "training.json").exists() else _load_foreign(found[hook])
        if self.config is None:
            pytest.skip(self.how_to_provide())
        if self.config == ORACLE:
            from fixtures.planted.oracle_sae import oracle_sae

            return oracle_sae(self.model, block)
        corpus = planted_corpus(self.spec) if is_planted(self.spec) else None
        return train_sae(self.model, corpus, replace(self.config, block=block), cache_dir=self.cache_dir)


def _load_foreign(directory: Path):
    """An SAE trained elsewhere (no training.json): loaded as sae_lens saved it."""
    from sae_lens import SAE

    try:
        return SAE.load_from_disk(str(directory))
    except Exception as err:  # sae_lens raises KeyError/ValueError/safetensors errors for what check_sae_dir cannot see
        raise SAEOptionError(f"--sae-dir: cannot load the SAE in {directory} ({type(err).__name__}: {err})") from err


def context_corpus(spec: str) -> list[str]:
    """Text searched for max-activating contexts: the story corpus, or TinyStories validation stories."""
    if is_planted(spec):
        return planted_corpus(spec)
    try:
        import datasets

        rows = datasets.load_dataset("roneneldan/TinyStories", split="validation", streaming=True)
        return [row["text"] for _, row in zip(range(TINYSTORIES_CONTEXT_STORIES), rows)]
    except Exception as err:  # offline, no cache: the datasets library raises many kinds
        pytest.skip(f"max-activating contexts need TinyStories text (HF datasets, roneneldan/TinyStories): {type(err).__name__}")


def sae_sets(spec: str, model, sae_dir: str | None, config: SAETrainingConfig | str | None,
             seeds: tuple[int, ...] | None) -> list[SAESet]:
    """One SAESet per seed (the config's own seed when `seeds` is None); SAEs are fetched on first use."""
    if seeds is None or not isinstance(config, SAETrainingConfig):
        return [SAESet(spec, model, sae_dir, config)]
    return [SAESet(spec, model, sae_dir, replace(config, seed=seed)) for seed in seeds]


def over_seeds(sets: list[SAESet], measure: Callable[[SAESet], Measured]) -> Measured:
    """`measure` on each seed's SAEs. One set: its Measured as it is. Several: the first seed's values,
    figure and details, with every seed's values in `per_seed` (the framework checks each row on every
    seed: claims.thresholds.SAE_SEED_RULE) and each seed's details under details['sae_seed_details']."""
    if len(sets) == 1:
        return measure(sets[0])
    measured = {s.seed: measure(s) for s in sets}
    first = measured[sets[0].seed]
    details = {**first.details, "sae_seed_details": {str(seed): m.details for seed, m in measured.items()}}
    return Measured(first.values, first.figure, details, per_seed={seed: m.values for seed, m in measured.items()})


@pytest.fixture(scope="session")
def e3_sae_sets(request):
    """subject -> [SAESet per seed], built once per session from --sae-dir / --sae-config / --sae-seeds."""
    from claims.options import run_options

    sets: dict[str, list[SAESet]] = {}

    def get(subject) -> list[SAESet]:
        raw = subject.spec.raw
        if raw not in sets:
            options = run_options(request.config)
            config = read_sae_config(options.sae_config, subject.spec.planted, raw)
            if isinstance(config, SAETrainingConfig):  # the run's --device trains the SAEs too
                config = replace(config, device=str(subject.model.cfg.device))
            sets[raw] = sae_sets(raw, subject.model, options.sae_dir, config, options.sae_seeds)
        return sets[raw]

    return get
