"""Attention between named IOI positions (thesis 3.4.2, figs 3.15-3.19).

`attention_between(model, batch, "END", "IO")` is the weight every head puts from each prompt's
END token on its IO token, averaged over prompts: a [n_layers, n_heads] tensor. `mean_attention`
is the generic routine (many position pairs, one forward pass); the others are thin variants. Positions are the
batch's own per-prompt positions (mechinterp.ioi), so name order and template do not matter.
`attention_patterns` returns full patterns of chosen heads for the figures.
"""

from __future__ import annotations

import torch
from transformer_lens import HookedTransformer

from mechinterp.ioi import IOIBatch


def _patterns_by_layer(model: HookedTransformer, batch: IOIBatch, layers: list[int]) -> dict[int, torch.Tensor]:
    """layer -> [batch, head, query, key] pattern, from one forward pass that stops after the last layer asked."""
    for layer in layers:
        if not 0 <= layer < model.cfg.n_layers:
            raise ValueError(f"layer {layer} out of range for a model with {model.cfg.n_layers} layers")
    wanted = {f"blocks.{layer}.attn.hook_pattern": layer for layer in layers}
    with torch.no_grad():
        _, cache = model.run_with_cache(
            batch.tokens.to(model.cfg.device),
            names_filter=lambda name: name in wanted,
            stop_at_layer=max(layers) + 1,  # later layers and the unembedding are not needed
        )
    return {layer: cache[name] for name, layer in wanted.items()}


def mean_attention(
    model: HookedTransformer, batch: IOIBatch, pairs: list[tuple[str, str]], layers: list[int] | None = None
) -> dict[tuple[str, str], torch.Tensor]:
    """(source, target) -> [len(layers), n_heads] mean attention weight from position `source`
    (query) to `target` (key), for every head of `layers` (default all), from one forward pass.

    Positions are names of IOIBatch.pos: IO, S1, S2, END, and, verb. Attention to a later position
    is zero by causality; asking for it is an error, since it always means a mix-up.
    """
    return {pair: weights.mean(0) for pair, weights in per_prompt_attention(model, batch, pairs, layers).items()}


def per_prompt_attention(
    model: HookedTransformer, batch: IOIBatch, pairs: list[tuple[str, str]], layers: list[int] | None = None,
    causal_check: bool = True,
) -> dict[tuple[str, str], torch.Tensor]:
    """(source, target) -> [prompts, len(layers), n_heads] attention weight of each prompt (float64),
    from one forward pass; `mean_attention` is its mean over prompts. causal_check=False allows a pair whose
    target comes later in some prompts (those get 0), for a caller that masks them out itself."""
    layers = list(range(model.cfg.n_layers)) if layers is None else layers
    for source, target in pairs:
        if causal_check and bool((batch.pos(target) > batch.pos(source)).any()):
            raise ValueError(f"{target} comes after {source} in some prompts; causal attention from {source} to {target} is always 0")
    patterns = _patterns_by_layer(model, batch, layers)
    rows = torch.arange(len(batch))
    return {
        (source, target): torch.stack(
            [patterns[layer][rows, :, batch.pos(source), batch.pos(target)].double() for layer in layers], dim=1
        ).cpu()
        for source, target in pairs
    }


def attention_between(model: HookedTransformer, batch: IOIBatch, source: str, target: str) -> torch.Tensor:
    """[n_layers, n_heads] mean attention weight from `source` to `target`, e.g. ("END", "IO")."""
    return mean_attention(model, batch, [(source, target)])[(source, target)]


def attention_from(model: HookedTransformer, batch: IOIBatch, source: str, targets: tuple[str, ...], head: tuple[int, int]) -> dict[str, float]:
    """One head's mean attention from `source` to each of `targets`, e.g. ('END', ('IO', 'S1', 'S2'), (7, 7))."""
    layer, h = head
    if not 0 <= h < model.cfg.n_heads:
        raise ValueError(f"head {layer}.{h} out of range: the model has {model.cfg.n_heads} heads per layer")
    weights = mean_attention(model, batch, [(source, target) for target in targets], layers=[layer])
    return {target: weights[(source, target)][0, h].item() for target in targets}


def attention_patterns(model: HookedTransformer, batch: IOIBatch, heads: list[tuple[int, int]]) -> torch.Tensor:
    """[len(heads), batch, query, key] attention patterns of the given (layer, head)s."""
    if not heads:
        raise ValueError("no heads given")
    for layer, h in heads:
        if not 0 <= h < model.cfg.n_heads:
            raise ValueError(f"head {layer}.{h} out of range: the model has {model.cfg.n_heads} heads per layer")
    patterns = _patterns_by_layer(model, batch, sorted({layer for layer, _ in heads}))
    return torch.stack([patterns[layer][:, h] for layer, h in heads]).cpu()


def sub_batch(batch: IOIBatch, keep: torch.Tensor) -> IOIBatch:
    """The prompts of `batch` where the boolean mask `keep` [batch] is true."""
    if keep.dtype != torch.bool or keep.shape != (len(batch),):
        raise ValueError(f"keep must be a bool mask of shape ({len(batch)},), got {keep.dtype} {tuple(keep.shape)}")
    if not bool(keep.any()):
        raise ValueError("keep selects no prompts")
    return batch.select(keep)
