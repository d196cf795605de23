"""The circuit card names the planted heads of each twin, by role, and follows a moved name mover."""

from __future__ import annotations

import math

import pytest
import torch

from claims.framework import tokenizer_for
from fixtures.planted import build
from mechinterp.circuit_card import circuit_card
from mechinterp.metrics import logit_diff


@pytest.fixture(scope="module")
def card_of():
    cards = {}

    def get(name: str):
        if name not in cards:
            model = build(name)
            cards[name] = (circuit_card(model, tokenizer_for(model)), model.planted)
        return cards[name]

    return get


def names(role_heads) -> list[str]:
    return [h.name for h in role_heads]


def planted(info, role: str) -> set[str]:
    return {f"H{layer}.{head}" for layer, head in info.heads_with_role(role)}


@pytest.mark.parametrize("twin", ["tinystories-8m", "gpt2-small"])
def test_card_names_the_planted_heads(card_of, twin):
    card, info = card_of(twin)
    n_movers = len(planted(info, "name-mover"))
    assert set(names(card.name_movers)[:n_movers]) == planted(info, "name-mover")
    assert set(names(card.negative_name_movers)) == planted(info, "negative-name-mover")
    assert names(card.s_inhibition)[0] in planted(info, "s-inhibition")
    assert set(names(card.s_inhibition)) <= planted(info, "s-inhibition") | planted(info, "duplicate-token")
    assert set(names(card.s_suppression)) == planted(info, "s-suppressor")  # none planted: S-inhibition is not it
    for role, kind in (("duplicate-token", "duplicate_token"), ("previous-token", "previous_token"), ("induction", "induction")):
        assert set(names(getattr(card, kind))) == planted(info, role), role  # none listed where none was planted
    assert card.logit_diff > 0 and 0 < card.p_io < 1


def test_card_names_the_ts_twin_as_the_thesis_does(card_of):
    card, _ = card_of("tinystories-8m")
    assert names(card.name_movers) == ["H7.7"] and names(card.s_inhibition)[0] == "H5.7"
    assert names(card.duplicate_token) == ["H4.0"] and card.induction == [] and card.negative_name_movers == []


def test_a_moved_name_mover_moves_the_card(card_of):
    card, info = card_of("tinystories-8m/name-mover-moved")
    assert planted(info, "name-mover") == {"H7.2"}
    assert names(card.name_movers) == ["H7.2"]


def test_card_table_is_one_short_line_per_role(card_of):
    card, _ = card_of("tinystories-8m")
    table = card.table()
    assert table["name movers (ablation drop / LD, direct / LD, END->IO)"].startswith("H7.7 (+")
    assert table["roles read on"] == "the thesis's 8 protocol prompts"
    assert table["induction (score)"] == "none" and all("\n" not in v for v in table.values())
    assert set(card.values()) >= {"logit_diff", "p_io", "handover_layer"}


def test_a_name_mover_must_attend_io_noticeably():
    """END->IO above S is not enough: H7.7 (END->IO ~0.77 on the protocol prompts) is no mover under a floor of 0.9."""
    from mechinterp.circuit_card import CircuitCardConfig
    from mechinterp.ioi_roles import RoleFloors

    model = build("tinystories-8m")
    card = circuit_card(model, tokenizer_for(model), CircuitCardConfig(floors=RoleFloors(min_attention=0.9)))
    assert card.name_movers == [] and card.negative_name_movers == []


def test_s_inhibition_acts_through_the_name_movers_attention():
    """Mean-ablating H5.7 at END alone lowers H7.7's END margin (IO - S1 - S2) by more than the floor; a head of no
    role moves it by nothing. Under a floor of 10 (more than a margin can move) the card names no S-inhibition."""
    from mechinterp.circuit_card import CircuitCardConfig, head_measures
    from mechinterp.ioi import make_batch, protocol_prompts
    from mechinterp.ioi_roles import RoleFloors, assign_roles

    model = build("tinystories-8m")
    measures = head_measures(model, [make_batch(tokenizer_for(model), protocol_prompts())])
    roles = assign_roles(measures)
    assert roles.name_movers == [(7, 7)]
    assert roles.nm_margin_drop[5, 7] > RoleFloors().margin and abs(roles.nm_margin_drop[2, 3]) < 1e-6, roles.nm_margin_drop
    card = circuit_card(model, tokenizer_for(model), CircuitCardConfig(floors=RoleFloors(margin=10.0)))
    assert names(card.name_movers) == ["H7.7"] and card.s_inhibition == []


def test_s_suppression_is_a_head_that_reads_s_and_writes_against_it(card_of):
    """The s-suppressor mutant's H7.4 attends S from END and writes minus S's unembedding: the card names it
    S-suppression, not a name mover nor S-inhibition (which stays H5.7, acting through H7.7's query)."""
    card, info = card_of("tinystories-8m/s-suppressor")
    assert planted(info, "s-suppressor") == {"H7.4"}
    assert names(card.s_suppression) == ["H7.4"] and card.s_suppression[0].attention > 0.9
    assert "H7.4" not in names(card.name_movers) + names(card.s_inhibition)
    assert names(card.s_inhibition)[0] == "H5.7"


def test_s_suppression_must_single_s_out_and_roles_need_ioi():
    """H7.4 attends S ~1.0 and IO ~0: under a selectivity of 1e6 it is no S-suppressor; and under a logit-difference
    floor above the model's, the card names no role that reads the logit difference (the E1 scores stay)."""
    from mechinterp.circuit_card import CircuitCardConfig
    from mechinterp.ioi_roles import RoleFloors

    model = build("tinystories-8m/s-suppressor")
    strict = circuit_card(model, tokenizer_for(model), CircuitCardConfig(floors=RoleFloors(s_selectivity=1e6)))
    assert strict.s_suppression == [] and names(strict.name_movers) == ["H7.7"]
    floor = circuit_card(model, tokenizer_for(model), CircuitCardConfig(floors=RoleFloors(min_logit_diff=1e3)))
    assert floor.name_movers == floor.negative_name_movers == floor.s_inhibition == floor.s_suppression == []
    assert names(floor.duplicate_token) == ["H4.0"] and any("no IOI behaviour" in note for note in floor.notes)
    # no number that reads as a finding: no handover layer, and the table's role rows say why they are empty
    assert math.isnan(floor.handover_layer) and not floor.does_ioi
    assert floor.table()["S2 -> END handover layer"] == floor.table()["name movers (ablation drop / LD, direct / LD, END->IO)"] \
        == "- (no IOI behaviour)"


def _measures(ld: float, drop, direct, attn_io, attn_s):
    """A HeadMeasures of one layer of heads, the logit difference `ld` and each head's values (fractions of ld)."""
    from mechinterp.ioi_roles import HeadMeasures

    row = lambda values: torch.tensor([values], dtype=torch.float64)  # noqa: E731
    n = len(drop)
    return HeadMeasures(logit_diff=ld, drop=row(drop) * ld, end_drop=row(drop) * ld, direct=row(direct) * ld,
                        attn_io=row(attn_io), attn_s=row(attn_s),
                        end_attention_ablated=torch.zeros(1, n, 2, 1, n, dtype=torch.float64))


def test_a_head_whose_removal_raises_the_logit_difference_is_never_a_name_mover():
    """The rule reads total effect beside direct effect and attention: H0.0 writes IO strongly (direct +0.5) and attends
    IO, but removing it raises the logit difference (drop -0.3): no name mover, and not a negative one either (its
    direct effect is positive). H0.1, direct -0.3 and drop -0.2, is a negative mover; H0.2 a mover; H0.3 moves IO
    directly but removing it changes nothing (drop 0.01): no role."""
    from mechinterp.ioi_roles import assign_roles

    roles = assign_roles(_measures(4.0, drop=[-0.3, -0.2, 0.4, 0.01], direct=[0.5, -0.3, 0.3, 0.3],
                                   attn_io=[0.8, 0.8, 0.8, 0.8], attn_s=[0.1, 0.1, 0.1, 0.1]))
    assert roles.name_movers == [(0, 2)] and roles.negative_name_movers == [(0, 1)]
    below = assign_roles(_measures(0.5, drop=[0.4], direct=[0.3], attn_io=[0.8], attn_s=[0.1]))  # no IOI behaviour
    assert not below.does_ioi and below.name_movers == []


@pytest.mark.parametrize("twin", ["tinystories-8m", "gpt2-small"])
def test_every_named_mover_lowers_the_logit_difference_when_removed_by_hand(card_of, twin):
    """The card's movers, each mean-ablated alone with a plain transformer_lens hook (not the card's tiled pass): the
    logit difference falls for every name mover and rises for every negative one."""
    from mechinterp.ioi import make_batch, protocol_prompts

    card, _ = card_of(twin)
    model = build(twin)
    batch = make_batch(tokenizer_for(model), protocol_prompts())
    with torch.inference_mode():
        logits, cache = model.run_with_cache(batch.tokens)
        clean = logit_diff(logits, batch).item()
        for mover, sign in [(h, 1) for h in card.name_movers] + [(h, -1) for h in card.negative_name_movers]:
            layer, head = mover.head
            mean = cache[f"blocks.{layer}.attn.hook_z"][:, :, head].mean(0)

            def ablate(z, hook, head=head, mean=mean):
                z[:, :, head] = mean
                return z

            ablated = logit_diff(model.run_with_hooks(batch.tokens, fwd_hooks=[(f"blocks.{layer}.attn.hook_z", ablate)]), batch)
            assert sign * (clean - ablated.item()) > 0, (twin, mover.name, clean, ablated.item())
    assert card.name_movers


def test_templates_file_is_checked_line_by_line(tmp_path):
    """--ioi-templates' reader: blank lines skipped; a bad template is an error naming the file and line, with the
    built-in templates' check (mechinterp.ioi); an empty file is an error too."""
    from mechinterp.ioi import IOIDataError, read_templates

    good = tmp_path / "good.txt"
    good.write_text("When {A} and {B} sat in the yard, {C} threw a cup to\n\nThen {A} and {B} ran. {C} lent it to\n")
    assert read_templates(good) == ["When {A} and {B} sat in the yard, {C} threw a cup to", "Then {A} and {B} ran. {C} lent it to"]
    bad = tmp_path / "bad.txt"
    bad.write_text("When {A} and {B} sat in the yard, {C} threw a cup to\n{B} and {A} ran. {C} lent it to\n")
    with pytest.raises(IOIDataError, match=r"bad.txt:2: .*must each appear once, in that order"):
        read_templates(bad)
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(IOIDataError, match="no templates"):
        read_templates(tmp_path / "empty.txt")
    with pytest.raises(IOIDataError, match="cannot read"):
        read_templates(tmp_path / "missing.txt")


def test_a_bad_templates_file_stops_the_run_before_any_model_loads(tmp_path):
    """claims.options reads the file when the run starts: a usage error of one line."""
    from claims.options import _ioi_templates

    (tmp_path / "t.txt").write_text("When {A} went to the park, {C} gave a ball to\n")
    with pytest.raises(pytest.UsageError, match=r"--ioi-templates: .*t.txt:1: .*lacks the slot"):
        _ioi_templates(str(tmp_path / "t.txt"))
    (tmp_path / "t.txt").write_text("When {A} and {B} went to the park, {C} gave a ball to\n")
    assert _ioi_templates(str(tmp_path / "t.txt")) == {
        "ioi_templates": ["When {A} and {B} went to the park, {C} gave a ball to"], "ioi_templates_file": str(tmp_path / "t.txt")}


def test_the_card_reads_the_templates_it_is_given_and_says_so():
    """Given templates, the card's roles rest on them and its table says which prompts: the twin's H7.7 moves names
    on another wording as well; the protocol prompts' logit difference is still shown."""
    model = build("tinystories-8m")
    templates = ["Then {A} and {B} had fun at the {PLACE}. {C} handed a {OBJECT} to"]
    card = circuit_card(model, tokenizer_for(model), templates=templates, templates_source="mine.txt")
    table = card.table()
    assert table["roles read on"] == "48 prompts over 1 template of your own (mine.txt)"
    assert "logit diff on the protocol prompts" in table and names(card.name_movers) == ["H7.7"], table
