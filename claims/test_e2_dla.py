"""Direct logit attribution per head (thesis s3.4.2, figs 3.9/3.10), on the 8 protocol prompts.

E2.dla-single     only H7.7 has a noticeable direct effect in TinyStories-8M; GPT-2 small's is spread
                  over several heads.
E2.no-neg-mover   no TinyStories-8M head writes against the answer; GPT-2 small has negative name
                  movers (10.7, 11.10 in the literature).

mechinterp.dla with the final LayerNorm scale frozen from the clean run. Thresholds:
claims/thresholds.py, section E2.
"""

from __future__ import annotations

import pytest
import torch

from claims.framework import Measured, tokenizer_for
from mechinterp.dla import dla_table
from mechinterp.ioi import make_batch, protocol_prompts
from mechinterp.plots.circuit import dla_figure

NAME_MOVER_TS8M = (7, 7)
NEGATIVE_NAME_MOVERS_GPT2 = [(10, 7), (11, 10)]  # Wang et al. 2022


def protocol_dla(model):
    """Per-component DLA table on the protocol prompts, and the per-head [n_layers, n_heads] view of it."""
    table = dla_table(model, make_batch(tokenizer_for(model), protocol_prompts()))
    heads = torch.tensor(table.loc[table.kind == "head", "dla"].to_numpy()).reshape(model.cfg.n_layers, model.cfg.n_heads)
    return table, heads


def _ranked(values) -> list[tuple[str, float]]:
    n_heads = values.shape[1]
    order = values.flatten().abs().argsort(descending=True)[:6].tolist()
    return [(f"{i // n_heads}.{i % n_heads}", values.flatten()[i].item()) for i in order]


def _top_over_second_positive(heads) -> float:
    top, second = heads.flatten().sort(descending=True).values[:2].tolist()
    if top <= 0:
        return float("nan")  # no head helps the answer at all: no spread to speak of
    return top / second if second > 0 else float("inf")


def measure_dla_single(model) -> Measured:
    table, heads = protocol_dla(model)
    total = table["dla"].sum()  # the model's logit difference (the components add up to it)
    magnitude = heads.abs().flatten().sort(descending=True).values
    layer, h = NAME_MOVER_TS8M
    others = heads.abs().clone()
    others[layer, h] = 0.0
    values = {
        # H7.7's DLA over the largest |DLA| of any other head: below 1 if another head is bigger or H7.7 is negative
        "H7.7_over_next_head": heads[layer, h].item() / others.max().item(),
        # the top head's |DLA| over the second's, whoever they are (shown, no row)
        "top_over_second_head": (magnitude[0] / magnitude[1]).item(),
        # the largest positive DLA over the second largest: large = one head writes the answer, small = shared
        "top_over_second_positive_head": _top_over_second_positive(heads),
        # the top positive head's DLA as a fraction of the logit difference; NaN (fails) if that is not positive
        "top_positive_head_fraction": heads.max().item() / total if total > 0 else float("nan"),
    }
    details = {"top_heads_by_abs_dla": _ranked(heads)}
    return Measured(values, dla_figure(heads, f"{model.cfg.model_name}: per-head DLA", [NAME_MOVER_TS8M]), details)


def measure_no_neg_mover(model) -> Measured:
    table, heads = protocol_dla(model)
    total = table["dla"].sum()  # the components add up to the model's logit difference (tests/test_dla.py)
    n_heads = heads.shape[1]
    most_negative = heads.flatten().argmin().item()
    values = {
        # the most negative head's DLA as a fraction of the logit difference; NaN (fails) if that is not positive
        "most_negative_head_fraction": heads.min().item() / total if total > 0 else float("nan"),
        "most_negative_head_layer": float(most_negative // n_heads),
        "logit_diff": total,
    }
    details = {
        "most_negative_head": f"{most_negative // n_heads}.{most_negative % n_heads}",
        "literature_negative_name_movers_gpt2": {
            f"{l}.{h}": heads[l, h].item() for l, h in NEGATIVE_NAME_MOVERS_GPT2 if l < heads.shape[0] and h < n_heads
        },
        "components": table.query("kind != 'head'")[["label", "dla"]].to_dict("records"),
    }
    highlight = [(l, h) for l, h in NEGATIVE_NAME_MOVERS_GPT2 if l < heads.shape[0] and h < n_heads]
    return Measured(values, dla_figure(heads, f"{model.cfg.model_name}: per-head DLA", highlight), details)


@pytest.mark.claim("E2.dla-single")
def test_dla_single(subject, check):
    check(measure_dla_single(subject.model))


@pytest.mark.claim("E2.no-neg-mover")
def test_no_neg_mover(subject, check):
    check(measure_no_neg_mover(subject.model))
