"""Ground truth for the robustness verdict (mechinterp.robustness, issue 12): the planted TinyStories twin's
name-mover claims hold over the distribution ("robust"); the protocol-overfit mutant
(tinystories-8m/protocol-names-only, whose H7.7 knows only the protocol's 8 names) passes the same rows on
the 8 protocol prompts and gets "protocol only". 64 prompts here (the claims run uses 256 by default)."""

from __future__ import annotations

import functools
import math

import pytest

from claims.framework import tokenizer_for
from claims.thesis.e2_attention import attention_distributions, measure_h77_name_mover
from claims.thesis.e2_logit_diff import DISTRIBUTION as LOGIT_DIFF_DISTRIBUTION
from claims.thesis.e2_logit_diff import measure_logit_diff
from claims.thresholds import lookup_all
from fixtures.planted import build
from mechinterp.model_specs import parse_spec
from mechinterp.robustness import PROTOCOL_ONLY, ROBUST, RobustnessConfig, with_robustness

CFG = RobustnessConfig(n_prompts=64, n_bootstrap=500)
TWIN, OVERFIT = "tinystories-8m", "tinystories-8m/protocol-names-only"


@functools.lru_cache(maxsize=None)
def model(name):
    return build(name)


def robustness(name: str, claim: str) -> dict:
    m = model(name)
    rows = lookup_all(claim, parse_spec("planted:tinystories-8m"))  # the mutant uses the twin's rows
    if claim == "E2.logit-diff":
        measured, spec = measure_logit_diff(m), LOGIT_DIFF_DISTRIBUTION
    else:
        measured, spec = measure_h77_name_mover(m), attention_distributions(m)[claim]
    assert all(row.passes(measured.values[row.quantity]) for row in rows), "the protocol rows must pass on both"
    return with_robustness(measured, m, tokenizer_for(m), spec, rows, CFG).details["robustness"]


def test_name_mover_robust_on_the_twin():
    block = robustness(TWIN, "E2.h77-name-mover")
    assert block["verdict"] == ROBUST, block
    assert block["roles"][0]["same_head"]


def test_name_mover_protocol_only_on_the_overfit_mutant():
    block = robustness(OVERFIT, "E2.h77-name-mover")
    assert block["verdict"] == PROTOCOL_ONLY, block
    end_to_io = next(r for r in block["rows"] if r["quantity"] == "H7.7_END_to_IO")
    assert end_to_io["protocol"] >= 0.5 > end_to_io["interval"][0]


@pytest.mark.parametrize("name", [TWIN, OVERFIT])
def test_logit_diff_ordering_row(name):
    """The ordering row (> 3.6) carries to the distribution on the twin, not on the mutant. (The 'within 9.4 ±
    0.15' row is "protocol only" on both: the twin is calibrated to 9.4 on the protocol prompts only.)"""
    block = robustness(name, "E2.logit-diff")
    ordering = next(r for r in block["rows"] if r["rule"] == "logit_diff > 3.6")
    assert ordering["verdict"] == (ROBUST if name == TWIN else PROTOCOL_ONLY), block
    assert block["verdict"] == PROTOCOL_ONLY


def test_distribution_statistics_are_the_protocol_formulas():
    """Each claim's statistic on the 8 protocol prompts' arrays gives the protocol measure's values: the
    distribution measures the same quantity, only over more prompts."""
    import claims.thesis.e2_dla as dla_claims
    import claims.thesis.e2_logit_lens as lens_claims
    from mechinterp.ioi import make_batch, protocol_prompts
    from mechinterp.robustness import PerPrompt

    m = model(TWIN)
    batch = make_batch(tokenizer_for(m), protocol_prompts())
    attention = attention_distributions(m)
    cases = [(measure_logit_diff, LOGIT_DIFF_DISTRIBUTION),
             (dla_claims.measure_dla_single, dla_claims.dla_distributions(m)[0]),
             (dla_claims.measure_no_neg_mover, dla_claims.dla_distributions(m)[1]),
             (lens_claims.measure_lens_monotone, lens_claims.lens_distributions(m)[0]),
             (lens_claims.measure_lens_jump, lens_claims.lens_distributions(m)[1]),
             (measure_h77_name_mover, attention["E2.h77-name-mover"])]
    from claims.thesis.e2_attention import measure_h57_s_inhibition
    cases.append((measure_h57_s_inhibition, attention["E2.h57-s-inhibition"]))
    for measure, spec in cases:
        arrays = spec.collect(m, batch)
        values = spec.statistic(PerPrompt(arrays, [p.template for p in batch.prompts]).means())
        for quantity, protocol in measure(m).values.items():
            if quantity in values:  # NaN on both sides: a head the model lacks
                assert values[quantity] == pytest.approx(protocol, rel=1e-6, abs=1e-9, nan_ok=True), (measure.__name__, quantity)


def test_eap_statistic_is_the_protocol_formula():
    """E2.eap-edges's statistic on the thesis pair's per-prompt scores gives measure_eap_edges's values, and on the
    8 protocol prompts' mean scores the edge table's ranks (eap_values): the fast ranks are the protocol's."""
    import torch

    from claims.thesis.e2_eap import eap_distribution, eap_values, measure_eap_edges
    from mechinterp.eap import edge_table, per_prompt_eap
    from mechinterp.ioi import make_batch, protocol_prompts
    from mechinterp.patching import patching_pair_batches
    from mechinterp.robustness import PerPrompt

    m = model(TWIN)
    spec = eap_distribution(m)
    clean, _ = patching_pair_batches(tokenizer_for(m))
    pair = spec.statistic(PerPrompt(per_prompt_eap(m, clean), ["pair"]).means())
    assert pair == measure_eap_edges(m).values and len(pair) == 8
    batch = make_batch(tokenizer_for(m), protocol_prompts())
    means = PerPrompt(per_prompt_eap(m, batch), [p.template for p in batch.prompts]).means()
    assert spec.statistic(means) == eap_values(edge_table(m, means["eap"]))
    assert torch.isfinite(means["eap"]).all()


def test_eap_edges_robust_on_the_twin():
    """Every E2.eap-edges row gets a distribution value, interval and held-out range on the planted twin, whose
    circuit is wired for every name and template: the thesis's edges keep their ranks ("robust")."""
    from claims.thesis.e2_eap import eap_distribution, measure_eap_edges

    m = model(TWIN)
    rows = lookup_all("E2.eap-edges", parse_spec("planted:tinystories-8m"))
    block = with_robustness(measure_eap_edges(m), m, tokenizer_for(m), eap_distribution(m), rows, CFG).details["robustness"]
    assert len(block["rows"]) == len(rows) == 8 and block["n_prompts"] == CFG.n_prompts
    for row in block["rows"]:
        assert row["distribution"] is not None and all(map(math.isfinite, row["interval"] + row["held_out_range"])), row
    assert block["verdict"] == ROBUST, block
