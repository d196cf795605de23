"""Model loading: one `load(spec)` for real models, local checkpoints and planted fixtures.

A spec is one of
  - a transformer_lens name in KNOWN_MODELS (or its HF repo id): loaded with
    `HookedTransformer.from_pretrained`, from the local HF cache or downloaded when online;
  - a local directory holding an HF checkpoint (config.json + weights);
  - `planted:<name>`: a hand-set circuit model from `fixtures.planted.build(<name>)`.

Weights that are neither cached nor downloadable raise `WeightsUnavailable` with a one-line
message saying how to provide them, fast: no hub retries when offline.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from transformer_lens import HookedTransformer

# transformer_lens name -> HF repo id, as in transformer_lens.loading_from_pretrained's
# OFFICIAL_MODEL_NAMES / MODEL_ALIASES (checked in tests/test_models.py).
KNOWN_MODELS: dict[str, str] = {
    "tiny-stories-1M": "roneneldan/TinyStories-1M",
    "tiny-stories-3M": "roneneldan/TinyStories-3M",
    "tiny-stories-8M": "roneneldan/TinyStories-8M",
    "tiny-stories-28M": "roneneldan/TinyStories-28M",
    "tiny-stories-33M": "roneneldan/TinyStories-33M",
    "gpt2-small": "gpt2",
}

PLANTED_PREFIX = "planted:"
# Planted twins and their mutants use the threshold rows of the real model they imitate.
PLANTED_COUNTERPARTS: dict[str, str] = {"tinystories-8m": "tiny-stories-8M", "gpt2-small": "gpt2-small"}

# Architectures a local checkpoint may have: the two families the thesis studies (both pre-LN,
# so transformer_lens's folding and centering are valid for them).
LOCAL_ARCHITECTURES = ("GPTNeoForCausalLM", "GPT2LMHeadModel")

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "vocab.json")
HUB_PROBE_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class ProcessingConfig:
    """transformer_lens's weight processing at load time. The defaults are from_pretrained's own,
    which the thesis most likely used (it loads `HookedTransformer.from_pretrained` by name and
    does not mention processing). None of them changes the logit difference: centering the
    unembedding only shifts every logit at a position by the same amount."""

    fold_ln: bool = True
    center_writing_weights: bool = True
    center_unembed: bool = True
    fold_value_biases: bool = True


class WeightsUnavailable(RuntimeError):
    """The model's weights are not in the local cache and cannot be downloaded now."""

    def __init__(self, spec: str, reason: str = ""):
        self.spec = spec
        self.reason = reason  # what failed, for debugging; the message stays one line
        super().__init__(missing_weights_message(spec))


class UnknownModel(ValueError):
    """A spec that is no known name, no planted name and no existing checkpoint directory."""


# --- spec parsing -------------------------------------------------------------------------------


def is_planted(spec: str) -> bool:
    return spec.startswith(PLANTED_PREFIX)


def known_name(spec: str) -> str | None:
    """The KNOWN_MODELS name for a transformer_lens name or HF repo id (case-insensitive), else None."""
    lowered = spec.lower()
    for name, repo in KNOWN_MODELS.items():
        if lowered in (name.lower(), repo.lower()):
            return name
    return None


def is_local_checkpoint(spec: str) -> bool:
    return known_name(spec) is None and not is_planted(spec) and (Path(spec).expanduser() / "config.json").is_file()


def _unknown(spec: str) -> UnknownModel:
    return UnknownModel(
        f"unknown model {spec!r}; known: {', '.join(KNOWN_MODELS)}; or 'planted:<name>' "
        f"(e.g. planted:tinystories-8m), or a directory holding an HF checkpoint (config.json + weights)"
    )


def real_counterpart(spec: str) -> str:
    """The real model whose thesis numbers apply: planted:tinystories-8m[/mutant] -> tiny-stories-8M,
    planted:gpt2-small[/mutant] -> gpt2-small; real names and local directories map to themselves."""
    if is_planted(spec):
        twin = spec[len(PLANTED_PREFIX):].split("/", 1)[0].lower()
        if twin not in PLANTED_COUNTERPARTS:
            raise _unknown(spec)
        return PLANTED_COUNTERPARTS[twin]
    name = known_name(spec)
    if name is not None:
        return name
    if is_local_checkpoint(spec):
        return spec
    raise _unknown(spec)


# --- weights on disk ----------------------------------------------------------------------------


def _hub_cache_dir() -> str:
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE  # read per call: HF_HOME / HF_HUB_CACHE, or a twin cache


def _cached(repo_id: str, filename: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, filename, cache_dir=_hub_cache_dir()), str)


def weights_available(spec: str) -> bool:
    """Whether `load(spec)` can work without the network: the local HF cache holds the repo's
    config, weights and tokenizer; a local checkpoint directory has config and weights; planted
    specs are always available. Never touches the network."""
    if is_planted(spec):
        return True
    name = known_name(spec)
    if name is not None:
        repo = KNOWN_MODELS[name]
        return (
            _cached(repo, "config.json")
            and any(_cached(repo, f) for f in WEIGHT_FILES)
            and any(_cached(repo, f) for f in TOKENIZER_FILES)
        )
    directory = Path(spec).expanduser()
    return (directory / "config.json").is_file() and any((directory / f).is_file() for f in WEIGHT_FILES)


def missing_weights_message(spec: str) -> str:
    """One line saying how to provide the weights of `spec`."""
    name = known_name(spec)
    if name is None:
        return f"{spec}: no HF checkpoint (config.json + model.safetensors or pytorch_model.bin) in that directory"
    repo = KNOWN_MODELS[name]
    return (
        f"{name}: weights of {repo} are not in the HF cache {_hub_cache_dir()}; provide them by running once online "
        f"`python -c \"from mechinterp.models import load; load('{name}')\"`, or set HF_HOME to a cache that has "
        f"{repo}, or pass a local checkpoint directory with --model /path/to/checkpoint"
    )


def hub_reachable(timeout_s: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """One quick request to the hub endpoint. Written by hand because huggingface_hub retries an
    unreachable host with backoff for ~25 s per file, which several files turn into minutes."""
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    if constants.HF_HUB_OFFLINE:
        return False
    try:
        get_session().head(constants.ENDPOINT, timeout=timeout_s)  # any HTTP answer means reachable
        return True
    except Exception:  # noqa: BLE001 - DNS, refused, timeout, proxy: all mean "cannot download now"
        return False


# --- loading ------------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_deprecation():
    # transformer_lens 3 warns that TransformerBridge is the future API; the thesis (and this
    # suite) use HookedTransformer deliberately, so the warning is noise here.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, message="HookedTransformer.* is deprecated")
        yield


def _load_known(name: str, device: str, dtype: torch.dtype, processing: ProcessingConfig) -> HookedTransformer:
    if not weights_available(name) and not hub_reachable():
        raise WeightsUnavailable(name, reason="not cached, and HF_HUB_OFFLINE=1 or the hub is unreachable")
    try:
        with _quiet_deprecation():
            return HookedTransformer.from_pretrained(
                name,
                device=device,
                dtype=dtype,
                fold_ln=processing.fold_ln,
                center_writing_weights=processing.center_writing_weights,
                center_unembed=processing.center_unembed,
                fold_value_biases=processing.fold_value_biases,
            )
    except OSError as err:  # transformers / huggingface_hub report missing files and network failures as OSError
        if weights_available(name):
            raise
        first_line = (str(err).splitlines() or [""])[0]
        raise WeightsUnavailable(name, reason=f"{type(err).__name__}: {first_line}") from None


def _local_tokenizer(directory: Path, vocab_size: int):
    from transformers import AutoTokenizer

    if any((directory / f).is_file() for f in TOKENIZER_FILES):
        return AutoTokenizer.from_pretrained(str(directory))
    if vocab_size == 50257:  # both thesis families use GPT-2's BPE; build it offline
        from fixtures.tokenizer import gpt2_tokenizer

        return gpt2_tokenizer()
    raise UnknownModel(f"{directory}: no tokenizer files ({', '.join(TOKENIZER_FILES)}) and vocab {vocab_size} is not GPT-2's")


def _load_local(directory: Path, device: str, dtype: torch.dtype, processing: ProcessingConfig) -> HookedTransformer:
    """A local HF checkpoint. The architecture is read from its config.json (`architectures[0]`,
    which transformer_lens's converter also keys on), and must be one of LOCAL_ARCHITECTURES.

    These are from_pretrained's own steps, called directly: from_pretrained first resolves the
    name against its official list, which rejects paths, whereas its config and weight converters
    accept a directory. (Passing an official name plus hf_model= instead would fetch that repo's
    config from the hub, failing offline and ignoring the checkpoint's own sizes.) One difference
    to loading TinyStories by name: n_ctx stays the config's 2048, not transformer_lens's 512 trim;
    positions beyond 512 are never used here.
    """
    from transformer_lens import loading_from_pretrained as loading
    from transformers import AutoModelForCausalLM

    if not weights_available(str(directory)):
        raise WeightsUnavailable(str(directory))
    architectures = json.loads((directory / "config.json").read_text()).get("architectures") or []
    if not architectures or architectures[0] not in LOCAL_ARCHITECTURES:
        raise UnknownModel(
            f"{directory}: config.json architectures {architectures} is not one of {', '.join(LOCAL_ARCHITECTURES)}"
        )
    hf_model = AutoModelForCausalLM.from_pretrained(str(directory), dtype=dtype).eval()
    tokenizer = _local_tokenizer(directory, hf_model.config.vocab_size)
    cfg = loading.get_pretrained_model_config(
        str(directory), hf_cfg=hf_model.config.to_dict(), fold_ln=processing.fold_ln, device=device, dtype=dtype
    )
    state_dict = loading.get_pretrained_state_dict(str(directory), cfg, hf_model, dtype=dtype)
    with _quiet_deprecation():
        model = HookedTransformer(cfg, tokenizer, move_to_device=False)
    model.load_and_process_state_dict(
        state_dict,
        fold_ln=processing.fold_ln,
        center_writing_weights=processing.center_writing_weights,
        center_unembed=processing.center_unembed,
        fold_value_biases=processing.fold_value_biases,
    )
    model.move_model_modules_to_device()
    return model.eval()


def _load_planted(spec: str, device: str, dtype: torch.dtype) -> HookedTransformer:
    try:
        from fixtures.planted import build  # lazy: planted models are optional for real-model runs
    except ModuleNotFoundError as err:
        if err.name is not None and err.name.startswith("fixtures.planted"):
            raise UnknownModel(f"{spec}: planted models need fixtures/planted, which is not available ({err})") from None
        raise
    model = build(spec[len(PLANTED_PREFIX):])
    model = model.to(device)
    if model.cfg.dtype != dtype:
        model = model.to(dtype)
    return model.eval()


def load(
    spec: str,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    processing: ProcessingConfig = ProcessingConfig(),
) -> HookedTransformer:
    """A HookedTransformer for `spec` (see the module docstring). Raises UnknownModel for a spec
    that names nothing, WeightsUnavailable when the weights are neither cached nor downloadable."""
    if not isinstance(spec, str) or not spec:
        raise UnknownModel(f"model spec must be a non-empty string, got {spec!r}")
    if is_planted(spec):
        return _load_planted(spec, device, dtype)
    name = known_name(spec)
    if name is not None:
        return _load_known(name, device, dtype, processing).eval()
    if is_local_checkpoint(spec):
        return _load_local(Path(spec).expanduser(), device, dtype, processing)
    if Path(spec).expanduser().is_dir():
        raise UnknownModel(f"{spec}: a directory without config.json is not an HF checkpoint")
    raise _unknown(spec)
