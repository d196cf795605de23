"""Attention patterns of the circuit's heads (thesis s3.4.2 figs 3.15-3.19, s3.5.1), averaged over
the 8 protocol prompts with each prompt's own positions.

E2.h77-name-mover     H7.7 attends from END to IO (~0.7) and hardly to S, like GPT-2 small's name
                      movers H9.9 and H9.6.
E2.h57-s-inhibition   H5.7 attends from END and from the verb to S2, and from the "and" after S1 to
                      S1, like GPT-2 small's S-inhibition head H8.6.
E2.h611-secondary     H6.11 is a weaker name mover: from END it attends to both names (S and IO), and
                      patching its output matters less than patching H7.7's.

"S" below is the subject's two occurrences together (S1 + S2). The "and"->S1 weight is taken on the
prompts where S1 is the first name (so the "and" follows S1, as in the thesis's figures); on the
others the "and" follows IO. Thresholds: claims/thresholds.py, section E2.
"""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from claims.framework import Measured, tokenizer_for
from mechinterp.attention import attention_between, attention_patterns, mean_attention, sub_batch
from mechinterp.ioi import make_batch, protocol_prompts
from mechinterp.patching import PatchingConfig, patch_sites, patching_pair_batches
from mechinterp.plots.circuit import attention_pattern_figure

NAME_MOVER_TS8M = (7, 7)
NAME_MOVERS_GPT2 = [(9, 9), (9, 6)]
S_INHIBITION_TS8M = (5, 7)
S_INHIBITION_GPT2 = (8, 6)
SECONDARY_NAME_MOVER_TS8M = (6, 11)


def _name(head) -> str:
    return f"H{head[0]}.{head[1]}"


def _exists(model, head) -> bool:
    return head[0] < model.cfg.n_layers and head[1] < model.cfg.n_heads


def _pattern_figure(model, batch, heads):
    """The heads' patterns on the first protocol prompt (the thesis's figures use one prompt)."""
    heads = [h for h in heads if _exists(model, h)]
    patterns = attention_patterns(model, batch, heads)[:, 0]
    tokens = [tokenizer_for(model).decode([t]) for t in batch.tokens[0].tolist()]
    return attention_pattern_figure(patterns, tokens, [f"{model.cfg.model_name} {_name(h)}" for h in heads])


def _at(weights, head) -> float:
    """A head's entry of a [n_layers, n_heads] tensor; NaN (fails its row) for a head the model lacks."""
    layer, h = head
    return weights[layer, h].item() if layer < weights.shape[0] and h < weights.shape[1] else float("nan")


def end_to_names(model, batch) -> dict[str, torch.Tensor]:
    """Every head's mean END -> IO and END -> S (S1 + S2) attention, [n_layers, n_heads] each."""
    weights = mean_attention(model, batch, [("END", "IO"), ("END", "S1"), ("END", "S2")])
    return {"IO": weights[("END", "IO")], "S": weights[("END", "S1")] + weights[("END", "S2")]}


def measure_h77_name_mover(model) -> Measured:
    batch = make_batch(tokenizer_for(model), protocol_prompts())
    weights = end_to_names(model, batch)
    values, details = {}, {}
    for head in [NAME_MOVER_TS8M, *NAME_MOVERS_GPT2]:
        io, s = _at(weights["IO"], head), _at(weights["S"], head)
        values[f"{_name(head)}_END_to_IO"] = io
        # how many times more attention IO gets than S; a large finite cap stands in for S == 0
        values[f"{_name(head)}_IO_over_S"] = io / max(s, 1e-9)
        details[_name(head)] = {"IO": io, "S": s}
    return Measured(values, _pattern_figure(model, batch, [NAME_MOVER_TS8M, *NAME_MOVERS_GPT2]), details)


def measure_h57_s_inhibition(model) -> Measured:
    batch = make_batch(tokenizer_for(model), protocol_prompts())
    s1_first = sub_batch(batch, batch.pos("S1") < batch.pos("and"))
    to_s2 = mean_attention(model, batch, [("END", "S2"), ("verb", "S2")])
    and_to_s1 = attention_between(model, s1_first, "and", "S1")
    values = {}
    for head in [S_INHIBITION_TS8M, S_INHIBITION_GPT2]:
        if _exists(model, head):
            values.update({f"{_name(head)}_END_to_S2": _at(to_s2[("END", "S2")], head),
                           f"{_name(head)}_verb_to_S2": _at(to_s2[("verb", "S2")], head),
                           f"{_name(head)}_and_to_S1": _at(and_to_s1, head)})
    details = {"prompts_for_and_to_S1": [p.text for p in s1_first.prompts]}
    return Measured(values, _pattern_figure(model, s1_first, [S_INHIBITION_TS8M, S_INHIBITION_GPT2]), details)


def head_patching_effects(model, heads) -> dict[tuple[int, int], float]:
    """Normalized corrupt-to-clean patching effect of each head's output (all positions) on the
    thesis's patching pair (mechinterp.patching; 0 = corrupted, 1 = clean)."""
    clean, corrupt = patching_pair_batches(tokenizer_for(model))
    sites = pd.DataFrame({"layer": [l for l, _ in heads], "head": [h for _, h in heads]})
    effects = patch_sites(model, clean, corrupt, "z", sites, cfg=PatchingConfig(progress=False))
    return dict(zip(heads, effects.tolist()))


def measure_h611_secondary(model) -> Measured:
    batch = make_batch(tokenizer_for(model), protocol_prompts())
    weights = end_to_names(model, batch)
    values = {"H6.11_END_to_IO": _at(weights["IO"], SECONDARY_NAME_MOVER_TS8M),
              "H6.11_END_to_S": _at(weights["S"], SECONDARY_NAME_MOVER_TS8M)}
    details = {}
    if _exists(model, SECONDARY_NAME_MOVER_TS8M) and _exists(model, NAME_MOVER_TS8M):
        effects = head_patching_effects(model, [SECONDARY_NAME_MOVER_TS8M, NAME_MOVER_TS8M])
        secondary, main = effects[SECONDARY_NAME_MOVER_TS8M], effects[NAME_MOVER_TS8M]
        # H6.11's effect minus H7.7's: negative when H6.11 matters less
        values["H6.11_minus_H7.7_patching_effect"] = secondary - main
        details["patching_effect"] = {"H6.11": secondary, "H7.7": main}
    figure = _pattern_figure(model, batch, [SECONDARY_NAME_MOVER_TS8M, NAME_MOVER_TS8M])
    return Measured(values, figure, details)


@pytest.mark.claim("E2.h77-name-mover")
def test_h77_name_mover(subject, check):
    check(measure_h77_name_mover(subject.model))


@pytest.mark.claim("E2.h57-s-inhibition")
def test_h57_s_inhibition(subject, check):
    check(measure_h57_s_inhibition(subject.model))


@pytest.mark.claim("E2.h611-secondary")
def test_h611_secondary(subject, check):
    check(measure_h611_secondary(subject.model))
