"""The SAE command-line options, checked at the start of a run, before any model loads:
`--sae-config FILE.json` (`sae_config_from_file`) and `--sae-dir DIR` (`check_sae_dir`, reading only
cfg.json, the safetensors header and training.json). Each problem is a one-line `SAEOptionError`
naming the file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from mechinterp.sae_cache import RECORD_FILENAME, json_type
from mechinterp.sae_config import SAETrainingConfig


class SAEOptionError(ValueError):
    """An SAE command-line option (--sae-config FILE, --sae-dir DIR) names something that cannot be used."""


SAE_WEIGHTS_FILENAME = "sae_weights.safetensors"  # sae_lens's names in an SAE directory
SAE_CFG_FILENAME = "cfg.json"


def _read_json_object(path: Path, where: str) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as err:
        raise SAEOptionError(f"{where}: cannot read {path} ({err})") from None
    except json.JSONDecodeError as err:
        raise SAEOptionError(f"{where}: {path} is not valid JSON ({err})") from None
    if not isinstance(value, dict):
        raise SAEOptionError(f"{where}: {path} holds a JSON {json_type(value)}, expected an object")
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
