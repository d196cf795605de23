"""The synthetic story corpus: seeded, in register, with the "to" contexts the planted features need."""

from __future__ import annotations

import re

import pytest

from fixtures.corpus import read_corpus, story_corpus, write_corpus
from fixtures.planted.vocab import BOUNDARY_TOKENS, PLANTED_GIVING_VERBS, PLANTED_NAMES
from fixtures.tokenizer import gpt2_tokenizer

N = 400  # stories: enough for rates to settle within a few percent


@pytest.fixture(scope="module")
def stories():
    return story_corpus(N, seed=0)


def test_deterministic_and_seeded(stories):
    assert story_corpus(N, seed=0) == stories
    assert story_corpus(50, seed=1) != stories[:50]
    assert story_corpus(0) == []
    with pytest.raises(ValueError):
        story_corpus(-1)


def test_write_read_round_trip(tmp_path, stories):
    path = write_corpus(tmp_path / "sub" / "stories.txt", stories[:20])
    assert read_corpus(path) == stories[:20]
    with pytest.raises(FileNotFoundError, match="write_corpus"):
        read_corpus(tmp_path / "missing.txt")
    with pytest.raises(ValueError, match="newline"):
        write_corpus(tmp_path / "bad.txt", ["one\ntwo"])


def _sentences(text: str) -> list[str]:
    return [s for s in re.split(r'(?<=[.!?])"?\s+', text) if s]


def test_rates_of_to_contexts(stories):
    """Giving "to", infinitive "to" and "to" of direction all occur often, at the documented rates
    (1.4 / 1.4 / 1.3 per story in expectation, giving without "to" 0.3; the bounds leave +-0.3 or
    more for sampling over 400 stories, whose standard error is under 0.1)."""
    giving, infinitive, direction, no_to_giving = 0, 0, 0, 0
    verbs = "|".join(PLANTED_GIVING_VERBS)
    for text in stories:
        for s in _sentences(text):
            if " to " not in s and not s.endswith(" to"):
                no_to_giving += bool(re.search(rf"\b({verbs})\b", s))
                continue
            if re.search(rf"\b({verbs})\b [^.!?]* ?to \w+", s):
                giving += 1
            if re.search(r"\bto (play|run|jump|swim|dance|sing|draw|read|eat|help|find|build|see)\b", s):
                infinitive += 1
            if re.search(r"\b(went|ran|walked) to the\b", s):
                direction += 1
    per_story = {k: v / N for k, v in dict(giving=giving, infinitive=infinitive, direction=direction,
                                           no_to_giving=no_to_giving).items()}
    assert 1.0 <= per_story["giving"] <= 2.0, per_story
    assert 1.0 <= per_story["infinitive"] <= 2.0, per_story
    assert 0.8 <= per_story["direction"] <= 1.8, per_story
    assert per_story["no_to_giving"] >= 0.2, per_story


def test_vocabulary_is_the_planted_models(stories):
    """Names are the planted names (single GPT-2 tokens); a giving verb is within 6 tokens before its
    "to" with no sentence boundary between (what the planted giving-context head looks for)."""
    tok = gpt2_tokenizer()
    names = set(PLANTED_NAMES)
    capitalized = {w for text in stories for w in re.findall(r"\b[A-Z][a-z]+\b", text)}
    non_names = {"Once", "One", "Then", "When", "They", "She", "He", "The", "Can", "Thank"}
    assert capitalized - names - non_names == set()
    verb_ids = {tok.encode(" " + v)[0] for v in PLANTED_GIVING_VERBS}
    to_id = tok.encode(" to")[0]
    boundary_ids = {tok.encode(b)[0] for b in BOUNDARY_TOKENS}
    for text in stories[:100]:
        ids = tok.encode(text)
        for i, t in enumerate(ids):
            if t != to_id:
                continue
            back = ids[max(0, i - 6):i]
            last_anchor = max((j for j, u in enumerate(back) if u in verb_ids | boundary_ids), default=None)
            if last_anchor is not None and back[last_anchor] in verb_ids:
                assert len(back) - last_anchor <= 5, tok.decode(back + [t])


def test_gave_is_the_common_giving_verb(stories):
    """"gave" carries most giving (as in TinyStories), so a trained SAE finds one verb feature that fires on
    it rather than one per verb token (designed share 0.85 x 0.9 + hugs ~ 0.8; bound 0.7 for sampling)."""
    verbs = re.findall(rf"\b({'|'.join(PLANTED_GIVING_VERBS)})\b", " ".join(stories))
    assert verbs.count("gave") / len(verbs) >= 0.7, {v: verbs.count(v) for v in set(verbs)}
    assert len(set(verbs)) >= 3  # the other giving verbs still occur


# The learned models' corpus (fixtures.learned.corpus): its cue-copy knob (recipe cue_rate).
def _learned_stories(cue_rate: float | None, distractors: int, n: int = 300):
    import random

    from fixtures.learned.corpus import heldout_pairs, story

    rng, heldout = random.Random(0), heldout_pairs()
    extra = {} if cue_rate is None else {"cue_rate": cue_rate}
    knobs = (2, 0.3, 0.5) if distractors else (0, 0.0, 0.0)  # interpose, self_rate, pair_rate
    return [story(rng, 1.0, 2, heldout, distractors, *knobs, **extra) for _ in range(n)]


@pytest.mark.parametrize("distractors", [0, 3])
def test_learned_cue_rate_zero_draws_the_stories_as_before(distractors):
    """cue_rate 0 (its default) draws nothing more: every story, and so every shipped recipe's corpus, is as before;
    its recipe key is as before too, and the vocabulary (built from all_words for every recipe) gained no word."""
    from fixtures.learned.corpus import all_words
    from fixtures.learned.recipe import DISTRACTOR_KNOBS, LearnedRecipe

    assert _learned_stories(0.0, distractors) == _learned_stories(None, distractors)
    assert _learned_stories(0.5, distractors) != _learned_stories(None, distractors)
    assert "cue_rate" in DISTRACTOR_KNOBS and "cue_rate" not in LearnedRecipe("x").to_dict()
    assert LearnedRecipe("x", cue_rate=0.5).to_dict()["cue_rate"] == 0.5
    assert len(all_words()) == 72  # the shipped checkpoints' vocabulary: 72 words, each with and without its space


def _cue_pattern(template: str, cue: str) -> str:
    """A regex of a CUE_BINDINGS / CUE_QUESTIONS template: the name ({A} or {C}) and the cue word captured."""
    pattern = re.escape(template)
    for slot, group in (("A", r"(?P<name>\w+)"), ("C", r"(?P<name>\w+)"), ("G", r"\w+"), ("FEELING", r"\w+")):
        pattern = pattern.replace(re.escape("{" + slot + "}"), group, 1).replace(re.escape("{" + slot + "}"), "(?P=name)")
    for slot in ("OBJECT", "PLACE"):
        is_cue = slot == cue
        word = r"(?:the |an |a )" if slot == "OBJECT" else ""
        pattern = pattern.replace(re.escape("{" + slot + "}"), word + (r"(?P<cue>\w+)" if is_cue else r"\w+"))
    return pattern


@pytest.mark.parametrize("distractors", [0, 3])
def test_learned_cue_sentences_answer_is_the_cue_bound_name(distractors):
    """A cue-copy group's answer (after its question's ' to') is the name that a binding clause ties to the cue its
    question names; the subject is no bound name; no other sentence names the cue (so no other name is bound to it);
    no IOI sentence reads as a question; every word is in the vocabulary (built from all_words for every recipe, so
    adding none keeps the shipped tokenizer); the story fits max_positions; cue groups are about half the answered
    sentences at cue_rate 0.5."""
    from fixtures.learned.corpus import CUE_BINDINGS, CUE_QUESTIONS, NAMES, all_words
    from fixtures.learned.recipe import LearnedRecipe
    from fixtures.learned.tokenizer import build_tokenizer

    tokenizer, words = build_tokenizer(), set(all_words())
    kinds = {"object": "OBJECT", "place": "PLACE"}
    questions = [(k, re.compile(_cue_pattern(q, kinds[k]) + "$")) for k, qs in CUE_QUESTIONS.items() for q in qs]
    bindings = {k: [re.compile(_cue_pattern(b, kinds[k])) for b in bs] for k, bs in CUE_BINDINGS.items()}
    n_cue = 0
    for text, at in _learned_stories(0.5, distractors, 1000):
        answer, before = text[at:].split(".")[0].strip(), text[:at]
        assert text[at:].startswith(" ") and answer in NAMES and before.endswith(" to"), text
        assert set(text.replace(",", " , ").replace(".", " . ").split()) <= words, text
        assert len(tokenizer.encode(text)) + 1 <= LearnedRecipe("x").max_positions
        sentences = re.split(r"(?<=\.) ", before)
        matched = [(k, m) for k, q in questions if (m := q.fullmatch(sentences[-1]))]
        if not matched:
            continue
        n_cue += 1
        kind, question = matched[0]
        bound = {m["cue"]: m["name"] for s in sentences[:-1] for b in bindings[kind] if (m := b.fullmatch(s))}
        assert bound.get(question["cue"]) == answer and question["name"] not in bound.values(), text
        assert len(re.findall(rf"\b{question['cue']}\b", before)) == 2, text  # its binding clause and its question only
    assert 0.4 < n_cue / 1000 < 0.6, n_cue
    assert len(_learned_stories(0.0, distractors, 1000)) == 1000
    assert not any(q.fullmatch(s) for text, at in _learned_stories(0.0, distractors, 1000)
                   for s in [re.split(r"(?<=\.) ", text[:at])[-1]] for _, q in questions)  # no IOI sentence is a question
