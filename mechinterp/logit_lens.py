"""Logit lens on the logit difference: the accumulated residual stream at END after every
attention and MLP sublayer, decoded onto logit(IO) - logit(S) (thesis 3.4.2, figs 3.7/3.8).

Decoding a residual x onto the logit difference, exactly as the model decodes its last residual:
    logits = LN_final(x) @ W_U + b_U,   LN_final(x) = (x - mean(x)) / scale * w + b
so  logit(IO) - logit(S) = (x - mean(x)) / scale . (w * d) + (b . d + b_U[IO] - b_U[S]),
with d = W_U[:, IO] - W_U[:, S]. (With transformer_lens's default fold_ln, w and b are already
folded into W_U and b_U; an unfolded or RMS final norm is handled by the same formula.)

Two choices of `scale` (LogitLensConfig.ln):
  "frozen"     the final LayerNorm scale of the clean run at END, shared by all points (the thesis's
               and Wang et al.'s convention, transformer_lens apply_ln_to_stack). Linear: the step
               between adjacent points is exactly the direct logit attribution of that sublayer.
  "recomputed" LN_final applied to each partial residual with its own statistics, as if the model
               ended there (the classic logit lens, transformer_lens accumulated_resid(apply_ln=True)).
Both end at the model's own logit difference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pandas as pd
import torch
from transformer_lens import ActivationCache, HookedTransformer

from mechinterp.ioi import IOIBatch


@dataclass
class LogitLensConfig:
    ln: Literal["frozen", "recomputed"] = "frozen"
    include_bias: bool = True  # add b . d + b_U[IO] - b_U[S], so the last point is the true logit diff


def end_position(batch: IOIBatch) -> int:
    """The shared END index of a batch; IOI batches are equal-length, so END is the last token."""
    end = batch.pos("END")
    last = batch.tokens.shape[1] - 1
    if not bool((end == last).all()):
        raise ValueError(f"END positions {end.tolist()} are not all the last position {last}; cannot use one position slice")
    return last


def unembed_difference(model: HookedTransformer, batch: IOIBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Per prompt, d = W_U[:, IO] - W_U[:, S] [batch, d_model] and b_U[IO] - b_U[S] [batch]."""
    d = model.W_U[:, batch.io_token].T - model.W_U[:, batch.s_token].T
    return d, model.b_U[batch.io_token] - model.b_U[batch.s_token]


def logit_diff_direction(model: HookedTransformer, batch: IOIBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Per prompt, the direction in normalized-residual space and the constant of the logit difference.

    Returns (direction [batch, d_model], constant [batch]) such that for the clean END residual x,
    logit_diff = centered(x) / scale . direction + constant (centered = x - mean for LayerNorm only).
    The direction includes the final norm's weight; the constant its bias and the unembedding bias.
    """
    d, constant = unembed_difference(model, batch)
    ln_final = getattr(model, "ln_final", None)  # absent when normalization_type is None
    w = getattr(ln_final, "w", None)
    b = getattr(ln_final, "b", None)
    direction = d * w if w is not None else d
    if b is not None:
        constant = constant + d @ b
    return direction, constant


def end_cache(model: HookedTransformer, batch: IOIBatch, names: tuple[str, ...]) -> ActivationCache:
    """The clean run's activations whose names end with `names`, at END only (a pos axis of 1 kept),
    plus the final residual and the final norm's scale there ('ln_final.hook_scale').

    The run stops before the final norm and the unembedding: unembedding every position onto a 50k
    vocabulary costs more than the whole body of TinyStories-8M, and only END's scale is needed.
    """
    end = end_position(batch)
    final = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
    with torch.no_grad():
        resid, cache = model.run_with_cache(
            batch.tokens.to(model.cfg.device), stop_at_layer=model.cfg.n_layers,
            names_filter=lambda name: name.endswith(names) or name == final,
        )
        at_end = {name: act[:, end : end + 1] for name, act in cache.items()}
        if getattr(model, "ln_final", None) is not None and hasattr(model.ln_final, "hook_scale"):
            scale = {}

            def keep(act, hook):
                scale["value"] = act

            with model.hooks(fwd_hooks=[("ln_final.hook_scale", keep)]):
                model.ln_final(resid[:, end : end + 1])
            at_end["ln_final.hook_scale"] = scale["value"]
    return ActivationCache(at_end, model)


def point_labels(n_layers: int) -> list[tuple[str, float]]:
    """(label, x) of each lens point: 'embed' at -0.5, 'attn L' at L (after attention L), 'mlp L' at L + 0.5.

    The x follows the thesis's figures: integer ticks are attention layers, half-integers MLPs.
    """
    points = [("embed", -0.5)]
    for layer in range(n_layers):
        points += [(f"attn {layer}", float(layer)), (f"mlp {layer}", layer + 0.5)]
    return points


def accumulated_logit_diff(model: HookedTransformer, batch: IOIBatch, config: LogitLensConfig | None = None) -> torch.Tensor:
    """[n_points, batch] logit difference read off the residual at END after each sublayer.

    Points: embeddings, then after attention 0, MLP 0, attention 1, ... MLP n-1 (see point_labels).
    A model without MLPs (attn_only) is an error: the thesis's points alternate attention and MLP.
    """
    config = config or LogitLensConfig()
    if model.cfg.attn_only:
        raise ValueError("logit lens points alternate attention and MLP sublayers; attn_only models are not supported")
    if config.ln not in ("frozen", "recomputed"):
        raise ValueError(f"LogitLensConfig.ln must be 'frozen' or 'recomputed', got {config.ln!r}")
    cache = end_cache(model, batch, ("hook_resid_pre", "hook_resid_mid"))
    # resid_pre 0, resid_mid 0, resid_pre 1 (= resid_post 0), ..., final_post; at END.
    resid = cache.accumulated_resid(incl_mid=True, apply_ln=config.ln == "recomputed")[:, :, 0]
    if config.ln == "frozen":
        direction, constant = logit_diff_direction(model, batch)
        resid = cache.apply_ln_to_stack(resid, layer=model.cfg.n_layers, pos_slice=0)
    else:
        # LN_final was applied whole (weight and bias included): project on the raw unembedding.
        direction, constant = unembed_difference(model, batch)
    values = (resid * direction).sum(-1)
    if config.include_bias:
        values = values + constant
    return values.detach()


def logit_lens(model: HookedTransformer, batch: IOIBatch, config: LogitLensConfig | None = None) -> pd.DataFrame:
    """One row per lens point: label, x (thesis figure axis), sublayer, layer, mean logit_diff, std."""
    return lens_table(accumulated_logit_diff(model, batch, config), model.cfg.n_layers)


def lens_table(values: torch.Tensor, n_layers: int) -> pd.DataFrame:
    """logit_lens's table from per-prompt lens values [n_points, prompts] (or their means [n_points])."""
    values = values.double().reshape(len(point_labels(n_layers)), -1)
    rows = []
    for (label, x), v in zip(point_labels(n_layers), values):
        sublayer = label.split()[0]
        layer = -1 if sublayer == "embed" else int(label.split()[1])
        rows.append({"label": label, "x": x, "sublayer": sublayer, "layer": layer,
                     "logit_diff": v.mean().item(), "std": v.std().item() if len(v) > 1 else 0.0})
    return pd.DataFrame(rows)


def sublayer_steps(lens: pd.DataFrame) -> pd.DataFrame:
    """Change in logit difference made by each sublayer (one row per attention / MLP sublayer)."""
    steps = lens.iloc[1:].copy()
    steps["step"] = lens["logit_diff"].diff().iloc[1:].to_numpy()
    return steps[["label", "x", "sublayer", "layer", "step"]].reset_index(drop=True)


def layer_increases(lens: pd.DataFrame) -> pd.Series:
    """Change in logit difference made by each whole layer (attention + MLP), indexed by layer."""
    return sublayer_steps(lens).groupby("layer")["step"].sum()
