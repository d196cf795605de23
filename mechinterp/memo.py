"""A per-model memo for repeated forward passes.

Several claims read the same computation of the same model on the same prompts (three E1 claims the
same head scores, two DLA claims one decomposition, two lens claims one lens, ...). `memoized(model,
key, compute)` runs `compute()` once per model object and key. Weak keys: a model the session drops
is not kept alive here. A model with hooks attached is never memoized (its outputs are not the
model's), and the memo can be cleared (`forget`).
"""

from __future__ import annotations

import weakref
from typing import Any, Callable

_MEMO: "weakref.WeakKeyDictionary[Any, dict]" = weakref.WeakKeyDictionary()


def _has_hooks(model) -> bool:
    hook_dict = getattr(model, "hook_dict", None) or {}
    return any(point.fwd_hooks or point.bwd_hooks for point in hook_dict.values())


def memoized(model, key: tuple, compute: Callable[[], Any]):
    """compute() once per (model, key); `key` names the computation and its inputs (e.g. a batch fingerprint)."""
    if _has_hooks(model):
        return compute()
    per_model = _MEMO.setdefault(model, {})
    if key not in per_model:
        per_model[key] = compute()
    return per_model[key]


def forget(model=None) -> None:
    """Drop the memo of `model` (all models when None)."""
    if model is None:
        _MEMO.clear()
    else:
        _MEMO.pop(model, None)
