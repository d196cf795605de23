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

import math

import pandas as pd
import torch

from claims.claim import Claim
from claims.framework import Measured, tokenizer_for
from claims.thesis.heads import (
    NAME_MOVER_TS8M,
    NAME_MOVERS_GPT2,
    S_INHIBITION_GPT2,
    S_INHIBITION_TS8M,
    SECONDARY_NAME_MOVER_TS8M,
)
from mechinterp.attention import (
    attention_between,
    attention_patterns,
    mean_attention,
    per_prompt_attention,
    sub_batch,
)
from mechinterp.heads import Head, argmax_head
from mechinterp.ioi import make_batch, protocol_prompts
from mechinterp.patching import (
    PatchingConfig,
    PatchingError,
    normalize,
    patch_sites,
    patching_pair_batches,
    per_prompt_head_patching,
)
from mechinterp.plots.circuit import attention_pattern_figure
from mechinterp.robustness import ClaimDistribution


def _name(head) -> str:
    return str(Head.parse(head))


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


def h77_values(to_io: torch.Tensor, to_s: torch.Tensor) -> dict[str, float]:
    values = {}
    for head in [NAME_MOVER_TS8M, *NAME_MOVERS_GPT2]:
        io, s = _at(to_io, head), _at(to_s, head)
        values[f"{_name(head)}_END_to_IO"] = io
        # how many times more attention IO gets than S; a large finite cap stands in for S == 0
        values[f"{_name(head)}_IO_over_S"] = io / max(s, 1e-9)
    return values


def measure_h77_name_mover(model) -> Measured:
    batch = make_batch(tokenizer_for(model), protocol_prompts())
    weights = end_to_names(model, batch)
    values = h77_values(weights["IO"], weights["S"])
    details = {_name(head): {"IO": _at(weights["IO"], head), "S": _at(weights["S"], head)}
               for head in [NAME_MOVER_TS8M, *NAME_MOVERS_GPT2]}
    return Measured(values, _pattern_figure(model, batch, [NAME_MOVER_TS8M, *NAME_MOVERS_GPT2]), details)


def h57_values(end_to_s2: torch.Tensor, verb_to_s2: torch.Tensor, and_to_s1: torch.Tensor) -> dict[str, float]:
    values = {}
    for head in [S_INHIBITION_TS8M, S_INHIBITION_GPT2]:
        if Head.parse(head).fits(*end_to_s2.shape):
            values.update({f"{_name(head)}_END_to_S2": _at(end_to_s2, head),
                           f"{_name(head)}_verb_to_S2": _at(verb_to_s2, head),
                           f"{_name(head)}_and_to_S1": _at(and_to_s1, head)})
    return values


def measure_h57_s_inhibition(model) -> Measured:
    batch = make_batch(tokenizer_for(model), protocol_prompts())
    s1_first = sub_batch(batch, batch.pos("S1") < batch.pos("and"))
    to_s2 = mean_attention(model, batch, [("END", "S2"), ("verb", "S2")])
    and_to_s1 = attention_between(model, s1_first, "and", "S1")
    values = h57_values(to_s2[("END", "S2")], to_s2[("verb", "S2")], and_to_s1)
    details = {"prompts_for_and_to_S1": [p.text for p in s1_first.prompts]}
    return Measured(values, _pattern_figure(model, s1_first, [S_INHIBITION_TS8M, S_INHIBITION_GPT2]), details)


def head_patching_effects(model, heads) -> dict[tuple[int, int], float]:
    """Normalized corrupt-to-clean patching effect of each head's output (all positions) on the
    thesis's patching pair (mechinterp.patching; 0 = corrupted, 1 = clean)."""
    clean, corrupt = patching_pair_batches(tokenizer_for(model))
    sites = pd.DataFrame({"layer": [l for l, _ in heads], "head": [h for _, h in heads]})
    effects = patch_sites(model, clean, corrupt, "z", sites, cfg=PatchingConfig(progress=False))
    return dict(zip(heads, effects.tolist()))


def h611_values(to_io: torch.Tensor, to_s: torch.Tensor, effects: dict | None) -> dict[str, float]:
    values = {"H6.11_END_to_IO": _at(to_io, SECONDARY_NAME_MOVER_TS8M),
              "H6.11_END_to_S": _at(to_s, SECONDARY_NAME_MOVER_TS8M)}
    if effects is not None:
        # H6.11's effect minus H7.7's: negative when H6.11 matters less
        values["H6.11_minus_H7.7_patching_effect"] = effects[SECONDARY_NAME_MOVER_TS8M] - effects[NAME_MOVER_TS8M]
    return values


def measure_h611_secondary(model) -> Measured:
    batch = make_batch(tokenizer_for(model), protocol_prompts())
    weights = end_to_names(model, batch)
    details, effects = {}, None
    if _exists(model, SECONDARY_NAME_MOVER_TS8M) and _exists(model, NAME_MOVER_TS8M):
        effects = head_patching_effects(model, [SECONDARY_NAME_MOVER_TS8M, NAME_MOVER_TS8M])
        details["patching_effect"] = {"H6.11": effects[SECONDARY_NAME_MOVER_TS8M], "H7.7": effects[NAME_MOVER_TS8M]}
    values = h611_values(weights["IO"], weights["S"], effects)
    figure = _pattern_figure(model, batch, [SECONDARY_NAME_MOVER_TS8M, NAME_MOVER_TS8M])
    return Measured(values, figure, details)


# --- over the distribution (mechinterp.robustness) ------------------------------------------------

ATTENTION_PAIRS = [("END", "IO"), ("END", "S1"), ("END", "S2"), ("verb", "S2"), ("and", "S1")]


def collect_attention(model, batch) -> dict[str, torch.Tensor]:
    """Per prompt [prompts, n_layers, n_heads]: END -> IO, END -> S (S1 + S2), END -> S2, verb -> S2, and ->
    S1 (0 where the "and" follows IO, with "S1_first" [prompts] marking the prompts it is taken on)."""
    w = per_prompt_attention(model, batch, ATTENTION_PAIRS, causal_check=False)
    s1_first = (batch.pos("S1") < batch.pos("and")).double()
    return {"END_IO": w[("END", "IO")], "END_S": w[("END", "S1")] + w[("END", "S2")], "END_S2": w[("END", "S2")],
            "verb_S2": w[("verb", "S2")], "and_S1": w[("and", "S1")] * s1_first[:, None, None], "S1_first": s1_first}


def _head_patching_effects(means) -> torch.Tensor:
    """[layer, head] normalized effect of the means (patching.normalize); NaN where a resample's clean and
    corrupted means coincide (that resample says nothing, it does not stop the bootstrap)."""
    try:
        return normalize(means["head_patched"], float(means["clean"]), float(means["corrupted"]), PatchingConfig())
    except PatchingError:
        return means["head_patched"] * math.nan


def _secondary_role(means) -> Head:
    """The head, other than the top name mover, that attends most to both names: the largest
    min(END -> IO, END -> S)."""
    both = torch.minimum(means["END_IO"], means["END_S"]).clone()
    first = argmax_head(means["END_IO"] - means["END_S"])
    both[first.layer, first.head] = -math.inf
    return argmax_head(both)


def attention_distributions(model) -> dict[str, ClaimDistribution]:
    patching = _exists(model, SECONDARY_NAME_MOVER_TS8M) and _exists(model, NAME_MOVER_TS8M)

    def h611(means):
        effects = None
        if patching:
            e = _head_patching_effects(means)
            effects = {h: Head.parse(h).of(e) for h in (SECONDARY_NAME_MOVER_TS8M, NAME_MOVER_TS8M)}
        return h611_values(means["END_IO"], means["END_S"], effects)

    name_mover = {"name mover (largest END->IO minus END->S)": (Head(*NAME_MOVER_TS8M), lambda m: argmax_head(m["END_IO"] - m["END_S"]))}
    return {
        "E2.h77-name-mover": ClaimDistribution(collect_attention, lambda m: h77_values(m["END_IO"], m["END_S"]), name_mover),
        "E2.h57-s-inhibition": ClaimDistribution(
            collect_attention, lambda m: h57_values(m["END_S2"], m["verb_S2"], m["and_S1"] / m["S1_first"]),
            {"S-inhibition (largest END->S2 + verb->S2)": (Head(*S_INHIBITION_TS8M), lambda m: argmax_head(m["END_S2"] + m["verb_S2"]))}),
        "E2.h611-secondary": ClaimDistribution(
            (collect_attention, per_prompt_head_patching) if patching else collect_attention, h611,
            {"secondary name mover (most END->IO+S after the name mover)": (Head(*SECONDARY_NAME_MOVER_TS8M), _secondary_role)}),
    }


H77_NAME_MOVER = Claim(
    'E2.h77-name-mover', 's3.4, figs 3.15-3.17',
    "H7.7 is a name mover: it attends from END to IO (about 0.7), like GPT-2 small's H9.9 and H9.6.",
    measure=measure_h77_name_mover,
    distribution=lambda model: attention_distributions(model)["E2.h77-name-mover"],
)


H57_S_INHIBITION = Claim(
    'E2.h57-s-inhibition', 's3.4, figs 3.18-3.19',
    "H5.7 is an S-inhibition head: END and 'gave' attend to S2, the 'and' after S1 to S1, like GPT-2 small's H8.6.",
    measure=measure_h57_s_inhibition,
    distribution=lambda model: attention_distributions(model)["E2.h57-s-inhibition"],
)


H611_SECONDARY = Claim(
    'E2.h611-secondary', 's3.5.1',
    'H6.11 is a weaker name mover that moves both S and IO to END.',
    measure=measure_h611_secondary,
    distribution=lambda model: attention_distributions(model)["E2.h611-secondary"],
)

CLAIMS = [H77_NAME_MOVER, H57_S_INHIBITION, H611_SECONDARY]
