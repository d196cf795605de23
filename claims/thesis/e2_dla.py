"""Direct logit attribution per head (thesis s3.4.2, figs 3.9/3.10), on the 8 protocol prompts.

E2.dla-single     only H7.7 has a noticeable direct effect in TinyStories-8M; GPT-2 small's is spread
                  over several heads.
E2.no-neg-mover   no TinyStories-8M head writes against the answer; GPT-2 small has negative name
                  movers (10.7, 11.10 in the literature).

mechinterp.dla with the final LayerNorm scale frozen from the clean run. Thresholds:
claims/thresholds.py, section E2.
"""

from __future__ import annotations

import torch

from claims.claim import Claim
from claims.framework import Measured, tokenizer_for
from claims.thesis.heads import NAME_MOVER_TS8M, NEGATIVE_NAME_MOVERS_GPT2
from mechinterp.dla import dla_table, per_prompt_dla
from mechinterp.heads import Head, argmax_head, head_at
from mechinterp.ioi import make_batch, protocol_prompts
from mechinterp.plots.circuit import dla_figure
from mechinterp.robustness import ClaimDistribution


def protocol_dla(model):
    """Per-component DLA table on the protocol prompts, and the per-head [n_layers, n_heads] view of it."""
    table = dla_table(model, make_batch(tokenizer_for(model), protocol_prompts()))
    heads = torch.tensor(table.loc[table.kind == "head", "dla"].to_numpy()).reshape(model.cfg.n_layers, model.cfg.n_heads)
    return table, heads


def _ranked(values) -> list[tuple[str, float]]:
    n_heads = values.shape[1]
    order = values.flatten().abs().argsort(descending=True)[:6].tolist()
    return [(str(head_at(i, n_heads)), values.flatten()[i].item()) for i in order]


def _top_over_second_positive(heads) -> float:
    top, second = heads.flatten().sort(descending=True).values[:2].tolist()
    if top <= 0:
        return float("nan")  # no head helps the answer at all: no spread to speak of
    return top / second if second > 0 else float("inf")


def dla_single_values(heads: torch.Tensor, total: float) -> dict[str, float]:
    """E2.dla-single's quantities from the per-head mean DLA [n_layers, n_heads] and the logit difference."""
    magnitude = heads.abs().flatten().sort(descending=True).values
    layer, h = NAME_MOVER_TS8M
    others = heads.abs().clone()
    others[layer, h] = 0.0
    return {
        # H7.7's DLA over the largest |DLA| of any other head: below 1 if another head is bigger or H7.7 is negative
        "H7.7_over_next_head": heads[layer, h].item() / others.max().item(),
        # the top head's |DLA| over the second's, whoever they are (shown, no row)
        "top_over_second_head": (magnitude[0] / magnitude[1]).item(),
        # the largest positive DLA over the second largest: large = one head writes the answer, small = shared
        "top_over_second_positive_head": _top_over_second_positive(heads),
        # the top positive head's DLA as a fraction of the logit difference; NaN (fails) if that is not positive
        "top_positive_head_fraction": heads.max().item() / total if total > 0 else float("nan"),
    }


def no_neg_mover_values(heads: torch.Tensor, total: float) -> dict[str, float]:
    """E2.no-neg-mover's quantities from the per-head mean DLA and the logit difference."""
    most_negative = heads.flatten().argmin().item()
    return {
        # the most negative head's DLA as a fraction of the logit difference; NaN (fails) if that is not positive
        "most_negative_head_fraction": heads.min().item() / total if total > 0 else float("nan"),
        "most_negative_head_layer": float(most_negative // heads.shape[1]),
        "logit_diff": total,
    }


def measure_dla_single(model) -> Measured:
    table, heads = protocol_dla(model)
    total = table["dla"].sum()  # the model's logit difference (the components add up to it)
    values = dla_single_values(heads, total)
    details = {"top_heads_by_abs_dla": _ranked(heads)}
    return Measured(values, dla_figure(heads, f"{model.cfg.model_name}: per-head DLA", [NAME_MOVER_TS8M]), details)


def measure_no_neg_mover(model) -> Measured:
    table, heads = protocol_dla(model)
    total = table["dla"].sum()  # the components add up to the model's logit difference (tests/test_dla.py)
    n_heads = heads.shape[1]
    values = no_neg_mover_values(heads, total)
    details = {
        "most_negative_head": str(head_at(heads.flatten().argmin().item(), n_heads)),
        "literature_negative_name_movers_gpt2": {
            str(Head(l, h)): heads[l, h].item() for l, h in NEGATIVE_NAME_MOVERS_GPT2 if l < heads.shape[0] and h < n_heads
        },
        "components": table.query("kind != 'head'")[["label", "dla"]].to_dict("records"),
    }
    highlight = [(l, h) for l, h in NEGATIVE_NAME_MOVERS_GPT2 if l < heads.shape[0] and h < n_heads]
    return Measured(values, dla_figure(heads, f"{model.cfg.model_name}: per-head DLA", highlight), details)


# --- over the distribution (mechinterp.robustness) ------------------------------------------------


def dla_distributions(model) -> tuple[ClaimDistribution, ClaimDistribution]:
    """(E2.dla-single, E2.no-neg-mover) on the distribution; role: the top positive DLA head (H7.7's claim)."""
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads

    def heads_and_total(means) -> tuple[torch.Tensor, float]:
        components = means["components"]  # the components add up to the logit difference
        return components[: n_layers * n_heads].reshape(n_layers, n_heads), float(components.sum())

    top_positive = {"top positive DLA head": (Head(*NAME_MOVER_TS8M), lambda m: argmax_head(heads_and_total(m)[0]))}
    return (ClaimDistribution(per_prompt_dla, lambda m: dla_single_values(*heads_and_total(m)), top_positive),
            ClaimDistribution(per_prompt_dla, lambda m: no_neg_mover_values(*heads_and_total(m))))


DLA_SINGLE = Claim(
    'E2.dla-single', 's3.4, figs 3.9-3.10',
    'Only H7.7 writes the answer directly in TinyStories-8M; GPT-2 small spreads it over several heads.',
    measure=measure_dla_single,
    distribution=lambda model: dla_distributions(model)[0],
)


NO_NEG_MOVER = Claim(
    'E2.no-neg-mover', 's3.4, figs 3.9-3.10',
    'TinyStories-8M has no negative name mover heads; GPT-2 small has (10.7, 11.10).',
    measure=measure_no_neg_mover,
    distribution=lambda model: dla_distributions(model)[1],
)

CLAIMS = [DLA_SINGLE, NO_NEG_MOVER]
