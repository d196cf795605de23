"""Learned ground truth (issue 13): GPT-Neo models that learned IOI from text, checked against brute force.

Each shipped model (fixtures/learned/checkpoints) loads through the path users take (`--model DIR`:
an unidentified local checkpoint with its own tokenizer); the IOI models do IOI on templates and name
pairs they never saw; and the circuit card (mechinterp.circuit_card, on the thesis's 8 protocol
prompts) names, role by role, the heads that mean-ablating every head finds (fixtures.learned.ground_truth;
one rule, mechinterp.ioi_roles, two measurements). The negative control, trained without IOI sentences,
gets no role and no handover layer.
"""

from __future__ import annotations

import functools

import pytest

from fixtures.learned import NEGATIVE_CONTROLS, RECIPES, checkpoint_dir
from fixtures.learned.evaluate import heldout_scores
from fixtures.learned.ground_truth import default_prompts, head_effects, names, own_templates, recipe_prompts
from fixtures.learned.recipe import recipe_key
from fixtures.learned.train import evaluation_templates
from mechinterp.circuit_card import CircuitCardConfig, circuit_card
from mechinterp.models import load, parse_spec

IOI_MODELS = [name for name in RECIPES if name not in NEGATIVE_CONTROLS]
# The bar for "IOI emerged": logit difference >= 3 on held-out templates x held-out pairs
# (GPT-2 small's is 3.6 on its own prompts, thesis table 3.2); no tolerance, it is a floor.
MIN_HELDOUT_LOGIT_DIFF = 3.0
# The control learned no IOI: its held-out logit difference stays near chance (0); 1.0 is a third of the bar above.
MAX_CONTROL_LOGIT_DIFF = 1.0


# Measured disagreements, each a strict xfail with its measured cause (a fix turns it red): (test, model) -> why.
_NO_MOVER = ("measured: no head attends IO more than S1 + S2 from END; the model excludes the most recent name "
             "(S2) instead of copying IO: ")
KNOWN = {
    ("brute_force_finds_name_movers", "neo-2l-s0"): _NO_MOVER + "H1.5 attends S (0.99) and writes against it (direct +0.94 of "
                                                    "5.47), fed by H0.4 (END->S 0.85, ablation drop 2.70)",
    ("brute_force_finds_name_movers", "neo-4l-s1"): _NO_MOVER + "H0.1 (END->S 0.91) carries the logit difference (ablation drop "
                                                    "6.97 of 6.99, direct +0.09), so S is suppressed through the MLPs",
    ("brute_force_finds_name_movers", "neo-2l-s1"): _NO_MOVER + "H0.4 (END->S 1.00) carries it (ablation drop 10.06 of 9.59, "
                                                    "direct +0.40), so S is suppressed through the MLPs",
    ("brute_force_finds_name_movers", "neo-4l-s0"): _NO_MOVER + "H0.6 (END->S 1.00) carries it (ablation drop 11.96 of 11.40, "
                                                    "direct +0.17), so S is suppressed through the MLPs",
    ("brute_force_finds_name_movers", "gpt2-3l-many-s0"): _NO_MOVER + "H1.1 (END->S 0.91) carries it (ablation drop 10.77 of "
                                                          "11.97, direct +1.88), on its own 10 training templates",
    ("brute_force_finds_name_movers", "gpt2-3l-many-s1"): _NO_MOVER + "H0.2 (END->S 0.99) carries it (ablation drop 10.96 of "
                                                          "10.24, direct +0.29), so S is suppressed through the MLPs",
    ("brute_force_finds_name_movers", "gpt2-3l-other-names"): _NO_MOVER + "H1.1 (END->S 1.00) carries it (ablation drop 11.98 "
                                                              "of 10.93, direct +1.39)",
}


def cases(test: str, models: list[str]) -> list:
    return [pytest.param(m, marks=pytest.mark.xfail(strict=True, reason=KNOWN[(test, m)])) if (test, m) in KNOWN else m
            for m in models]


@functools.lru_cache(maxsize=None)
def model_of(name: str):
    return load(str(checkpoint_dir(name)))


@functools.lru_cache(maxsize=None)
def card_of(name: str):
    """The card as a run gives it: on the protocol prompts (or its fallback) for a model of the plain corpus, whose
    words they are; on the model's own templates (--ioi-templates) for the many-templates corpora, whose are not."""
    model = model_of(name)
    templates = own_templates(RECIPES[name]) if RECIPES[name].corpus != "plain" else None
    return circuit_card(model, model.tokenizer, templates=templates)


@functools.lru_cache(maxsize=None)
def truth_of(name: str):
    return head_effects(model_of(name), recipe_prompts(RECIPES[name]))


@pytest.mark.parametrize("name", list(RECIPES))
def test_checkpoint_is_its_recipe_and_loads_as_an_unidentified_local_model(name):
    directory = checkpoint_dir(name)  # raises when training.json's key is not the recipe's
    spec = parse_spec(str(directory))
    family = "gpt2" if RECIPES[name].arch == "gpt2" else "tiny-stories"  # identified by its config's architecture
    assert (spec.kind, spec.rows_model, spec.row_key) == ("local", None, f"{family}-(unidentified)")
    model = model_of(name)
    from transformers import AutoTokenizer

    own = AutoTokenizer.from_pretrained(str(directory))
    assert model.cfg.d_vocab == len(own)
    text = "When John and Mary went to the shops, John gave the bag to"
    assert model.tokenizer.encode(text, add_special_tokens=False) == own.encode(text, add_special_tokens=False)
    assert len(model.tokenizer.encode(" Mary", add_special_tokens=False)) == 1


def test_brute_force_tiled_ablation_equals_one_head_at_a_time():
    """The ground truth ablates all heads in one tiled pass; ablating one head by hand gives the same drops."""
    import torch

    from fixtures.learned.ground_truth import _groups, _logit_diff

    model = model_of(IOI_MODELS[0])
    prompts = default_prompts()[:16]
    truth = head_effects(model, prompts)
    (g,) = _groups(model, prompts)
    for layer, head in [(0, 1), (model.cfg.n_layers - 1, model.cfg.n_heads - 1)]:
        with torch.inference_mode():
            clean = _logit_diff(model(g["tokens"]), g)
            _, cache = model.run_with_cache(g["tokens"])
            mean = cache[f"blocks.{layer}.attn.hook_z"][:, :, head].mean(0)

            def ablate(z, hook, at=slice(None)):
                z[:, at, head] = mean[at]
                return z

            for at, got in ((slice(None), truth.drop), (slice(-1, None), truth.end_drop)):
                hook = (f"blocks.{layer}.attn.hook_z", lambda z, hook, at=at: ablate(z, hook, at))
                by_hand = float((clean - _logit_diff(model.run_with_hooks(g["tokens"], fwd_hooks=[hook]), g)).mean())
                assert abs(by_hand - float(got[layer, head])) < 1e-6, (layer, head, at, by_hand, float(got[layer, head]))


def test_recipe_key_changes_with_any_knob():
    recipe = RECIPES[IOI_MODELS[0]]
    from dataclasses import replace

    assert recipe_key(replace(recipe, seed=recipe.seed + 1)) != recipe_key(recipe)
    assert recipe_key(replace(recipe, ioi_rate=0.5)) != recipe_key(recipe)


@pytest.mark.parametrize("name", IOI_MODELS)
def test_ioi_emerged_on_heldout_templates_and_pairs(name):
    model = model_of(name)
    scores = heldout_scores(model, model.tokenizer, **evaluation_templates(RECIPES[name]), trained=False)
    assert scores["heldout-templates"].logit_diff >= MIN_HELDOUT_LOGIT_DIFF, scores


def test_negative_control_learned_no_ioi():
    for name in NEGATIVE_CONTROLS:
        model = model_of(name)
        scores = heldout_scores(model, model.tokenizer, trained=False)
        assert abs(scores["heldout-templates"].logit_diff) < MAX_CONTROL_LOGIT_DIFF, scores


def _disagreement(name: str, role: str, card_heads: list[str], truth_heads: list[str]) -> str:
    card, truth = card_of(name), truth_of(name)
    wrong = sorted(set(card_heads) ^ set(truth_heads))
    evidence = "\n".join(truth.describe((int(h[1:].split(".")[0]), int(h.split(".")[1]))) for h in wrong)
    return (f"{name}: the circuit card is wrong about {role} {wrong} (brute force is the ground truth: every head "
            f"mean-ablated on held-out name pairs)\n  card: {card_heads}\n  brute force: {truth_heads}\n"
            f"evidence:\n{evidence}\nbrute-force table:\n{truth.table()}\ncard: {card.table()}")


def assert_card_matches_brute_force(name: str, role: str, label: str) -> None:
    """The card's heads of `role` (a CircuitCard and HeadEffects attribute alike) are brute force's first top_k."""
    top_k = CircuitCardConfig().top_k  # the card lists at most top_k heads per role; brute force is cut to as many
    card_heads = [h.name for h in getattr(card_of(name), role)]
    truth_heads = names(getattr(truth_of(name), role))[:top_k]
    assert set(card_heads) == set(truth_heads), _disagreement(name, label, card_heads, truth_heads)


@pytest.mark.parametrize("name", cases("brute_force_finds_name_movers", IOI_MODELS))
def test_brute_force_finds_name_movers(name):
    """The fixture shows the role at all (else the card comparisons below compare two empty lists)."""
    assert truth_of(name).name_movers, f"{name}: brute force finds no name mover\n{truth_of(name).table()}"


ROLES = {"name_movers": "name movers", "negative_name_movers": "negative name movers", "s_inhibition": "S-inhibition",
         "s_suppression": "S-suppression"}


@pytest.mark.parametrize("role", list(ROLES))
@pytest.mark.parametrize("name", list(RECIPES))
def test_card_names_the_brute_force_heads_role_by_role(name, role):
    """Every learned model, the control too: the card (protocol prompts) names the heads brute force (held-out pairs)
    names, role by role, and no head brute force does not."""
    assert_card_matches_brute_force(name, role, ROLES[role])


@pytest.mark.parametrize("name", list(RECIPES))
def test_card_and_brute_force_measure_alike_on_the_same_prompts(name):
    """One rule (mechinterp.ioi_roles), two measurements: on the same prompts (one training template, so one length
    group and the same means) the card's head_measures and the brute force's head_effects agree on every quantity
    the rule reads, to float32 noise."""
    from mechinterp.circuit_card import head_measures
    from mechinterp.ioi import IOIPrompt, batches_by_length

    own = evaluation_templates(RECIPES[name])
    prompts = default_prompts(own["train_templates"][:1], own["places"], own["objects"], own["names"])[:16]
    model = model_of(name)
    truth = head_effects(model, prompts)
    groups = batches_by_length(model.tokenizer, [IOIPrompt(text, " " + io, " " + s) for text, io, s in prompts])
    assert len(groups) == 1
    card = head_measures(model, [groups[0].batch])
    assert abs(card.logit_diff - truth.clean_logit_diff) < 1e-4
    for quantity in ("drop", "end_drop", "direct", "attn_io", "attn_s"):
        difference = (getattr(card, quantity) - getattr(truth, quantity)).abs().max()
        assert difference < 1e-4, (quantity, float(difference))


@pytest.mark.parametrize("name", NEGATIVE_CONTROLS)
def test_negative_control_card_shows_no_role_and_no_handover(name):
    """Below the logit-difference floor the card names nothing and gives no handover layer, on every prompt set it
    tried, and says why."""
    import math

    card = card_of(name)
    assert not card.does_ioi and math.isnan(card.handover_layer), card.table()
    assert not (card.name_movers or card.negative_name_movers or card.s_inhibition or card.s_suppression)
    table = card.table()
    assert table["S2 -> END handover layer"] == "- (no IOI behaviour)" and "no IOI behaviour" in table["notes"], table


@pytest.mark.parametrize("pair_rate", [0.0, 0.5])
def test_distractor_corpus_keeps_the_heldout_pairs_out_and_its_answer_is_the_receiver(pair_rate):
    """The distractor corpus (recipe.DISTRACTOR_KNOBS): its IOI sentence ends the story and the name after its last
    ' to' is IO, the name of the "A and B" pair that S2 does not repeat, or S itself in a one-name self sentence; no
    held-out pair is trained; the distractor sentences name neither IO nor S; a story fits max_positions. With
    pair_rate, distractor conjunctions ("X and Y" of two other names) appear as well, and only then."""
    import random
    import re

    from fixtures.learned.corpus import NAMES, heldout_pairs, story
    from fixtures.learned.recipe import LearnedRecipe
    from fixtures.learned.tokenizer import build_tokenizer

    tokenizer, heldout, rng = build_tokenizer(), heldout_pairs(), random.Random(0)
    count = lambda name, text: len(re.findall(rf"\b{name}\b", text))  # noqa: E731
    n_self = n_pairs = 0
    for _ in range(2000):
        text, at = story(rng, 1.0, 2, heldout, distractors=3, interpose=2, self_rate=0.3, pair_rate=pair_rate)
        answer = text[at:].strip(" .")
        subject = re.search(r"(\w+) (?:gave|handed) [\w ]+? to$", text[:at]).group(1)
        assert text.endswith(f" to {answer}.") and answer in NAMES and subject in NAMES, text
        assert count(subject, text[:at]) == 2, text  # S1 and S2 only: no distractor names S
        n_pairs += sum(not {x, y} & {answer, subject} for x, y in re.findall(r"(\w+) and (\w+)", text))
        if answer == subject:
            n_self += 1
            assert not re.search(rf"\b({answer} and|and {answer})\b", text), text
        else:
            assert count(answer, text[:at]) == 1, text  # IO once: no distractor names IO
            assert frozenset((answer, subject)) not in heldout, text
            assert re.search(rf"\b({answer} and {subject}|{subject} and {answer})\b", text), text
        assert len(tokenizer.encode(text)) + 1 <= LearnedRecipe("x").max_positions
    assert 0.25 < n_self / 2000 < 0.35
    assert (n_pairs > 0) == (pair_rate > 0), n_pairs


def test_answer_weight_reads_the_ioi_answer_token():
    """train.answer_positions, where answer_weight's loss is taken, points at the IOI answer in the padded batch."""
    import random

    from fixtures.learned.corpus import heldout_pairs, story
    from fixtures.learned.tokenizer import build_tokenizer
    from fixtures.learned.train import answer_positions

    tokenizer, rng = build_tokenizer(), random.Random(0)
    stories = [story(rng, 0.5, 2, heldout_pairs(), distractors=3, interpose=2, self_rate=0.3) for _ in range(64)]
    batch = tokenizer([tokenizer.bos_token + text for text, _ in stories], padding=True, return_tensors="pt",
                      add_special_tokens=False)
    rows, where = answer_positions(tokenizer, stories)
    assert 0 < len(rows) < 64 and [i for i, (_, at) in enumerate(stories) if at is not None] == rows.tolist()
    for row, pos in zip(rows.tolist(), where.tolist()):
        text, at = stories[row]
        assert tokenizer.decode(batch.input_ids[row, pos]) == " " + text[at:].strip(" ."), text
        assert tokenizer.decode(batch.input_ids[row, pos - 1]) == " to", text


def test_recipe_of_tells_a_learned_checkpoint_from_any_other(tmp_path):
    from fixtures.learned import recipe_of

    assert recipe_of(checkpoint_dir("neo-2l-s0")) == "neo-2l-s0"
    assert recipe_of(tmp_path) is None  # no training.json
    (tmp_path / "training.json").write_text('{"key": "0000000000000000"}')
    assert recipe_of(tmp_path) is None  # a key no current recipe has
    (tmp_path / "training.json").write_text("not json")
    assert recipe_of(tmp_path) is None


def test_the_report_shows_brute_force_beside_the_card_on_a_learned_model():
    """claims/thesis/circuit_card.py: on a learned checkpoint the card's rows come with the brute-force roles."""
    from claims.thesis.circuit_card import measure_circuit_card

    name = "neo-2l-s0"
    card = measure_circuit_card(model_of(name), RECIPES[name]).details["card"]
    assert card["brute force: S-suppression (ablation drop)"].startswith("H0.4 (drop +")
    assert card["S-suppression (ablation drop / LD, direct / LD, END->S1+S2)"].startswith("H0.4 (+")
    assert not any(k.startswith("brute force") for k in measure_circuit_card(model_of(name)).details["card"])


def test_sae_exploration_runs_the_e3_rules_on_a_learned_model(tmp_path):
    """fixtures.learned.features (exploration, no threshold): one SAE block of neo-2l-s0, each rule a row. Its
    measuring is checked only for consistency: removing the top-attribution feature (positive first-order effect on
    the logit difference) lowers the logit difference (measured 6.74 -> 4.89 at block 1)."""
    from fixtures.learned.features import RULES, explore

    table = explore(model_of("neo-2l-s0"), RECIPES["neo-2l-s0"], cache_dir=tmp_path, blocks=[1])
    assert list(table["rule"]) == list(RULES) and (table["block"] == 1).all()
    assert table["explained_variance"].between(0, 1).all() and table[["p_io", "p_io_ablated"]].notna().all().all()
    top = table[table["rule"] == "top-attribution"].iloc[0]
    assert top["score"] > 0 and top["logit_diff_ablated"] < top["logit_diff"], top.to_dict()
    assert {"H0.4 END->S after/before", "H1.5 END->S after/before"} <= set(table.columns)
