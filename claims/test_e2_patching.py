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

import pytest
import torch

from claims.framework import Measured, tokenizer_for
from mechinterp.dla import head_dla
from mechinterp.patching import (
    PatchingConfig,
    PatchingError,
    patch_head_out_all_pos,
    patch_resid_pre_by_pos,
    patching_pair_batches,
    run_metric,
    s2_to_end_handover,
    top_heads,
)
from mechinterp.plots.patching import head_heatmap, layer_position_heatmap

NAME_MOVER_TS8M = (7, 7)
S_INHIBITION_TS8M = (5, 7)
NOTICEABLE_EFFECT = 0.1  # a head "matters" when patching it moves >= 10% of the clean-corrupted gap
CFG = PatchingConfig(progress=False)


def _pair_and_gap(model):
    clean, corrupt = patching_pair_batches(tokenizer_for(model))
    info = {"clean_logit_diff": run_metric(model, clean), "corrupted_logit_diff": run_metric(model, corrupt)}
    return clean, corrupt, info


def _undefined(quantities: list[str], info: dict, error: PatchingError) -> Measured:
    """The corruption does not change the metric, so no effect is defined: every quantity is NaN (fails)."""
    return Measured({**{q: math.nan for q in quantities}, **info}, details={"undefined": str(error)})


def _head_name(layer: int, head: int) -> str:
    return f"H{layer}.{head}"


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


@pytest.mark.claim("E2.resid-patch-s2")
def test_resid_patch_s2(subject, check):
    check(measure_resid_patch_s2(subject.model))


# --- E2.head-patch ------------------------------------------------------------------------------

HEAD_QUANTITIES = ["H7.7_rank", "H5.7_rank", "heads_above_0.1", "top2_share_of_abs_effect", "H5.7_over_H7.7_abs_dla"]


def measure_head_patch(model) -> Measured:
    """Ranks of H7.7 and H5.7 by |patching effect|, how many heads move >= 10% of the gap, and
    H5.7's |direct logit attribution| relative to H7.7's on the clean prompt."""
    clean, corrupt, info = _pair_and_gap(model)
    try:
        effects = patch_head_out_all_pos(model, clean, corrupt, cfg=CFG)
    except PatchingError as error:
        return _undefined(HEAD_QUANTITIES, info, error)
    order = effects.abs().flatten().argsort(descending=True)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(1, len(order) + 1)
    rank = rank.view_as(effects)
    magnitudes = effects.abs().flatten().sort(descending=True).values
    values = {
        "heads_above_0.1": float((effects.abs() >= NOTICEABLE_EFFECT).sum()),  # shown, no row
        # how concentrated the effect is, whatever the model's size: the top two heads' share of all |effects|
        "top2_share_of_abs_effect": (magnitudes[:2].sum() / magnitudes.sum()).item(),
        **info,
    }
    fits = model.cfg.n_layers > NAME_MOVER_TS8M[0] and model.cfg.n_heads > NAME_MOVER_TS8M[1]
    if fits:
        dla = head_dla(model, clean)
        for layer, head in (NAME_MOVER_TS8M, S_INHIBITION_TS8M):
            values[f"{_head_name(layer, head)}_rank"] = float(rank[layer, head])
            values[f"{_head_name(layer, head)}_effect"] = effects[layer, head].item()
        values["H5.7_over_H7.7_abs_dla"] = (dla[S_INHIBITION_TS8M].abs() / dla[NAME_MOVER_TS8M].abs()).item()
    details = {"top_heads": [(_head_name(l, h), e) for l, h, e in top_heads(effects, 8)]}
    figure = head_heatmap(effects, f"{model.cfg.model_name}: head output patching (corrupt -> clean)")
    return Measured(values, figure, details)


@pytest.mark.claim("E2.head-patch")
def test_head_patch(subject, check):
    check(measure_head_patch(subject.model))
