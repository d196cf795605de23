"""mechinterp/ioi.py: protocol prompts, positions, the generator, corruptions and bad-input errors."""

from __future__ import annotations

import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fixtures.tokenizer import gpt2_tokenizer
from mechinterp.ioi import (
    NAMES,
    PROTOCOL_TEMPLATES,
    TEMPLATES,
    IOIDataError,
    IOIPrompt,
    batches_by_length,
    corrupt_s2_to_io,
    corrupt_three_names,
    fill_template,
    generate_dataset,
    make_batch,
    patching_pair,
    protocol_prompts,
    single_token_id,
)


@pytest.fixture(scope="module")
def tok():
    return gpt2_tokenizer()


@pytest.fixture(scope="module")
def protocol_batch(tok):
    return make_batch(tok, protocol_prompts())


def token_at(tok, batch, i, name):
    return tok.decode([batch.tokens[i, batch.pos(name)[i]].item()])


# --- protocol prompts ---


def test_protocol_set_is_four_templates_in_both_name_orders():
    prompts = protocol_prompts()
    assert len(prompts) == 8
    for (template, names), pair in zip(PROTOCOL_TEMPLATES, zip(prompts[0::2], prompts[1::2])):
        assert {p.template for p in pair} == {template}
        assert {(p.io, p.s) for p in pair} == {(names[0], names[1]), (names[1], names[0])}
    assert prompts[0].text == "When John and Mary went to the shops, John gave the bag to"
    assert (prompts[0].io, prompts[0].s) == (" Mary", " John")


def test_first_protocol_prompt_positions_by_hand(protocol_batch):
    # <bos> When John and Mary went to the shops , John gave the bag to
    #   0    1    2   3    4    5   6   7    8   9  10   11   12  13  14
    expected = {"IO": 4, "S1": 2, "S2": 10, "END": 14, "and": 3, "verb": 11}
    assert {name: protocol_batch.pos(name)[0].item() for name in expected} == expected


def test_protocol_positions_hold_the_right_tokens(tok, protocol_batch):
    batch = protocol_batch
    assert batch.tokens.shape == (8, 15) and (batch.tokens[:, 0] == tok.bos_token_id).all()
    for i, prompt in enumerate(batch.prompts):
        assert token_at(tok, batch, i, "IO") == prompt.io
        assert token_at(tok, batch, i, "S1") == prompt.s
        assert token_at(tok, batch, i, "S2") == prompt.s
        assert token_at(tok, batch, i, "and") == " and"
        assert token_at(tok, batch, i, "verb") == " gave"
        assert token_at(tok, batch, i, "END") == " to"
        assert batch.pos("S1")[i] < batch.pos("S2")[i] < batch.pos("END")[i]
    assert batch.io_token.tolist() == [single_token_id(tok, p.io) for p in batch.prompts]
    assert batch.s_token.tolist() == [single_token_id(tok, p.s) for p in batch.prompts]


def test_unknown_position_name_is_a_clear_error(protocol_batch):
    with pytest.raises(KeyError, match="unknown position 'S3'; known: IO, S1, S2, END"):
        protocol_batch.pos("S3")


def test_patching_pair_corrupted_prompt_is_the_clean_batch_with_s2_set_to_io(tok):
    clean, corrupt = patching_pair()
    assert clean.text.endswith("shops, John gave the bag to") and corrupt.text.endswith("shops, Mary gave the bag to")
    assert (clean.io, clean.s) == (corrupt.io, corrupt.s) == (" Mary", " John")
    corrupted = corrupt_s2_to_io(make_batch(tok, [clean]))
    assert corrupted.tokens[0].tolist() == [tok.bos_token_id] + tok.encode(corrupt.text)


# --- generator ---


def test_generator_is_deterministic_per_seed(tok):
    assert generate_dataset(tok, 40, seed=3) == generate_dataset(tok, 40, seed=3)
    assert generate_dataset(tok, 40, seed=3) != generate_dataset(tok, 40, seed=4)


def test_generator_uses_both_name_orders_and_stacks_into_one_batch(tok):
    prompts = generate_dataset(tok, 60, seed=0)
    batch = make_batch(tok, prompts)  # all templates have equal token length
    io_first = (batch.pos("IO") < batch.pos("S1")).tolist()
    assert io_first.count(True) == io_first.count(False) == 30
    assert (batch.io_token != batch.s_token).all()


def test_generator_uses_single_token_names_only(tok):
    names = ["Mary", "John", "Zebediah", "Tom"]  # " Zebediah" is 4 GPT-2 tokens
    prompts = generate_dataset(tok, 30, seed=1, names=names)
    used = {p.io for p in prompts} | {p.s for p in prompts}
    assert used <= {" Mary", " John", " Tom"}
    assert all(len(tok.encode(" " + n)) == 1 for n in NAMES)


@pytest.mark.parametrize("n", [-1, 0])
def test_generator_rejects_no_prompts(tok, n):
    with pytest.raises(IOIDataError, match=f"n must be >= 1, got {n}"):
        generate_dataset(tok, n)


@pytest.mark.parametrize("n", [2.5, "3", None])
def test_generator_rejects_a_count_that_is_not_an_int(tok, n):
    with pytest.raises(IOIDataError, match="n must be a whole number of prompts"):
        generate_dataset(tok, n)


# --- corruptions ---


def test_corrupt_s2_to_io_replaces_only_s2(protocol_batch):
    corrupted = corrupt_s2_to_io(protocol_batch)
    rows = torch.arange(len(protocol_batch))
    assert (corrupted.tokens[rows, protocol_batch.pos("S2")] == protocol_batch.io_token).all()
    changed = corrupted.tokens != protocol_batch.tokens
    assert changed.sum() == len(protocol_batch) and changed[rows, protocol_batch.pos("S2")].all()
    assert torch.equal(corrupted.io_token, protocol_batch.io_token)  # answers stay the clean ones


def test_corrupt_three_names_uses_a_third_name_deterministically(tok, protocol_batch):
    corrupted = corrupt_three_names(protocol_batch, tok, seed=0)
    s2 = corrupted.tokens[torch.arange(len(protocol_batch)), protocol_batch.pos("S2")]
    assert ((s2 != protocol_batch.io_token) & (s2 != protocol_batch.s_token)).all()
    assert torch.equal(corrupt_three_names(protocol_batch, tok, seed=0).tokens, corrupted.tokens)


# --- bad input: each error says what is wrong ---


def test_multi_token_name_error_names_the_pieces(tok):
    with pytest.raises(IOIDataError, match=r"' Zebediah' is 4 tokens \['ĠZ', 'eb', 'edia', 'h'\], not one"):
        single_token_id(tok, " Zebediah")
    prompt = IOIPrompt("When Zebediah and Mary went to the park, Mary gave a ball to", io=" Zebediah", s=" Mary")
    with pytest.raises(IOIDataError, match=r"'ĠZ', 'eb', 'edia', 'h'"):
        make_batch(tok, [prompt])


def test_template_without_slots_is_rejected(tok):
    with pytest.raises(IOIDataError, match=r"lacks the slot\(s\) \['\{A\}', '\{B\}', '\{C\}'\]"):
        generate_dataset(tok, 2, templates=["Once upon a time there was a cat."])
    with pytest.raises(IOIDataError, match=r"lacks the slot\(s\) \['\{C\}'\]"):
        generate_dataset(tok, 2, templates=["When {A} and {B} went out, someone gave a cake to"])


def test_unlocatable_names_are_rejected(tok):
    text = "When John and Mary went to the shops, John gave the bag to"
    with pytest.raises(IOIDataError, match=r"cannot locate IO ' Tom' in prompt 'When John and Mary"):
        make_batch(tok, [IOIPrompt(text, io=" Tom", s=" John")])
    with pytest.raises(IOIDataError, match=r"cannot locate S1 and S2 \(subject ' Mary' must occur twice\)"):
        make_batch(tok, [IOIPrompt(text, io=" John", s=" Mary")])
    with pytest.raises(IOIDataError, match=r"IO and S are the same name ' John'"):
        make_batch(tok, [IOIPrompt(text, io=" John", s=" John")])


def test_unequal_lengths_in_one_batch_are_rejected(tok):
    short = IOIPrompt("When John and Mary went out, John gave the bag to", io=" Mary", s=" John")
    with pytest.raises(IOIDataError, match=r"unequal token lengths \[13, 15\]"):
        make_batch(tok, [protocol_prompts()[0], short])


def test_empty_batch_is_rejected(tok):
    with pytest.raises(IOIDataError, match="no prompts"):
        make_batch(tok, [])


def test_tokenizer_without_bos_needs_prepend_bos_false(tok):
    class NoBos:
        bos_token_id = None

    with pytest.raises(IOIDataError, match="no BOS token; pass prepend_bos=False"):
        make_batch(NoBos(), protocol_prompts())
    without_bos = make_batch(tok, protocol_prompts(), prepend_bos=False)
    assert torch.equal(without_bos.tokens, make_batch(tok, protocol_prompts()).tokens[:, 1:])


# --- bad input: templates ---


def test_empty_template_list_is_rejected(tok):
    with pytest.raises(IOIDataError, match="templates is empty; pass at least one template, or None"):
        generate_dataset(tok, 2, templates=[])


@pytest.mark.parametrize(
    "template, slot",
    [
        ("When {A} and {B} met {X}, {C} gave a ball to", "{X}"),
        ("When {A} and {B} went out, {} gave a ball to", "{}"),
        ("When {A} and {B} went out, {C!r} gave a ball to", "{C!r}"),
        ("When {A} and {B} went out, {C:>9} gave a ball to", "{C:>9}"),
        ("When {A.upper} and {B} went out, {C} gave a ball to", "{A.upper}"),
    ],
)
def test_unknown_template_slot_is_rejected(tok, template, slot):
    with pytest.raises(IOIDataError, match=re.escape(f"unknown slot {slot}; slots are {{A}}, {{B}}, {{C}}")):
        generate_dataset(tok, 2, templates=[template])


@pytest.mark.parametrize(
    "template, why",
    [
        ("When {A and {B} went out, {C} gave a ball to", "unexpected '{' in field name"),
        ("When {A} and {B}} went out, {C} gave it to", "Single '}' encountered"),
        ("When {A} and {B} went out, {C", "expected '}' before end of string"),
    ],
)
def test_unbalanced_braces_are_rejected(tok, template, why):
    with pytest.raises(IOIDataError, match=re.escape(f"is malformed ({why}") + r".*; write a literal brace as \{\{ or \}\}"):
        generate_dataset(tok, 2, templates=[template])


@pytest.mark.parametrize(
    "template, order",
    [
        ("{C} saw {A} and {B} at the park, then gave a ball to", "{C} {A} {B}"),
        ("When {B} and {A} went out, {C} gave a ball to", "{B} {A} {C}"),
        ("When {A} and {B} went out, {C} gave {A} a ball and", "{A} {B} {C} {A}"),
    ],
)
def test_name_slots_out_of_order_or_repeated_are_rejected(tok, template, order):
    # S1/S2 are the first/second S token: any other order would shift them without an error
    with pytest.raises(IOIDataError, match=f"has the names as {re.escape(order)}; .* must each appear once, in that order"):
        generate_dataset(tok, 2, templates=[template])


def test_escaped_braces_are_literal_text(tok):
    (prompt,) = generate_dataset(tok, 1, templates=["When {A} and {B} went to the {PLACE} {{at noon}}, {C} gave a {OBJECT} to"])
    assert "{at noon}," in prompt.text


@pytest.mark.parametrize("bad", ["When {A} and {B} went out, {C} gave a ball to", 5])
def test_templates_must_be_a_list(tok, bad):
    with pytest.raises(IOIDataError, match="templates must be a list"):
        generate_dataset(tok, 2, templates=bad)


def test_template_that_is_not_a_str_is_rejected(tok):
    with pytest.raises(IOIDataError, match="template None is a NoneType, not a str"):
        generate_dataset(tok, 2, templates=[TEMPLATES[0], None])


def test_templates_from_a_generator_are_read_once(tok):
    assert generate_dataset(tok, 20, templates=(t for t in TEMPLATES)) == generate_dataset(tok, 20)


# --- bad input: names ---


def test_repeated_names_are_one_name(tok):
    with pytest.raises(IOIDataError, match=r"need at least 2 distinct single-token names, got \['Mary'\]"):
        generate_dataset(tok, 4, names=["Mary", "Mary"])
    prompts = generate_dataset(tok, 20, names=["Mary", "John", "Mary", "Mary"])
    assert prompts == generate_dataset(tok, 20, names=["Mary", "John"])
    assert all(p.io != p.s for p in prompts)


def test_too_few_single_token_names_says_which_were_dropped(tok):
    with pytest.raises(IOIDataError, match=r"got \['Mary'\] \(\['Zebediah'\] are several tokens each\)"):
        generate_dataset(tok, 4, names=["Zebediah", "Mary"])


@pytest.mark.parametrize("name, problem", [("", "is not a name"), ("   ", "is not a name"), (None, "is not a name"),
                                           (" Mary", "contains whitespace"), ("Mary Ann", "contains whitespace")])
def test_empty_blank_or_spaced_names_are_rejected(tok, name, problem):
    with pytest.raises(IOIDataError, match=f"name {re.escape(repr(name))} {problem}"):
        generate_dataset(tok, 4, names=["John", "Tom", name])
    with pytest.raises(IOIDataError, match=problem):
        fill_template(TEMPLATES[0], name, "John", io_first=True)
    with pytest.raises(IOIDataError, match=problem):
        corrupt_three_names(make_batch(tok, protocol_prompts()), tok, names=["Alice", name])


def test_names_must_be_a_list(tok):
    with pytest.raises(IOIDataError, match="names must be a list, got the str 'Mary'"):
        generate_dataset(tok, 4, names="Mary")


def test_fill_template_rejects_io_equal_to_s():
    with pytest.raises(IOIDataError, match="IO and S are the same name 'Mary'"):
        fill_template(TEMPLATES[0], "Mary", "Mary", io_first=True)


# --- bad input: make_batch ---


def test_make_batch_reads_a_generator_once(tok):
    from_generator = make_batch(tok, (p for p in protocol_prompts()))
    assert from_generator.prompts == protocol_prompts()
    assert torch.equal(from_generator.tokens, make_batch(tok, protocol_prompts()).tokens)


def test_make_batch_wants_a_list_of_prompts(tok):
    prompt = protocol_prompts()[0]
    with pytest.raises(IOIDataError, match=r"wrap a single one as \[prompt\]"):
        make_batch(tok, prompt)
    with pytest.raises(IOIDataError, match="prompt 1 is the str 'When John.*', not an IOIPrompt"):
        make_batch(tok, [prompt, prompt.text])


def test_a_prompt_field_that_is_not_a_str_is_named(tok):
    # io=None reached the tokenizer, whose ValueError named neither the prompt nor the field
    prompt = protocol_prompts()[0]
    for batcher in (make_batch, batches_by_length):
        with pytest.raises(IOIDataError, match=r"prompt 1's io is the NoneType None, not a str \(the indirect object"):
            batcher(tok, [prompt, IOIPrompt(prompt.text, io=None, s=prompt.s)])
        with pytest.raises(IOIDataError, match="prompt 0's text is the bytes"):
            batcher(tok, [IOIPrompt(prompt.text.encode(), io=prompt.io, s=prompt.s)])


def test_batches_by_length_wants_a_list_of_prompts(tok):
    # a list of plain str raised AttributeError ('str' object has no attribute 'text')
    prompt = protocol_prompts()[0]
    with pytest.raises(IOIDataError, match="prompt 0 is the str 'When John.*', not an IOIPrompt"):
        batches_by_length(tok, [prompt.text])
    with pytest.raises(IOIDataError, match="prompts must be a list, got the str"):
        batches_by_length(tok, prompt.text)
    with pytest.raises(IOIDataError, match=r"batches_by_length takes a list of prompts; wrap a single one as \[prompt\]"):
        batches_by_length(tok, prompt)


# --- properties: any input is a clear IOIDataError or a well-formed batch ---

TEMPLATE_PIECES = ["When", " {A}", " and", " {B}", " went to the", " {PLACE}", ",", " {C}", " gave a", " {OBJECT}", " to"]
STRAY_PIECES = ["{X}", "{}", "{", "}", "{{", "}}", " {A}", " {C}", " and"]


@st.composite
def edited_templates(draw):
    """A good template after up to 3 random edits: drop a piece, swap two neighbours, insert a stray one."""
    pieces = list(TEMPLATE_PIECES)
    for _ in range(draw(st.integers(0, 3))):
        i = draw(st.integers(0, len(pieces) - 1))
        edit = draw(st.sampled_from(["drop", "swap", "insert"]))
        if edit == "drop":
            del pieces[i]
        elif edit == "swap" and i + 1 < len(pieces):
            pieces[i], pieces[i + 1] = pieces[i + 1], pieces[i]
        else:
            pieces.insert(i, draw(st.sampled_from(STRAY_PIECES)))
    return "".join(pieces)


@settings(max_examples=150, deadline=None)
@given(template=edited_templates())
def test_any_template_gives_an_ioi_error_or_correct_positions(tok, template):
    try:
        batch = make_batch(tok, generate_dataset(tok, 4, seed=0, templates=[template]))
    except IOIDataError:
        return
    for i, prompt in enumerate(batch.prompts):
        assert token_at(tok, batch, i, "IO") == prompt.io and token_at(tok, batch, i, "S2") == prompt.s
        assert token_at(tok, batch, i, "S1") == prompt.s and token_at(tok, batch, i, "and") == " and"
    assert (batch.pos("IO") < batch.pos("S2")).all() and (batch.pos("S1") < batch.pos("S2")).all()


NAME_POOL = ["Mary", "John", "Tom", "Zebediah", "", " ", " Amy"]


@settings(max_examples=150, deadline=None)
@given(names=st.lists(st.sampled_from(NAME_POOL), max_size=6))
def test_generator_rejects_exactly_the_unusable_name_lists(tok, names):
    malformed = {"", " ", " Amy"} & set(names)
    distinct_single_token = set(names) & {"Mary", "John", "Tom"}
    if malformed or len(distinct_single_token) < 2:
        with pytest.raises(IOIDataError):
            generate_dataset(tok, 6, names=names)
        return
    prompts = generate_dataset(tok, 6, names=names)
    assert all(p.io != p.s for p in prompts)
    assert {p.io.strip() for p in prompts} | {p.s.strip() for p in prompts} <= distinct_single_token
