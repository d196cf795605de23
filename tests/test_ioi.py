"""mechinterp/ioi.py: protocol prompts, positions, the generator, corruptions and bad-input errors."""

from __future__ import annotations

import pytest
import torch

from fixtures.tokenizer import gpt2_tokenizer
from mechinterp.ioi import (
    NAMES,
    PROTOCOL_TEMPLATES,
    IOIDataError,
    IOIPrompt,
    corrupt_s2_to_io,
    corrupt_three_names,
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


def test_generator_rejects_negative_n(tok):
    with pytest.raises(IOIDataError, match="n must be >= 0"):
        generate_dataset(tok, -1)


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
