"""Activation patching on the thesis's pair (thesis s3.4.2, figs 3.11-3.14).

E2.resid-patch-s2  patching the residual stream (layer x position) shows the information moving
                   from S2 to END in the later layers, in TinyStories-8M as in GPT-2 small.
E2.head-patch      patching head outputs: H7.7 and H5.7 matter most in TinyStories-8M, and H5.7 has
                   no direct logit effect; fewer heads matter than in GPT-2 small.

Pair: clean "When John and Mary went to the shops, John gave the bag to", corrupted "..., Mary gave
the bag to"; corrupt-to-clean (clean activations patched into the corrupted run, thesis s2.5.6),
normalized so the corrupted run is 0 and the clean run 1 (mechinterp.patching). Thresholds:
claims/thresholds.py, section E2.
"""

from __future__ import annotations

import math

import torch

from claims.claim import Claim
from claims.framework import Measured, tokenizer_for
from claims.thesis.heads import NAME_MOVER_TS8M, S_INHIBITION_TS8M
from claims.thesis.thresholds import NOTICEABLE_EFFECT
from mechinterp.dla import head_dla, per_prompt_dla
from mechinterp.heads import Head, head_at, top_heads
from mechinterp.patching import (
    PatchingConfig,
    PatchingError,
    patch_head_out_all_pos,
    patch_resid_pre_by_pos,
    patching_pair_batches,
    per_prompt_head_patching,
    per_prompt_resid_patching,
    run_metric,
    s2_to_end_handover,
)
from mechinterp.plots.patching import head_heatmap, layer_position_heatmap
from mechinterp.robustness import ClaimDistribution

CFG = PatchingConfig(progress=False)


def _pair_and_gap(model):
    clean, corrupt = patching_pair_batches(tokenizer_for(model))
    info = {"clean_logit_diff": run_metric(model, clean), "corrupted_logit_diff": run_metric(model, corrupt)}
    return clean, corrupt, info


def _undefined(quantities: list[str], info: dict, error: PatchingError) -> Measured:
    """The corruption does not change the metric, so no effect is defined: every quantity is NaN (fails)."""
    return Measured({**{q: math.nan for q in quantities}, **info}, details={"undefined": str(error)})


def _head_name(layer: int, head: int) -> str:
    return str(Head(layer, head))


# --- E2.resid-patch-s2 --------------------------------------------------------------------------

RESID_QUANTITIES = ["S2_effect_first_half", "END_effect_last_layer", "handover_layer"]


def measure_resid_patch_s2(model) -> Measured:
    """S2's effect over the first half of the layers, END's at the last layer, and the first layer
    at which patching END restores more than patching S2 (n_layers if never)."""
    clean, corrupt, info = _pair_and_gap(model)
    try:
        effects = patch_resid_pre_by_pos(model, clean, corrupt, cfg=CFG)
    except PatchingError as error:
        return _undefined(RESID_QUANTITIES, info, error)
    s2, end = int(clean.pos("S2")[0]), int(clean.pos("END")[0])
    s2_curve, end_curve = effects[:, s2], effects[:, end]
    values = {**s2_to_end_handover(effects, s2, end), **info}
    labels = tokenizer_for(model).convert_ids_to_tokens(clean.tokens[0].tolist())
    figure = layer_position_heatmap(effects, labels, f"{model.cfg.model_name}: residual stream patching (corrupt -> clean)")
    details = {"S2_effect_by_layer": s2_curve.tolist(), "END_effect_by_layer": end_curve.tolist()}
    return Measured(values, figure, details)


# --- E2.head-patch ------------------------------------------------------------------------------

HEAD_QUANTITIES = ["H7.7_rank", "H5.7_rank", "heads_above_0.1", "top2_share_of_abs_effect", "H5.7_over_H7.7_abs_dla"]


def head_patch_values(effects: torch.Tensor, dla: torch.Tensor | None) -> dict[str, float]:
    """E2.head-patch's quantities from the [layer, head] patching effects and (when the model has H7.7 and
    H5.7) the per-head direct logit attribution on the clean prompts."""
    order = effects.abs().flatten().argsort(descending=True)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(1, len(order) + 1)
    rank = rank.view_as(effects)
    magnitudes = effects.abs().flatten().sort(descending=True).values
    values = {
        "heads_above_0.1": float((effects.abs() >= NOTICEABLE_EFFECT).sum()),  # shown, no row
        # how concentrated the effect is, whatever the model's size: the top two heads' share of all |effects|
        "top2_share_of_abs_effect": (magnitudes[:2].sum() / magnitudes.sum()).item(),
    }
    if dla is not None:
        for layer, head in (NAME_MOVER_TS8M, S_INHIBITION_TS8M):
            values[f"{_head_name(layer, head)}_rank"] = float(rank[layer, head])
            values[f"{_head_name(layer, head)}_effect"] = effects[layer, head].item()
        values["H5.7_over_H7.7_abs_dla"] = (dla[S_INHIBITION_TS8M].abs() / dla[NAME_MOVER_TS8M].abs()).item()
    return values


def _fits(model) -> bool:
    return model.cfg.n_layers > NAME_MOVER_TS8M[0] and model.cfg.n_heads > NAME_MOVER_TS8M[1]


def measure_head_patch(model) -> Measured:
    """Ranks of H7.7 and H5.7 by |patching effect|, how many heads move >= 10% of the gap, and
    H5.7's |direct logit attribution| relative to H7.7's on the clean prompt."""
    clean, corrupt, info = _pair_and_gap(model)
    try:
        effects = patch_head_out_all_pos(model, clean, corrupt, cfg=CFG)
    except PatchingError as error:
        return _undefined(HEAD_QUANTITIES, info, error)
    values = {**head_patch_values(effects, head_dla(model, clean) if _fits(model) else None), **info}
    details = {"top_heads": top_heads(effects, 8, by_magnitude=True)}
    figure = head_heatmap(effects, f"{model.cfg.model_name}: head output patching (corrupt -> clean)")
    return Measured(values, figure, details)


# --- over the distribution (mechinterp.robustness) ------------------------------------------------
# Every prompt with its own S2 -> IO corruption (the thesis's), patched corrupt -> clean within its length
# group (mechinterp.ioi.batches_by_length: equal token length and S2 position, so a residual site at S2 or
# END is one position for the whole group). Effects are ratios of means over prompts:
# (mean patched - mean corrupted) / (mean clean - mean corrupted), as the protocol's over its one pair.


def _normalized(means, name: str) -> torch.Tensor:
    gap = means["clean"] - means["corrupted"]
    if abs(float(gap)) <= CFG.min_clean_corrupt_gap:
        return means[name] * math.nan  # the corruption does not move the metric: no effect is defined
    return (means[name] - means["corrupted"]) / gap


def _resid_values(means) -> dict[str, float]:
    effects = torch.stack([_normalized(means, "resid_S2"), _normalized(means, "resid_END")], dim=1)  # [layer, 2]
    return s2_to_end_handover(effects, 0, 1)


def patching_distributions(model) -> dict[str, ClaimDistribution]:
    fits = _fits(model)

    n_heads = model.cfg.n_layers * model.cfg.n_heads  # heads come first among the DLA components

    def head_values(means):
        dla = means["components"][:n_heads].reshape(model.cfg.n_layers, model.cfg.n_heads) if fits else None
        return head_patch_values(_normalized(means, "head_patched"), dla)

    def top_two(means) -> tuple[Head, Head]:
        effects = _normalized(means, "head_patched").abs()
        return tuple(head_at(i, effects.shape[1]) for i in effects.flatten().argsort(descending=True)[:2].tolist())

    top = {"the two heads with the largest |patching effect|": ((Head(*NAME_MOVER_TS8M), Head(*S_INHIBITION_TS8M)), top_two)}
    return {
        "E2.resid-patch-s2": ClaimDistribution(per_prompt_resid_patching, _resid_values),
        "E2.head-patch": ClaimDistribution((per_prompt_head_patching, per_prompt_dla), head_values, top),
    }


RESID_PATCH_S2 = Claim(
    'E2.resid-patch-s2', 's3.4, figs 3.11-3.12',
    'Patching the residual stream shows the information moving from S2 to END in later layers.',
    measure=measure_resid_patch_s2,
    distribution=lambda model: patching_distributions(model)["E2.resid-patch-s2"],
)


HEAD_PATCH = Claim(
    'E2.head-patch', 's3.4, fig 3.13',
    'H7.7 and H5.7 matter most when patched; H5.7 has no direct effect on the logits.',
    measure=measure_head_patch,
    distribution=lambda model: patching_distributions(model)["E2.head-patch"],
)

CLAIMS = [RESID_PATCH_S2, HEAD_PATCH]
