"""The on-disk cache of trained SAEs, keyed by what made them.

- a cache directory keyed by a hash of (config, model identity, corpus identity), so a trained SAE is
  reused only for exactly what made it; a corrupt or mismatched entry raises `SAECacheError` and is
  never silently trained over (`load_sae_dir` checks an entry against its `training.json`);
- runs sharing a cache: one lock per entry (`entry_lock`: each SAE is trained once), and staging
  directories of killed runs are swept (`sweep_stale_staging`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from mechinterp.pids import pid_alive
from mechinterp.sae_config import SAETrainingConfig

RECORD_FILENAME = "training.json"  # our record beside sae_lens's cfg.json + sae_weights.safetensors
CACHE_ENV = "MECHINTERP_SAE_CACHE"
STAGING_MARK = ".tmp-"  # <entry>.tmp-<pid>: an entry being written by process pid
LOCK_SUFFIX = ".lock"  # <entry>.lock: flock'd by the one process training that entry
_JSON_TYPES = {dict: "object", list: "array", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}


class SAECacheError(RuntimeError):
    """A cached or user-provided SAE directory is corrupt, incomplete or made by something else."""


def json_type(value: Any) -> str:
    """JSON's name for the type of a parsed value ("object", "array", ...), for one-line errors."""
    return _JSON_TYPES.get(type(value), type(value).__name__)


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
    payload = json.dumps({"config": config.key_dict(), "model": model_id, "corpus": corpus_id}, sort_keys=True)
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
        raise SAECacheError(f"{path} holds a JSON {json_type(record)}, not a training record; delete {directory} to retrain")
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


# --- runs sharing a cache ---------------------------------------------------------------------------


@contextlib.contextmanager
def entry_lock(directory: Path) -> Iterator[None]:
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


def sweep_stale_staging(cache_dir: str | os.PathLike) -> list[Path]:
    """Delete the staging directories (`<entry>.tmp-<pid>`) in `cache_dir` whose process is gone: left
    by a run killed while saving. Returns what was deleted."""
    swept = []
    for staging in Path(cache_dir).glob(f"*{STAGING_MARK}*"):
        match = re.search(rf"{re.escape(STAGING_MARK)}(\d+)$", staging.name)
        if match and staging.is_dir() and not pid_alive(int(match.group(1))):
            shutil.rmtree(staging, ignore_errors=True)
            swept.append(staging)
    return swept
