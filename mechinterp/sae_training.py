"""Gated SAE training on a residual stream (thesis section 3.5), cached on disk by what made it.

Training is sae_lens's: its gated training SAE, its activation store and its trainer. What this
module adds is the bookkeeping a claims suite needs:

- one config dataclass with every knob (`SAETrainingConfig`);
- a cache directory keyed by a hash of (config, model identity, corpus identity), so a trained SAE is
  reused only for exactly what made it; a corrupt or mismatched cache entry raises `SAECacheError`
  and is never silently trained over;
- runs sharing a cache: one lock per entry (each SAE is trained once), a rename lost to another
  writer loads the winner's entry, and staging directories of killed runs are swept;
- the SAE command-line options checked at the start of a run (`sae_config_from_file`,
  `check_sae_dir`), each problem a one-line `SAEOptionError` naming the file;
- quality on held-out text (explained variance, L0, the model's loss with the SAE spliced in),
  measured with sae_lens's own evals and stored beside the weights.

Corpus: `corpus_texts=None` streams TinyStories from the Hugging Face hub (`config.dataset_path`),
the default for users with network or a datasets cache; a list of strings trains offline.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import math
import os
import re
import shutil
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
from tqdm.auto import tqdm

from mechinterp import progress

RECORD_FILENAME = "training.json"  # our record beside sae_lens's cfg.json + sae_weights.safetensors
CACHE_ENV = "MECHINTERP_SAE_CACHE"
STAGING_MARK = ".tmp-"  # <entry>.tmp-<pid>: an entry being written by process pid
LOCK_SUFFIX = ".lock"  # <entry>.lock: flock'd by the one process training that entry


class SAECacheError(RuntimeError):
    """A cached or user-provided SAE directory is corrupt, incomplete or made by something else."""


class SAEOptionError(ValueError):
    """An SAE command-line option (--sae-config FILE, --sae-dir DIR) names something that cannot be used."""


@dataclass(frozen=True)
class SAETrainingConfig:
    """Every setting of one gated SAE training run. All fields enter the cache key."""

    block: int = 6  # residual stream after this block (0-indexed; thesis "layer 6")
    hook_point: str = "hook_resid_post"
    width: int | None = None  # SAE features; None -> width_factor x d_model
    width_factor: int = 16  # thesis: feature indices reach 4021 on d_model 256 -> 4096 = 16 x 256
    l1_coefficient: float = 3.0  # gated sparsity penalty on normalized activations
    l1_warm_up_steps: int = 0
    lr: float = 3e-4
    lr_warm_up_steps: int = 0
    lr_scheduler_name: str = "constant"
    training_tokens: int = 5_000_000
    context_size: int = 128
    train_batch_size_tokens: int = 4096
    store_batch_size_prompts: int = 16  # LM batch (prompts) when generating activations
    n_batches_in_buffer: int = 64  # mixing buffer = n_batches_in_buffer x context_size tokens
    normalize_activations: str = "expected_average_only_in"  # makes l1_coefficient scale-free
    exclude_special_tokens: bool = True  # BOS residuals are outliers, not text: not trained on
    n_batches_for_norm_estimate: int = 10
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float32"
    dataset_path: str = "roneneldan/TinyStories"  # used only when no corpus_texts are given
    heldout_fraction: float = 0.05  # last texts of a given corpus, kept out of training for quality
    n_eval_batches: int = 4  # held-out quality: batches of store_batch_size_prompts x context_size

    def __post_init__(self) -> None:
        # Types first, so a JSON file's "3" or 1e5 is named, not a TypeError from a comparison below.
        for spec in dataclasses.fields(self):
            object.__setattr__(self, spec.name, _checked_type(spec.name, spec.type, getattr(self, spec.name)))
        _at_least(self, "block", 0)  # its upper end is the model's: checked by train_sae
        _one_of(self, "hook_point", HOOK_POINTS)
        if self.width is not None:
            _at_least(self, "width", 1)
        _at_least(self, "width_factor", 1)
        # 0 would train a dense code (no sparsity), negative rewards density: both degenerate SAEs.
        _in_range(self, "l1_coefficient", 0.0, math.inf, "> 0", low_open=True)
        _at_least(self, "l1_warm_up_steps", 0)
        # Adam moves each weight by about lr per step: beyond 1 it only diverges.
        _in_range(self, "lr", 0.0, 1.0, "in (0, 1]", low_open=True)
        _at_least(self, "lr_warm_up_steps", 0)
        _one_of(self, "lr_scheduler_name", LR_SCHEDULERS)
        for name in ("training_tokens", "context_size", "train_batch_size_tokens", "store_batch_size_prompts",
                     "n_batches_in_buffer", "n_batches_for_norm_estimate", "n_eval_batches"):
            _at_least(self, name, 1)
        _one_of(self, "normalize_activations", NORMALIZATIONS)
        _in_range(self, "seed", 0, 2**63 - 1, "in [0, 2**63)")  # torch.Generator.manual_seed's range
        try:
            torch.device(self.device)
        except RuntimeError:
            raise ValueError(f"device must be a torch device such as 'cpu', 'cuda' or 'cuda:1', got {self.device!r}") from None
        _one_of(self, "dtype", DTYPES)
        if not self.dataset_path:
            raise ValueError("dataset_path must be a Hugging Face dataset name, got ''")
        _in_range(self, "heldout_fraction", 0.0, 1.0, "in [0, 1)", high_open=True)
        if self.training_tokens < self.train_batch_size_tokens:
            raise ValueError(
                f"training_tokens ({self.training_tokens}) is less than one batch ({self.train_batch_size_tokens})"
            )
        if self.n_batches_in_buffer * self.context_size < self.train_batch_size_tokens:
            # sae_lens's mixing buffer holds n_batches_in_buffer x context_size tokens and must fit a batch
            need = -(-self.train_batch_size_tokens // self.context_size)
            raise ValueError(
                f"n_batches_in_buffer x context_size = {self.n_batches_in_buffer * self.context_size} tokens is "
                f"smaller than train_batch_size_tokens {self.train_batch_size_tokens}; use n_batches_in_buffer >= {need}"
            )

    @property
    def hook_name(self) -> str:
        return f"blocks.{self.block}.{self.hook_point}"

    def d_sae(self, d_model: int) -> int:
        return self.width if self.width is not None else self.width_factor * d_model

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "SAETrainingConfig":
        if not isinstance(values, dict):
            raise ValueError(f"SAETrainingConfig fields must be a mapping, got a {type(values).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown SAETrainingConfig field(s) {unknown}; known: {sorted(known)}")
        return cls(**values)


# d_model-wide hooks of a block: the SAE's input width is the model's d_model
HOOK_POINTS = ("hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_attn_out", "hook_mlp_out")
LR_SCHEDULERS = ("constant", "cosineannealing", "cosineannealingwarmrestarts")  # sae_lens's get_lr_scheduler
NORMALIZATIONS = ("none", "expected_average_only_in", "constant_norm_rescale", "layer_norm", "covariance_whitening")
DTYPES = ("float32", "float64", "float16", "bfloat16")
_TYPES = {"int": int, "float": float, "str": str, "bool": bool}


def _checked_type(name: str, annotation: str, value: Any) -> Any:
    """`value` if it has the field's annotated type (an int is taken as a float: JSON writes 40.0 as 40)."""
    optional = annotation.endswith("| None")
    kind = annotation.split("|")[0].strip()
    if value is None and optional:
        return value
    if kind == "float" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)  # 40 and 40.0 must give one cache key
    if not isinstance(value, _TYPES[kind]) or (kind == "int" and isinstance(value, bool)):
        raise ValueError(f"{name} must be {'an' if kind == 'int' else 'a'} {kind}{' or None' if optional else ''}, "
                         f"got {value!r} ({type(value).__name__})")
    if kind == "float" and not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return value


def _in_range(config, name: str, low, high, allowed: str, low_open: bool = False, high_open: bool = False) -> None:
    value = getattr(config, name)
    if value < low or value > high or (low_open and value == low) or (high_open and value == high):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")


def _at_least(config, name: str, low: int) -> None:
    _in_range(config, name, low, math.inf, f">= {low}")


def _one_of(config, name: str, allowed: tuple[str, ...]) -> None:
    if getattr(config, name) not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {getattr(config, name)!r}")


# --- identities and the cache key -----------------------------------------------------------------


def _sha256_tensors(named: list[tuple[str, torch.Tensor]]) -> str:
    digest = hashlib.sha256()
    for name, tensor in named:
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def model_identity(model) -> dict[str, Any]:
    """Name, shape and a hash of every weight: a retrained, mutated or planted model is a different model."""
    state = sorted(model.state_dict().items())
    return {
        "model_name": model.cfg.model_name,
        "n_layers": model.cfg.n_layers,
        "d_model": model.cfg.d_model,
        "weights_sha256": _sha256_tensors(state),
    }


def corpus_identity(corpus_texts: list[str] | None, dataset_path: str) -> dict[str, Any]:
    if corpus_texts is None:
        return {"source": "huggingface", "dataset_path": dataset_path}
    digest = hashlib.sha256()
    for text in corpus_texts:
        digest.update(text.encode())
        digest.update(b"\x00")
    return {"source": "texts", "n_texts": len(corpus_texts), "sha256": digest.hexdigest()}


def cache_key(config: SAETrainingConfig, model_id: dict, corpus_id: dict) -> str:
    payload = json.dumps({"config": config.to_dict(), "model": model_id, "corpus": corpus_id}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "mechinterp" / "saes"))


def sae_directory(cache_dir: str | os.PathLike, model_id: dict, config: SAETrainingConfig, key: str) -> Path:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{model_id['model_name']}-{config.hook_name}")
    return Path(cache_dir) / f"{slug}-{key}"


# --- loading with checks --------------------------------------------------------------------------


def read_record(directory: str | os.PathLike) -> dict[str, Any]:
    """The training record of an SAE directory, or SAECacheError saying what is wrong and what to do."""
    directory = Path(directory)
    path = directory / RECORD_FILENAME
    if not path.is_file():
        raise SAECacheError(f"{directory} has no {RECORD_FILENAME}: it is incomplete or not an SAE made here; delete it to retrain")
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise SAECacheError(f"{path} is corrupt ({err}); delete {directory} to retrain") from err
    if not isinstance(record, dict):
        raise SAECacheError(f"{path} holds a JSON {_json_type(record)}, not a training record; delete {directory} to retrain")
    missing = [k for k in ("key", "config", "model", "corpus") if k not in record]
    if missing:
        raise SAECacheError(f"{path} lacks {missing}; delete {directory} to retrain")
    return record


def load_sae_dir(directory: str | os.PathLike, device: str = "cpu", expected_record: dict | None = None):
    """Load a gated SAE saved by `train_sae` (or by sae_lens with a training.json beside it).

    With `expected_record` (key, config, model, corpus), any difference raises SAECacheError naming
    the fields that differ: an SAE is used only for the model and corpus it was trained on.
    """
    from sae_lens import SAE

    directory = Path(directory)
    if not directory.is_dir():
        raise SAECacheError(f"SAE directory {directory} does not exist")
    record = read_record(directory)
    if expected_record is not None:
        differ = [k for k in ("key", "config", "model", "corpus") if record.get(k) != expected_record[k]]
        if differ:
            raise SAECacheError(
                f"{directory} was made by a different {', '.join(differ)} than requested "
                f"(stored key {record.get('key')}, expected {expected_record['key']}); delete it to retrain"
            )
    try:
        sae = SAE.load_from_disk(str(directory), device=device)
    except Exception as err:  # safetensors/json errors come in many types; all mean the same to a user
        raise SAECacheError(f"cannot load SAE weights from {directory} ({type(err).__name__}: {err}); delete it to retrain") from err
    try:
        config = SAETrainingConfig.from_dict(record["config"])
        d_model = record["model"]["d_model"]
    except (TypeError, KeyError, ValueError) as err:
        raise SAECacheError(f"{directory / RECORD_FILENAME}: bad config or model in the record "
                            f"({type(err).__name__}: {err}); delete {directory} to retrain") from err
    if sae.cfg.metadata.hook_name != config.hook_name or sae.cfg.d_in != d_model:
        raise SAECacheError(
            f"{directory}: weights are for {sae.cfg.metadata.hook_name} with d_in {sae.cfg.d_in}, but its record says "
            f"{config.hook_name} with d_model {d_model}; delete it to retrain"
        )
    sae.cfg.metadata.training_record = record  # quality, timing, identities travel with the SAE
    sae.cfg.metadata.sae_dir = str(directory)
    return sae


# --- command-line options, checked at the start of a run --------------------------------------------

_JSON_TYPES = {dict: "object", list: "array", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}
SAE_WEIGHTS_FILENAME = "sae_weights.safetensors"  # sae_lens's names in an SAE directory
SAE_CFG_FILENAME = "cfg.json"


def _json_type(value: Any) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _read_json_object(path: Path, where: str) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as err:
        raise SAEOptionError(f"{where}: cannot read {path} ({err})") from None
    except json.JSONDecodeError as err:
        raise SAEOptionError(f"{where}: {path} is not valid JSON ({err})") from None
    if not isinstance(value, dict):
        raise SAEOptionError(f"{where}: {path} holds a JSON {_json_type(value)}, expected an object")
    return value


def sae_config_from_file(path: str | os.PathLike, base: SAETrainingConfig | None = None) -> SAETrainingConfig:
    """--sae-config FILE.json: its SAETrainingConfig fields over `base` (default: SAETrainingConfig()).

    Any problem (no file, bad JSON, not an object, unknown field, wrong type, out of range) is a
    one-line SAEOptionError naming the file.
    """
    where, path = f"--sae-config {path}", Path(path)
    if not path.is_file():
        raise SAEOptionError(f"{where}: {'not a file' if path.exists() else 'no such file'}")
    overrides = _read_json_object(path, where)
    try:
        return SAETrainingConfig.from_dict({**(base or SAETrainingConfig()).to_dict(), **overrides})
    except ValueError as err:
        raise SAEOptionError(f"{where}: {err}") from None


def check_sae_dir(path: str | os.PathLike) -> dict[str, Path]:
    """--sae-dir DIR: hook name -> directory of each sae_lens SAE in DIR (DIR itself or its subdirectories).

    Checks, without loading weights, that DIR holds at least one SAE, that every subdirectory holds
    one, and that each SAE's cfg.json, weights and (if present) training.json are readable; otherwise
    a one-line SAEOptionError naming the offending file. Loose files in DIR (a README) are ignored.
    """
    where, root = f"--sae-dir {path}", Path(path)
    if not root.is_dir():
        raise SAEOptionError(f"{where}: {'not a directory' if root.exists() else 'no such directory'}")
    sae_dirs = sorted(cfg.parent for cfg in root.glob(f"**/{SAE_CFG_FILENAME}"))
    if not sae_dirs:
        raise SAEOptionError(f"{where}: holds no SAE (no {SAE_CFG_FILENAME} in it or its subdirectories; "
                             f"expected one sae_lens SAE per subdirectory: {SAE_CFG_FILENAME} + {SAE_WEIGHTS_FILENAME})")
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not any(d == sub or sub in d.parents for d in sae_dirs):
            raise SAEOptionError(f"{where}: {sub} holds no SAE (no {SAE_CFG_FILENAME})")
    found: dict[str, Path] = {}
    for directory in sae_dirs:
        hook = _check_sae_files(directory, where)
        if hook in found:
            raise SAEOptionError(f"{where}: two SAEs for {hook}: {found[hook]} and {directory}")
        found[hook] = directory
    return found


def _check_sae_files(directory: Path, where: str) -> str:
    """The hook of the sae_lens SAE in `directory`, after checking its files; SAEOptionError otherwise."""
    cfg_path = directory / SAE_CFG_FILENAME
    cfg = _read_json_object(cfg_path, where)
    metadata = cfg.get("metadata") if isinstance(cfg.get("metadata"), dict) else {}
    hook = metadata.get("hook_name") or cfg.get("hook_name") or cfg.get("hook_point")  # sae_lens 6, then pre-6 names
    if not isinstance(hook, str):
        raise SAEOptionError(f"{where}: {cfg_path} names no hook (metadata.hook_name)")
    bad = [k for k in ("d_in", "d_sae") if not isinstance(cfg.get(k), int) or isinstance(cfg.get(k), bool) or cfg[k] < 1]
    if bad:
        raise SAEOptionError(f"{where}: {cfg_path} lacks positive integer {', '.join(bad)}")
    weights = directory / SAE_WEIGHTS_FILENAME
    if not weights.is_file():
        raise SAEOptionError(f"{where}: {directory} has no {SAE_WEIGHTS_FILENAME}")
    missing = sorted({"W_enc", "W_dec"} - set(_safetensors_header(weights, where)))
    if missing:
        raise SAEOptionError(f"{where}: {weights} lacks tensor(s) {', '.join(missing)}")
    record_path = directory / RECORD_FILENAME
    if record_path.exists():
        record = _read_json_object(record_path, where)
        lacking = [k for k in ("key", "config", "model", "corpus") if k not in record]
        if lacking:
            raise SAEOptionError(f"{where}: {record_path} lacks {', '.join(lacking)}")
        try:
            SAETrainingConfig.from_dict(record["config"])
        except ValueError as err:
            raise SAEOptionError(f"{where}: {record_path}: bad config ({err})") from None
    return hook


def _safetensors_header(path: Path, where: str) -> dict[str, Any]:
    """The JSON header of a safetensors file (8-byte little-endian length, then the header)."""
    try:
        with open(path, "rb") as handle:
            length = int.from_bytes(handle.read(8), "little")
            header = json.loads(handle.read(length)) if 1 < length <= path.stat().st_size - 8 else None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        header = None
    if not isinstance(header, dict):
        raise SAEOptionError(f"{where}: {path} is not a safetensors file")
    return header


# --- training -------------------------------------------------------------------------------------


def _token_rate_trainer_class():
    from sae_lens.training.sae_trainer import SAETrainer

    class TokenRateTrainer(SAETrainer):
        """sae_lens's trainer; its bar moves every 100 steps, this one every step and reads tokens/s."""

        def _update_pbar(self, step_output, pbar, update_interval: int = 100) -> None:  # noqa: ARG002
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
    from sae_lens.saes.gated_sae import GatedTrainingSAEConfig

    sae_config = GatedTrainingSAEConfig(
        d_in=model.cfg.d_model,
        d_sae=config.d_sae(model.cfg.d_model),
        l1_coefficient=config.l1_coefficient,
        l1_warm_up_steps=config.l1_warm_up_steps,
        normalize_activations=config.normalize_activations,
        dtype=config.dtype,
        device=config.device,
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
_ACTIVATION_MEMO: "collections.OrderedDict[tuple, torch.Tensor]" = collections.OrderedDict()
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


def fit_gated_sae(model, corpus_texts: list[str] | None, config: SAETrainingConfig):
    """Train a gated SAE with sae_lens's trainer; returns (training SAE, seconds, tokens seen).

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
    """sae_lens's gated training SAE and trainer on batches of activations; (training SAE, tokens seen)."""
    trainer = gated_sae_trainer(model, data, config)
    with progress.stage("SAE training", total=config.training_tokens, unit="tokens", detail=config.hook_name):
        return trainer.fit(), trainer.n_training_samples


def gated_sae_trainer(model, data: Iterator[torch.Tensor], config: SAETrainingConfig):
    """A fresh, seeded sae_lens gated training SAE inside sae_lens's SAETrainer (bar in tokens/s)."""
    from sae_lens.saes.gated_sae import GatedTrainingSAE, GatedTrainingSAEConfig

    runner_config = _runner_config(model, config)
    torch.manual_seed(config.seed)  # SAE init (and sae_lens's mixing-buffer shuffles when streaming)
    sae = GatedTrainingSAE(GatedTrainingSAEConfig.from_sae_runner_config(runner_config))
    return _token_rate_trainer_class()(cfg=runner_config.to_sae_trainer_config(), sae=sae, data_provider=data, evaluator=None)


@torch.no_grad()
def sae_quality(model, sae, texts: list[str] | None, config: SAETrainingConfig) -> dict[str, float]:
    """Held-out explained variance, L0 and next-token loss clean / with the SAE spliced in / zero-ablated.

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
            compute_ce_loss=True,
            compute_sparsity_metrics=True,
            compute_variance_metrics=True,
        )
        metrics, _ = run_evals(sae, store, model, ActivationScaler(), eval_config)
    loss = metrics["model_performance_preservation"]
    return {
        "explained_variance": float(metrics["reconstruction_quality"]["explained_variance"]),
        "l0": float(metrics["sparsity"]["l0"]),
        "ce_loss_clean": float(loss["ce_loss_without_sae"]),
        "ce_loss_with_sae": float(loss["ce_loss_with_sae"]),
        "ce_loss_zero_ablation": float(loss["ce_loss_with_ablation"]),
        "ce_loss_recovered": float(loss["ce_loss_score"]),
    }


def train_sae(model, corpus_texts: list[str] | None, config: SAETrainingConfig, cache_dir: str | os.PathLike | None = None):
    """A gated SAE on `config.hook_name` of `model`, trained on `corpus_texts` (None: TinyStories from HF).

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
    if corpus_texts is not None and len(corpus_texts) == 0:
        raise ValueError("corpus_texts is empty; pass None to use the Hugging Face dataset")
    model_id = model_identity(model)
    corpus_id = corpus_identity(corpus_texts, config.dataset_path)
    key = cache_key(config, model_id, corpus_id)
    directory = sae_directory(cache_dir if cache_dir is not None else default_cache_dir(), model_id, config, key)
    expected = {"key": key, "config": config.to_dict(), "model": model_id, "corpus": corpus_id}
    if not directory.exists():
        directory.parent.mkdir(parents=True, exist_ok=True)
        with _entry_lock(directory):
            if not directory.exists():  # else another run saved it while this one waited
                sweep_stale_staging(directory.parent)
                _train_entry(model, corpus_texts, config, expected, directory)
    return load_sae_dir(directory, device=config.device, expected_record=expected)


@contextlib.contextmanager
def _entry_lock(directory: Path) -> Iterator[None]:
    """Hold an exclusive flock on `<entry>.lock`. The kernel releases it when its holder dies, so a
    killed run never leaves it held; the file is never deleted, since a waiter and a newcomer would
    then lock two different files."""
    with open(directory.with_name(directory.name + LOCK_SUFFIX), "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"sae_training: another process is training {directory.name}; waiting for it", file=sys.stderr)
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield  # closing the file releases the lock


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: existence check only
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def sweep_stale_staging(cache_dir: str | os.PathLike) -> list[Path]:
    """Delete the staging directories (`<entry>.tmp-<pid>`) in `cache_dir` whose process is gone: left
    by a run killed while saving. Returns what was deleted."""
    swept = []
    for staging in Path(cache_dir).glob(f"*{STAGING_MARK}*"):
        match = re.search(rf"{re.escape(STAGING_MARK)}(\d+)$", staging.name)
        if match and staging.is_dir() and not _pid_alive(int(match.group(1))):
            shutil.rmtree(staging, ignore_errors=True)
            swept.append(staging)
    return swept


def _train_entry(model, corpus_texts: list[str] | None, config: SAETrainingConfig, expected: dict, directory: Path) -> None:
    """Train, evaluate and save the entry `directory`: written into `<entry>.tmp-<pid>` and renamed, so a
    run stopped while saving never leaves a half entry (an interrupt deletes its staging; a killed
    run's staging is swept by the next one)."""
    if corpus_texts is None:
        train_texts, heldout_texts = None, None
    else:
        train_texts, heldout_texts = _split_heldout(list(corpus_texts), config.heldout_fraction)
    training_sae, seconds, tokens_seen = fit_gated_sae(model, train_texts, config)
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
