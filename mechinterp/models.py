"""Model loading: one `load(spec)` for real models, local checkpoints and planted fixtures.

A spec (a --model value, parsed by mechinterp.model_specs into a ModelSpec) is one of
  - a transformer_lens name in KNOWN_MODELS (or its HF repo id), optionally `@revision`: loaded
    with `HookedTransformer.from_pretrained`, from the local HF cache or downloaded when online;
  - a local directory holding an HF checkpoint (config.json + weights), built from its own config;
  - `planted:<name>`: a hand-set circuit model from `fixtures.planted.build(<name>)`.

Weights that are neither cached nor downloadable raise `WeightsUnavailable` with a one-line
message saying how to provide them, fast: no hub retries when offline, unreachable or answering a
server error (which the message names, with the URL). A checkpoint that is there
but broken (bad JSON, truncated or garbage weights) raises `CheckpointError`, one line naming the file.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from transformer_lens import HookedTransformer

from mechinterp.model_specs import (  # noqa: F401 - re-exported: callers load and parse from one place
    KNOWN_MODELS,
    ModelSpec,
    UnknownModel,
    parse_spec,
)

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

    def __init__(self, spec: str | ModelSpec, reason: str = "", hub_answer: str = ""):
        self.spec = parse_spec(spec).raw  # the --model text, as the user gave it
        self.reason = reason  # what failed, for debugging; the message stays one line
        # The hub answered but cannot serve files now (e.g. "https://huggingface.co/... answered 503"): said in
        # the message, since "run once online" is no advice when the run was online.
        self.hub_answer = hub_answer
        super().__init__(hub_error_message(spec, hub_answer) if hub_answer else missing_weights_message(spec))


class CheckpointError(UnknownModel):
    """A checkpoint whose files are present but unreadable (bad JSON, truncated or garbage weights)."""


# --- weights on disk ----------------------------------------------------------------------------


def _hub_cache_dir() -> str:
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE  # read per call: HF_HOME / HF_HUB_CACHE, or a twin cache


def _cached(repo_id: str, filename: str, revision: str | None) -> bool:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename, cache_dir=_hub_cache_dir(), revision=revision)
    return isinstance(found, str)


def weights_available(spec: str | ModelSpec) -> bool:
    """Whether `load(spec)` can work without the network: the local HF cache holds the repo's
    config, weights and tokenizer (at the spec's revision); a local checkpoint directory has config
    and weights; planted specs are always available. Never touches the network."""
    spec = parse_spec(spec)
    if spec.planted:
        return True
    if spec.kind == "known":
        repo, rev = spec.repo_id, spec.revision
        return (_cached(repo, "config.json", rev) and any(_cached(repo, f, rev) for f in WEIGHT_FILES)
                and any(_cached(repo, f, rev) for f in TOKENIZER_FILES))
    directory = Path(spec.name)
    return (directory / "config.json").is_file() and any((directory / f).is_file() for f in WEIGHT_FILES)


def missing_weights_message(spec: str | ModelSpec) -> str:
    """One line saying how to provide the weights of `spec`."""
    spec = parse_spec(spec)
    if spec.kind != "known":
        return f"{spec.raw}: no HF checkpoint (config.json + model.safetensors or pytorch_model.bin) in that directory"
    at = f" at revision {spec.revision}" if spec.revision else ""
    return (
        f"{spec.raw}: weights of {spec.repo_id}{at} are not in the HF cache {_hub_cache_dir()}; provide them by running once "
        f"online `python -c \"from mechinterp.models import load; load('{spec.raw}')\"`, or set HF_HOME to a cache that has "
        f"{spec.repo_id}, or pass a local checkpoint directory with --model /path/to/checkpoint"
    )


def hub_error_message(spec: str | ModelSpec, hub_answer: str) -> str:
    """One line: the weights are not cached and the hub, though reachable, cannot serve them now."""
    spec = parse_spec(spec)
    at = f" at revision {spec.revision}" if spec.revision else ""
    return (f"{spec.raw}: weights of {spec.repo_id}{at} are not in the HF cache {_hub_cache_dir()} and the hub cannot serve "
            f"them now ({hub_answer}); try again later, or set HF_HOME to a cache that has {spec.repo_id}, or pass a local "
            f"checkpoint directory with --model /path/to/checkpoint")


def _hub_file_url(repo_id: str, revision: str | None, filename: str = "config.json") -> str:
    from huggingface_hub import constants

    return f"{constants.ENDPOINT.rstrip('/')}/{repo_id}/resolve/{revision or 'main'}/{filename}"


def hub_probe(repo_id: str | None = None, revision: str | None = None, timeout_s: float = HUB_PROBE_TIMEOUT_S) -> tuple[bool, str]:
    """(reachable, server error): one request, no retries, to the hub endpoint (or, given `repo_id`, to the
    file the download asks for first). Written by hand because huggingface_hub retries an unreachable host
    with backoff for ~25 s per file, and a server error (5xx, 429) for ~20 s per model. The server error is
    '' unless the hub answered one, then e.g. "https://huggingface.co/gpt2/resolve/main/config.json
    answered 503 Service Unavailable"."""
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    if constants.HF_HUB_OFFLINE:
        return False, ""
    url = constants.ENDPOINT if repo_id is None else _hub_file_url(repo_id, revision)
    try:
        answer = get_session().head(url, timeout=timeout_s)  # an httpx client: redirects are not followed
    except Exception:  # noqa: BLE001 - DNS, refused, timeout, proxy: all mean "cannot download now"
        return False, ""
    if answer.status_code >= 500 or answer.status_code == 429:  # what huggingface_hub would retry
        return True, f"{url} answered {answer.status_code} {answer.reason_phrase}".rstrip()
    return True, ""  # any other answer (a redirect, 401, 404) is for from_pretrained to read


def hub_reachable(timeout_s: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """Whether one quick request reaches the hub endpoint (any HTTP answer counts)."""
    return hub_probe(timeout_s=timeout_s)[0]


# --- loading ------------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_deprecation():
    # transformer_lens 3 warns that TransformerBridge is the future API; the thesis (and this
    # suite) use HookedTransformer deliberately, so the warning is noise here.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, message="HookedTransformer.* is deprecated")
        yield


def _processing_kwargs(processing: ProcessingConfig) -> dict:
    return dict(fold_ln=processing.fold_ln, center_writing_weights=processing.center_writing_weights,
                center_unembed=processing.center_unembed, fold_value_biases=processing.fold_value_biases)


def _load_known(spec: ModelSpec, device: str, dtype: torch.dtype, processing: ProcessingConfig) -> HookedTransformer:
    if not weights_available(spec):
        reachable, server_error = hub_probe(spec.repo_id, spec.revision)
        if not reachable:
            raise WeightsUnavailable(spec, reason="not cached, and HF_HUB_OFFLINE=1 or the hub is unreachable")
        if server_error:
            raise WeightsUnavailable(spec, reason="not cached, and the hub answered a server error", hub_answer=server_error)
    revision = {"revision": spec.revision} if spec.revision else {}  # passed on to HF's from_pretrained
    try:
        with _quiet_deprecation():
            return HookedTransformer.from_pretrained(spec.name, device=device, dtype=dtype,
                                                     **_processing_kwargs(processing), **revision)
    except OSError as err:  # transformers / huggingface_hub report missing files and network failures as OSError
        if weights_available(spec):
            raise
        first_line = (str(err).splitlines() or [""])[0]
        raise WeightsUnavailable(spec, reason=f"{type(err).__name__}: {first_line}", hub_answer=_server_error_in(err)) from None


def _server_error_in(err: BaseException) -> str:
    """'<url> answered <status> <reason>' when `err`, or an error it was raised from, is the hub's server error
    (5xx, 429: a file after the probed one failed, after huggingface_hub's own retries); else ''."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        response = getattr(err, "response", None)
        status = getattr(response, "status_code", None)
        if isinstance(status, int) and (status >= 500 or status == 429):
            return f"{response.request.url} answered {status} {response.reason_phrase}".rstrip()
        err = err.__cause__ or err.__context__
    return ""


# vocabulary size -> a tokenizer built without the hub, for checkpoints that ship none; registered from outside
# this package (fixtures.tokenizer registers GPT-2's BPE on import).
OFFLINE_TOKENIZERS: dict[int, Callable[[], Any]] = {}


def register_offline_tokenizer(vocab_size: int, make: Callable[[], Any]) -> None:
    OFFLINE_TOKENIZERS[vocab_size] = make


def _local_tokenizer(directory: Path, vocab_size: int):
    from transformers import AutoTokenizer

    if any((directory / f).is_file() for f in TOKENIZER_FILES):
        try:
            return AutoTokenizer.from_pretrained(str(directory))
        except Exception as err:  # noqa: BLE001 - any tokenizer-file failure is one line naming the directory
            raise CheckpointError(f"{directory}: tokenizer files cannot be read ({type(err).__name__}: {_first_line(err)})") from None
    if vocab_size in OFFLINE_TOKENIZERS:  # e.g. GPT-2's BPE (both thesis families), built offline
        return OFFLINE_TOKENIZERS[vocab_size]()
    raise UnknownModel(f"{directory}: no tokenizer files ({', '.join(TOKENIZER_FILES)}) and vocab {vocab_size} is not GPT-2's")


def _weights_fault(err: BaseException) -> str:
    """Why a checkpoint's weights cannot be loaded, one line. torch's refusal of a pickle holding more than
    tensors advises loading with weights_only=False, which would run the file's code: that advice is left
    out, only the refused object is named."""
    if "Weights only load failed" in str(err):
        refused = re.search(r"WeightsUnpickler error: (.*?)(?: was not an allowed global|\. |\n|$)", str(err))
        what = f" ({refused.group(1)})" if refused else ""
        return (f"hold pickled objects other than tensors{what}, which are not loaded: unpickling them could run code "
                "from the file; use a checkpoint of tensors only (e.g. model.safetensors)")
    return f"cannot be loaded ({type(err).__name__}: {_first_line(err)})"


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [""])[0][:300]


# transformer_lens's config converter picks some architectures by substrings of the model name
# ("llama", "gemma", ...) before it reads config.json; a neutral path keeps it on the config.
_NAME_TRIGGERS = ("llama", "gemma", "wav2vec2")


@contextlib.contextmanager
def _neutral_checkpoint_view(directory: Path, config: dict) -> Iterator[Path]:
    """A temporary directory named 'checkpoint' holding links to `directory`'s files and a copy of
    its config.json with n_ctx filled from n_positions (current transformers no longer writes n_ctx
    for GPT-2, and transformer_lens reads it)."""
    root = Path(tempfile.mkdtemp(prefix="mechinterp-local-"))
    try:
        view = root / "checkpoint"
        if any(t in str(view).lower() for t in _NAME_TRIGGERS):
            raise UnknownModel(f"the temporary directory {root} contains one of {_NAME_TRIGGERS}, which transformer_lens "
                               f"reads as an architecture; set TMPDIR to another place")
        view.mkdir()
        for item in directory.iterdir():
            if item.name != "config.json":
                (view / item.name).symlink_to(item.resolve())
        if config.get("architectures", [None])[0] == "GPT2LMHeadModel" and "n_ctx" not in config:
            config = {**config, "n_ctx": config["n_positions"]}
        (view / "config.json").write_text(json.dumps(config))
        yield view
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _load_local(spec: ModelSpec, device: str, dtype: torch.dtype, processing: ProcessingConfig) -> HookedTransformer:
    """A local HF checkpoint, built from its own config.json (already checked by parse_spec).

    These are from_pretrained's own steps, called directly: from_pretrained first resolves the
    name against its official list, which rejects paths, whereas its config and weight converters
    accept a directory. (Passing an official name plus hf_model= instead would fetch that repo's
    config from the hub, failing offline and ignoring the checkpoint's own sizes.) One difference
    to loading TinyStories by name: n_ctx stays the config's 2048, not transformer_lens's 512 trim;
    positions beyond 512 are never used here.
    """
    from transformer_lens import loading_from_pretrained as loading
    from transformers import AutoModelForCausalLM

    from mechinterp.model_specs import read_config

    directory = Path(spec.name)
    if not weights_available(spec):
        raise WeightsUnavailable(spec)
    config = read_config(directory)
    try:
        hf_model = AutoModelForCausalLM.from_pretrained(str(directory), dtype=dtype).eval()
    except Exception as err:  # noqa: BLE001 - truncated / garbage / mismatched weights: one line naming the files
        weights = ", ".join(f for f in WEIGHT_FILES if (directory / f).is_file())
        raise CheckpointError(f"{directory}: weights ({weights}) {_weights_fault(err)}") from None
    tokenizer = _local_tokenizer(directory, hf_model.config.vocab_size)
    with _neutral_checkpoint_view(directory, config) as view:
        cfg = loading.get_pretrained_model_config(str(view), hf_cfg=hf_model.config.to_dict(),
                                                  fold_ln=processing.fold_ln, device=device, dtype=dtype)
        cfg.model_name = spec.rows_model or directory.name
        state_dict = loading.get_pretrained_state_dict(str(view), cfg, hf_model, dtype=dtype)
    with _quiet_deprecation():
        model = HookedTransformer(cfg, tokenizer, move_to_device=False)
    model.load_and_process_state_dict(state_dict, **_processing_kwargs(processing))
    model.move_model_modules_to_device()
    return model.eval()


def _load_planted(spec: ModelSpec, device: str, dtype: torch.dtype) -> HookedTransformer:
    from mechinterp.model_specs import planted_builder

    with _quiet_deprecation():  # as for every other load path: the builder writes a HookedTransformer on purpose
        model = planted_builder()(spec.name)
    model = model.to(device)
    if model.cfg.dtype != dtype:
        model = model.to(dtype)
    return model.eval()


def load(
    spec: str | ModelSpec,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    processing: ProcessingConfig = ProcessingConfig(),
) -> HookedTransformer:
    """A HookedTransformer for `spec` (see the module docstring). Raises UnknownModel for a spec
    that names nothing, WeightsUnavailable when the weights are neither cached nor downloadable,
    CheckpointError for a local checkpoint whose files cannot be read."""
    spec = parse_spec(spec)
    if spec.planted:
        return _load_planted(spec, device, dtype)
    if spec.kind == "known":
        return _load_known(spec, device, dtype, processing).eval()
    return _load_local(spec, device, dtype, processing)


def is_planted(spec: str | ModelSpec) -> bool:
    return parse_spec(spec).planted


def real_counterpart(spec: str | ModelSpec) -> str | None:
    """The real model whose thesis numbers apply (None for an unidentified local checkpoint)."""
    return parse_spec(spec).rows_model
