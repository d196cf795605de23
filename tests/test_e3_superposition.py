"""E3 on the superposition world (planted:tinystories-8m/e3-superposition, fixtures/planted/superposition.py) with SAEs
trained as `./run claims` trains them there (claims.sae_sources.SUPERPOSITION_SAE_CONFIG, its own corpus): the recovered
claims on SAE seeds 0, 1 and 2 (what `--sae-seeds 0,1,2` checks), everything else on seed 0.

The world first: its residual stream is in superposition (a background dictionary larger than 2 x d_model, L0 >= 10 per
token) and each role feature occurs apart from its token. Then the claims, as tests/test_e3_trained_graded.py does for
the graded variant: a claim whose role a trained SAE recovers passes on the world and fails on the world with the
change of the mutant that lacks the finding (its SAEs trained too); a claim it does not recover is a known gap
(claims.thesis.thresholds.KNOWN_GAPS) that must still fail, on its listed rows only. SAE training is deterministic on one
machine, not across machines (claims.thesis.thresholds.KNOWN_GAPS, E3.L7): values near a bound may move elsewhere.
"""

from __future__ import annotations

import functools
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from claims.framework import measure_claim
from claims.sae_sources import ORACLE, SUPERPOSITION, SUPERPOSITION_SAE_CONFIG, SAESet, planted_corpus
from claims.thesis.thresholds import KNOWN_GAPS
from mechinterp.sae_options import sae_config_from_file
from fixtures import planted
from tests.test_claim_pairs_e3 import E3_CLAIMS, rows_failing

WORLD = SUPERPOSITION.split(":", 1)[1]


def corpus() -> list[str]:
    return planted_corpus(SUPERPOSITION)


def measure(claim: str, model, saes) -> dict:
    """The claim's protocol on `model` with the world's rows and context corpus (its own story corpus)."""
    return measure_claim(claim, model, SUPERPOSITION, saes).values


# Claim -> the mutant whose change, applied to the world, removes the finding (fixtures.planted.MUTANTS).
# Measured (thesis prompt, SAE seed 0, this project's CPU), world -> world + mutant: L6-to P(IO) after the ablation
# 3.3% -> 84%; L5-to 7.8% -> 74% (H6.11 keeps 0 -> 1.0 of its names); L5-gave verb peak 1 -> 0, lead inf -> none, H7.7
# keeps 0.44 -> 1.0 of END->IO (the verb's ground truth 2.76 -> 0); L5-infinitive-to attention to earlier ' to' after it
# 0.88 -> 0; L6-negative-names (names@6, moved by H7.5) attribution -3.74 -> -0.09, lead 2.76 -> 1.12, names among its
# top contexts 10 (8 distinct) -> 0; L7 lead 70 -> 1.3.
MUTANT_OF = {
    "E3.L6-to-feature-collapse": "tinystories-8m/no-to6-trigger",
    "E3.L5-to-feature": "tinystories-8m/no-to5-trigger",
    "E3.L5-gave-feature": "tinystories-8m/no-verb-path",
    "E3.L5-infinitive-to": "tinystories-8m/no-infinitive-feature",
    "E3.L6-negative-names": "tinystories-8m/no-name-repeller",
    "E3.L7-logit-feature": "tinystories-8m/s-suppressor",
    "E3.random-control": "tinystories-8m/dense-name-mover-query",
}
# What trained SAEs do not show on the world: claims.thesis.thresholds.KNOWN_GAPS (the report of `./run claims --model
# planted:tinystories-8m/e3-superposition` says why), each with its failing rows and measured cause.
TRAINED_GAPS = {gap.claim: gap for gap in KNOWN_GAPS if gap.model == SUPERPOSITION}
RECOVERED = sorted(set(E3_CLAIMS) - set(TRAINED_GAPS))


@functools.lru_cache(maxsize=None)
def world(mutant: str | None = None):
    """The world, or the world with one E3 mutant's change on top."""
    if mutant is None:
        return planted.build(WORLD)
    from fixtures.planted.mutants import E3_SUPERPOSITION, REGISTRY
    from fixtures.planted.tinystories import TinyStoriesTwinConfig, build_tinystories_twin

    config = replace(TinyStoriesTwinConfig(), **E3_SUPERPOSITION[WORLD][2], **REGISTRY[mutant].change)
    return build_tinystories_twin(config, name=f"{WORLD}+{mutant.split('/', 1)[1]}")


# The good training's SAE seeds: `./run claims --model planted:tinystories-8m/e3-superposition --sae-seeds 0,1,2` holds
# a finding only when every seed shows it (claims.thresholds.SAE_SEED_RULE), so the recovered claims are checked on
# each; mutants, known gaps and the regression configs on seed 0.
SEEDS = (0, 1, 2)


@functools.lru_cache(maxsize=None)
def saes(mutant: str | None = None, config=SUPERPOSITION_SAE_CONFIG, seed: int = 0) -> SAESet:
    # the world's spec: its corpus, fetched per block
    return SAESet(SUPERPOSITION, world(mutant), config=replace(config, seed=seed))


@functools.lru_cache(maxsize=None)
def trained_values(claim: str, mutant: str | None = None, seed: int = 0) -> dict:
    return measure(claim, world(mutant), saes(mutant, seed=seed))


# --- the world -------------------------------------------------------------------------------------------------


@torch.no_grad()
def test_background_is_a_dictionary_in_superposition_with_l0_of_ten():
    """More atoms than 2 x d_model, in fewer dimensions than d_model, and each token after the first holds its own
    atoms and its predecessor's (10 when they do not share one)."""
    from fixtures.planted.superposition import atoms, token_background

    model = world()
    spec = model.planted.config.superposition
    assert 2 * spec.bg_atoms >= 2 * model.cfg.d_model and 2 * spec.bg_dims < model.cfg.d_model
    tokens = model.to_tokens(corpus()[0])[0]
    index, magnitude = token_background(spec, 0, model.cfg.d_vocab)
    dictionary = atoms(spec, 0)
    _, cache = model.run_with_cache(tokens[None], names_filter="blocks.5.hook_resid_post")
    resid = cache["blocks.5.hook_resid_post"][0].double()
    self_basis, ctx_basis = (model.planted.subspaces[k].double() for k in ("bg_self", "bg_ctx"))
    for pos in range(2, len(tokens)):
        for basis, token in ((self_basis, tokens[pos]), (ctx_basis, tokens[pos - 1])):
            expected = magnitude[token] @ dictionary[index[token]]
            assert torch.allclose(resid[pos] @ basis.T, expected, atol=0.05), (pos, token)
    assert min(len(set(index[t].tolist()) | set(index[p].tolist())) for t, p in zip(tokens[2:], tokens[1:-1])) >= 9


@torch.no_grad()
def test_role_features_occur_apart_from_their_tokens_and_their_tokens_apart_from_them():
    """to@5 on ' for' after a giving verb and ' to' without it (after 'went'); inf@5 on ' for'; names@6 on pronouns
    and on a name right after a comma, not on a name elsewhere."""
    model = world()
    d = model.planted.directions

    def at(text: str, word: str, block: int, direction: str, occurrence: int = -1) -> float:
        tokens = model.to_tokens(text)[0]
        target = model.to_single_token(word)
        pos = [i for i, t in enumerate(tokens.tolist()) if t == target][occurrence]
        _, cache = model.run_with_cache(tokens[None], names_filter=f"blocks.{block}.hook_resid_post")
        return float(cache[f"blocks.{block}.hook_resid_post"][0, pos] @ d[direction])

    assert at("Tom gave the ball to Mia for her birthday.", " for", 5, "to@5") > 4
    assert at("Tom went to the park.", " to", 5, "to@5") < 0.5
    assert at("Tom made a cake for Mia.", " for", 5, "infinitive-to@5") > 4
    assert at("Then she smiled.", " she", 6, "names@6") > 0.4
    assert at("Tom smiled. Mia had a ball.", " Mia", 6, "names@6") < 0.05
    assert at("Then Tom smiled at Mia.", " Mia", 6, "names@6") < 0.05
    assert at("One day, Mia had a ball.", " Mia", 6, "names@6") > 0.9
    assert at("One day, the dog ran.", " the", 6, "names@6") < 0.05  # the comma alone is not enough


@functools.lru_cache(maxsize=None)
def oracle_values(claim: str) -> dict:
    return measure(claim, world(), SAESet(SUPERPOSITION, world(), config=ORACLE))


@pytest.mark.parametrize("claim", sorted(E3_CLAIMS))
def test_claim_passes_on_the_world_with_oracle(claim):
    """The planted directions themselves pass every row: the world keeps the graded variant's circuit."""
    assert rows_failing(claim, oracle_values(claim)) == set()


@pytest.mark.parametrize("claim", ["E3.L5-gave-feature", "E3.L6-negative-names"])
def test_ground_truth_attribution_is_the_oracle_features(claim):
    """The ground truth the page reports beside an attribution role (planted_direction_attribution: the planted
    direction's gradient x activation, features.direction_attribution) is what the oracle SAE's feature along that
    direction scores (features.feature_attribution through the SAE's encoder): two routes, one number."""
    values = oracle_values(claim)
    assert values["attribution"] == pytest.approx(values["planted_direction_attribution"], rel=1e-3)


# --- trained SAEs ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_trained_saes_are_sparse_codes_of_the_superposition(seed):
    """L0 >= 10 at each block (the background's), explained variance >= 0.8 on held-out stories."""
    for block in (5, 6, 7):
        quality = saes(seed=seed)[block].cfg.metadata.training_record["quality"]
        assert quality["l0"] >= 10 and quality["explained_variance"] >= 0.8, (block, quality)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("claim", RECOVERED)
def test_claim_passes_on_the_world_with_trained_saes(claim, seed):
    assert rows_failing(claim, trained_values(claim, seed=seed)) == set()


@pytest.mark.parametrize("claim", RECOVERED)
def test_claim_fails_on_its_mutant_of_the_world_with_trained_saes(claim):
    mutant = MUTANT_OF[claim]
    assert rows_failing(claim, trained_values(claim, mutant)), f"{claim} still passes on {WORLD} + {mutant}"


@pytest.mark.parametrize("claim", sorted(TRAINED_GAPS))
def test_known_gap_of_the_world_still_fails_on_its_rows_only(claim):
    """A gap that closed fails here until its entry goes; a row failing beyond the gap's is not excused."""
    failing = {row.split("=", 1)[0] for row in rows_failing(claim, trained_values(claim))}
    assert failing, f"{claim} now passes on {SUPERPOSITION} with trained SAEs: drop its KNOWN_GAPS entry"
    beyond = failing - set(TRAINED_GAPS[claim].quantities)
    assert not beyond, f"{claim}: {beyond} fail beyond the gap"


def test_every_e3_claim_is_recovered_or_a_gap_and_has_a_mutant():
    assert set(RECOVERED) | set(TRAINED_GAPS) == set(E3_CLAIMS) and not set(RECOVERED) & set(TRAINED_GAPS)
    assert set(MUTANT_OF) == set(E3_CLAIMS)
    assert all(claim in planted.MUTANTS[mutant][1] for claim, mutant in MUTANT_OF.items())


# --- SAE-training regression on the known answer ----------------------------------------------------------------
# Plausible worse trainings (fixtures/sae_regression/<name>.json over the world's config), each run against the good one
# with --baseline by fixtures/sae_regression/run.sh (SAE seeds 0, 1, 2; the table is in the README). Measured there, the
# findings each loses (the good training loses none of the six it recovers):
# - l1-x10 (L1 100): all six on every seed (EV ~0.03, L0 ~2);
# - tenth-tokens (10k training tokens): L5-gave and L7 on every seed (L7 lead 3.5 / 0.56 / 1.2), L5-to, L6-to and
#   L6-negative-names on two seeds (P(IO) 33% / 29% and 6.3% / 14% after; names lead 0.16 / 0.09);
# - lr-tenth (learning rate 3e-5, a tenth of the default): L6-to (P(IO) 26% / 35% / 25% after, bar 5%), L5-gave and L7
#   (lead 1.07 / 1.8 / 2.4, bar 10) on every seed, L5-infinitive-to on seed 0 (L0 136-163, EV 0.54).
# Not pinned: narrow (width 256, under the 640-atom dictionary) loses L7 on seed 0 only (lead 6.6).
# Here: seed 0, one finding each loses there by a wide margin, measured on the block it reads.
REGRESSION = Path(__file__).resolve().parents[1] / "fixtures" / "sae_regression"
LOST_ON_SEED_0 = {"l1-x10": "E3.L5-to-feature", "tenth-tokens": "E3.L7-logit-feature", "lr-tenth": "E3.L6-to-feature-collapse"}


@pytest.mark.parametrize("name", sorted(LOST_ON_SEED_0))
def test_a_worse_sae_training_loses_a_named_finding(name):
    claim = LOST_ON_SEED_0[name]
    assert claim in RECOVERED, f"{claim} is not a finding the good training shows"
    config = sae_config_from_file(REGRESSION / f"{name}.json", SUPERPOSITION_SAE_CONFIG)
    values = measure(claim, world(), SAESet(SUPERPOSITION, world(), config=config))
    assert rows_failing(claim, values), f"SAEs trained with {name}.json still show {claim}"


def test_the_good_sae_training_loses_no_finding():
    assert {claim: rows_failing(claim, trained_values(claim)) for claim in RECOVERED} == {claim: set() for claim in RECOVERED}
