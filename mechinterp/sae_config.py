"""The settings of one SAE training run (thesis section 3.5: gated SAEs): `SAETrainingConfig`, every knob
named, typed and defaulted, each checked when the config is made (a JSON file's wrong type or range is a
ValueError naming the field, before any model loads). `key_dict()` is what the cache key hashes.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class SAETrainingConfig:
    """Every setting of one SAE training run. The cache key hashes `key_dict()`: every field, less the knobs
    of architectures other than `architecture` (they do not change what is trained)."""

    block: int = 6  # residual stream after this block (0-indexed; thesis "layer 6")
    hook_point: str = "hook_resid_post"
    width: int | None = None  # SAE features; None -> width_factor x d_model
    width_factor: int = 16  # thesis: feature indices reach 4021 on d_model 256 -> 4096 = 16 x 256
    architecture: str = "gated"  # thesis s3.5: gated; or standard, jumprelu, topk (sae_lens's training SAEs)
    l1_coefficient: float = 3.0  # gated and standard: L1 sparsity penalty on normalized activations
    l1_warm_up_steps: int = 0  # gated and standard
    topk_k: int = 100  # topk: features kept per token (sae_lens's default k); at most the SAE's width
    jumprelu_l0_coefficient: float = 1.0  # jumprelu: sae_lens's l0_coefficient (its "step" L0 penalty)
    jumprelu_init_threshold: float = 0.01  # jumprelu: every feature's starting threshold (sae_lens's default)
    jumprelu_bandwidth: float = 0.05  # jumprelu: kernel width of the threshold's gradient (sae_lens's default)
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
    # Held-out quality also measures next-token loss clean / with the SAE spliced in / zero-ablated (sae_lens's
    # downstream pass: a third of a planted block's training time). Off for models that are not language models (the
    # planted ones: every logit but a name's is 0, so the loss says nothing). Evaluation only: not in the cache key.
    next_token_loss: bool = True

    def __post_init__(self) -> None:
        # Types first, so a JSON file's "3" or 1e5 is named, not a TypeError from a comparison below.
        for spec in dataclasses.fields(self):
            object.__setattr__(self, spec.name, _checked_type(spec.name, spec.type, getattr(self, spec.name)))
        _at_least(self, "block", 0)  # its upper end is the model's: checked by train_sae
        _one_of(self, "hook_point", HOOK_POINTS)
        if self.width is not None:
            _at_least(self, "width", 1)
        _at_least(self, "width_factor", 1)
        _one_of(self, "architecture", tuple(ARCHITECTURE_KNOBS))
        for name in _OWN_KNOBS:  # a knob of another architecture would be silently unused
            if getattr(self, name) != _DEFAULTS[name] and name not in ARCHITECTURE_KNOBS[self.architecture]:
                owner = next(a for a, knobs in ARCHITECTURE_KNOBS.items() if name in knobs)
                raise ValueError(f"{name} applies to architecture {owner!r} only; architecture is {self.architecture!r}")
        # 0 would train a dense code (no sparsity), negative rewards density: both degenerate SAEs.
        _in_range(self, "l1_coefficient", 0.0, math.inf, "> 0", low_open=True)
        _at_least(self, "l1_warm_up_steps", 0)
        _at_least(self, "topk_k", 1)  # its upper end is the SAE's width: checked here when set, else by train_sae
        if self.architecture == "topk" and self.width is not None and self.topk_k > self.width:
            raise ValueError(f"topk_k {self.topk_k} is more than the SAE's width {self.width}")
        if self.architecture == "topk" and self.normalize_activations in ("constant_norm_rescale", "layer_norm"):
            raise ValueError(f"architecture 'topk' cannot train with normalize_activations {self.normalize_activations!r} "
                             "(sae_lens's TopK auxiliary loss refuses it)")
        _in_range(self, "jumprelu_l0_coefficient", 0.0, math.inf, "> 0", low_open=True)
        _in_range(self, "jumprelu_init_threshold", 0.0, math.inf, "> 0", low_open=True)  # sae_lens keeps it positive
        _in_range(self, "jumprelu_bandwidth", 0.0, math.inf, "> 0", low_open=True)
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

    def key_dict(self) -> dict[str, Any]:
        """The fields that make the trained SAE: what the cache key hashes and training.json records. Knobs of
        other architectures are left out, and so is `architecture` when gated: every entry cached before the
        field existed is gated, so a gated config keeps the key it had; `next_token_loss` (evaluation only) too."""
        values = self.to_dict()
        for name in set(_ALL_KNOBS) - set(ARCHITECTURE_KNOBS[self.architecture]):
            del values[name]
        del values["next_token_loss"]  # how the trained SAE is evaluated, not what is trained
        if self.architecture == "gated":
            del values["architecture"]
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SAETrainingConfig:
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
# sae_lens's training SAE of each architecture (its registry's names) and the knobs here that only it reads
ARCHITECTURE_KNOBS = {
    "gated": ("l1_coefficient", "l1_warm_up_steps"),
    "standard": ("l1_coefficient", "l1_warm_up_steps"),
    "jumprelu": ("jumprelu_l0_coefficient", "jumprelu_init_threshold", "jumprelu_bandwidth"),
    "topk": ("topk_k",),
}
_ALL_KNOBS = tuple(dict.fromkeys(k for knobs in ARCHITECTURE_KNOBS.values() for k in knobs))
_OWN_KNOBS = tuple(k for k in _ALL_KNOBS if k.startswith(("topk_", "jumprelu_")))  # l1_* may come from a base config
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(SAETrainingConfig)}
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
