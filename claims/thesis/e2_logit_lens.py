"""Logit lens on the logit difference (thesis s3.4.2, figs 3.7/3.8), on the 8 protocol prompts.

E2.lens-monotone  the accumulated-residual logit difference only increases in TinyStories-8M; in
                  GPT-2 small it dips (negative name movers).
E2.lens-jump      most of the logit difference appears at one layer: 7 in TinyStories-8M, 9 in GPT-2 small.

mechinterp.logit_lens with the final LayerNorm scale frozen from the clean run (the thesis's
convention, in which a step between points is that sublayer's direct effect). A drop is given as a
fraction of the lens's total movement and a layer's increase as a fraction of the net change, so one
rule reads the same on a model with logit difference 9.4 and one with 3.6. Thresholds: claims/thresholds.py, section E2.
"""

from __future__ import annotations

from claims.claim import Claim
from claims.framework import Measured, tokenizer_for
from mechinterp.ioi import make_batch, protocol_prompts
from mechinterp.logit_lens import (
    LogitLensConfig,
    accumulated_logit_diff,
    layer_increases,
    lens_table,
    logit_lens,
    sublayer_steps,
)
from mechinterp.plots.circuit import logit_lens_figure
from mechinterp.robustness import ClaimDistribution

LENS = LogitLensConfig(ln="frozen", include_bias=True)


def protocol_lens(model):
    batch = make_batch(tokenizer_for(model), protocol_prompts())
    return logit_lens(model, batch, LENS)


def lens_monotone_values(lens) -> dict[str, float]:
    steps = sublayer_steps(lens)
    worst = steps.loc[steps["step"].idxmin()]
    movement = steps["step"].abs().sum()  # how far the lens travels in all: > 0 on any non-trivial model
    return {
        # the largest single-sublayer decrease as a fraction of the lens's total movement; 0 if it never decreases
        "largest_drop_fraction": max(0.0, -worst["step"]) / movement,
        "largest_drop_layer": float(worst["layer"]),  # the layer of that sublayer (attention or MLP)
        "logit_diff": lens["logit_diff"].iloc[-1],
    }


def lens_jump_values(lens) -> dict[str, float]:
    increases = layer_increases(lens)
    change = lens["logit_diff"].iloc[-1] - lens["logit_diff"].iloc[0]  # what all layers together add
    # A model whose layers add nothing in net has no share to speak of: NaN fails every row.
    share = increases.max() / change if change > 0 else float("nan")
    return {"jump_layer": float(int(increases.idxmax())), "jump_share": share}


def measure_lens_monotone(model) -> Measured:
    lens = protocol_lens(model)
    steps = sublayer_steps(lens)
    values = lens_monotone_values(lens)
    details = {"lens": dict(zip(lens["label"], lens["logit_diff"])), "largest_drop_at": steps.loc[steps["step"].idxmin(), "label"]}
    return Measured(values, logit_lens_figure(lens, f"{model.cfg.model_name}: logit lens (frozen final LN)"), details)


def measure_lens_jump(model) -> Measured:
    lens = protocol_lens(model)
    increases = layer_increases(lens)
    change = lens["logit_diff"].iloc[-1] - lens["logit_diff"].iloc[0]
    values = lens_jump_values(lens)
    details = {"layer_increases": {int(k): v for k, v in increases.items()}, "total_change": change}
    return Measured(values, logit_lens_figure(lens, f"{model.cfg.model_name}: logit lens, largest layer {int(values['jump_layer'])}"), details)


# --- over the distribution (mechinterp.robustness): the lens of the mean over prompts ---------------


def collect_lens(model, batch) -> dict:
    """Per prompt: the frozen-LN lens at every point [prompts, n_points]."""
    return {"lens": accumulated_logit_diff(model, batch, LENS).T}


def lens_distributions(model) -> tuple[ClaimDistribution, ClaimDistribution]:
    n_layers = model.cfg.n_layers
    return (ClaimDistribution(collect_lens, lambda m: lens_monotone_values(lens_table(m["lens"], n_layers))),
            ClaimDistribution(collect_lens, lambda m: lens_jump_values(lens_table(m["lens"], n_layers))))


LENS_MONOTONE = Claim(
    'E2.lens-monotone', 's3.4, figs 3.7-3.8',
    'The logit lens only rises through TinyStories-8M; it dips in GPT-2 small.',
    measure=measure_lens_monotone,
    distribution=lambda model: lens_distributions(model)[0],
)


LENS_JUMP = Claim(
    'E2.lens-jump', 's3.4, figs 3.7-3.8',
    'Most of the logit difference appears at one layer: 7 in TinyStories-8M, 9 in GPT-2 small.',
    measure=measure_lens_jump,
    distribution=lambda model: lens_distributions(model)[1],
)

CLAIMS = [LENS_MONOTONE, LENS_JUMP]
