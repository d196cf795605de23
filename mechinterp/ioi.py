"""IOI data: the thesis's protocol prompts, a Wang et al.-style generator, and corrupted variants.

A prompt is text plus the two names. Token positions (IO, S1, S2, END, the "and" after the first
name, the verb after S2) are found from the tokens, never from template arithmetic, so a changed
template cannot silently shift them. A batch stacks prompts of equal token length; positions are
per prompt.
"""

from __future__ import annotations

import hashlib
import operator
import random
import string
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

import torch

# Thesis protocol (CLAIMS.md): four templates, each with both name orders. The pair is (IO-first
# name order as written in CLAIMS.md); "{}" is S2.
PROTOCOL_TEMPLATES: list[tuple[str, tuple[str, str]]] = [
    ("When John and Mary went to the shops,{} gave the bag to", (" Mary", " John")),
    ("When Tom and James went to the park,{} gave the ball to", (" Tom", " James")),
    ("When Dan and Sid went to the shops,{} gave an apple to", (" Dan", " Sid")),
    ("After Martin and Amy went to the park,{} gave a drink to", (" Martin", " Amy")),
]

# Generator vocabulary: every entry is a single GPT-2 token with its leading space (checked at use).
NAMES = [
    "Mary", "John", "Tom", "James", "Dan", "Sid", "Martin", "Amy", "Alice", "Bob", "Sarah",
    "Michael", "Kate", "Paul", "Lisa", "Mark", "Anna", "David", "Emma", "Jack", "Lucy", "Sam",
    "Ben", "Lily", "Max", "Tim", "Anne", "Peter", "Jane", "Ryan", "Rose", "Adam",
]
PLACES = ["store", "park", "shops", "school", "garden", "beach", "zoo", "kitchen", "house", "office"]
OBJECTS = ["ring", "ball", "bag", "drink", "book", "cake", "toy", "flower", "gift"]
GIVING_VERBS = ["gave", "handed"]

# {A} and {B} are the two names in order of appearance, {C} is S2 (equal to A or B). All templates
# have the same token count (14 with BOS excluded) so a mixed dataset stacks into one batch.
TEMPLATES = [
    "When {A} and {B} went to the {PLACE}, {C} gave a {OBJECT} to",
    "After {A} and {B} went to the {PLACE}, {C} gave a {OBJECT} to",
    "While {A} and {B} were at the {PLACE}, {C} handed a {OBJECT} to",
    "When {A} and {B} arrived at the {PLACE}, {C} gave a {OBJECT} to",
    "Later {A} and {B} went to the {PLACE}. {C} gave a {OBJECT} to",
]
POSITION_NAMES = ("IO", "S1", "S2", "END", "and", "verb")


class IOIDataError(ValueError):
    """Bad IOI input: a multi-token or empty name, a malformed template, an unlocatable name, ..."""


@dataclass(frozen=True)
class IOIPrompt:
    text: str  # without BOS
    io: str  # the indirect object, with leading space, e.g. " Mary"
    s: str  # the subject, with leading space
    template: str = ""


@dataclass
class IOIBatch:
    """Equal-length prompts as tokens, with answer ids and per-prompt positions (BOS included)."""

    prompts: list[IOIPrompt]
    tokens: torch.Tensor  # [batch, seq]
    io_token: torch.Tensor  # [batch] token id of the answer
    s_token: torch.Tensor  # [batch] token id of the subject
    positions: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> [batch]

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def pos(self, name: str) -> torch.Tensor:
        if name not in self.positions:
            raise KeyError(f"unknown position {name!r}; known: {', '.join(self.positions)}")
        return self.positions[name]

    def select(self, index: torch.Tensor | list[int]) -> "IOIBatch":
        """The prompts at `index` (a list or tensor of row numbers, or a bool mask [batch]), in that order."""
        index = torch.as_tensor(index)
        if index.dtype == torch.bool:
            if index.shape != (len(self),):
                raise IOIDataError(f"a mask must have shape ({len(self)},), got {tuple(index.shape)}")
            index = index.nonzero()[:, 0]
        index = index.long().reshape(-1)
        if len(index) == 0:
            raise IOIDataError("the selection is empty; select at least one prompt")
        if bool(((index < 0) | (index >= len(self))).any()):
            raise IOIDataError(f"row numbers must lie in [0, {len(self)}): {index.tolist()}")
        return IOIBatch(
            prompts=[self.prompts[i] for i in index.tolist()],
            tokens=self.tokens[index],
            io_token=self.io_token[index],
            s_token=self.s_token[index],
            positions={name: pos[index] for name, pos in self.positions.items()},
        )

    def tile(self, copies: int) -> "IOIBatch":
        """`copies` stacked copies of the batch (row = copy * len(batch) + prompt), e.g. one per patch."""
        if copies < 1:
            raise IOIDataError(f"copies must be >= 1, got {copies}")
        return IOIBatch(
            prompts=self.prompts * copies,
            tokens=self.tokens.repeat(copies, 1),
            io_token=self.io_token.repeat(copies),
            s_token=self.s_token.repeat(copies),
            positions={name: pos.repeat(copies) for name, pos in self.positions.items()},
        )

    def fingerprint(self) -> tuple:
        """A hashable identity of what a forward pass sees and scores (tokens, answers, positions)."""
        parts = [self.tokens, self.io_token, self.s_token, *(self.positions[k] for k in sorted(self.positions))]
        return (tuple(self.tokens.shape), hashlib.sha1(b"".join(t.cpu().numpy().tobytes() for t in parts)).hexdigest())


def single_token_id(tokenizer, word: str) -> int:
    """The id of `word` (leading space included), or a clear error naming its pieces."""
    ids = tokenizer.encode(word, add_special_tokens=False)
    if len(ids) != 1:
        pieces = tokenizer.convert_ids_to_tokens(ids)
        raise IOIDataError(f"{word!r} is {len(ids)} tokens {pieces}, not one; IOI names must be single tokens")
    return ids[0]


def protocol_prompts() -> list[IOIPrompt]:
    """The thesis's 8 prompts: 4 templates x both name orders (S2 first John, then Mary, ...)."""
    prompts = []
    for template, (first, second) in PROTOCOL_TEMPLATES:
        for s, io in ((second, first), (first, second)):
            prompts.append(IOIPrompt(template.format(s), io=io, s=s, template=template))
    return prompts


def patching_pair() -> tuple[IOIPrompt, IOIPrompt]:
    """Section 3.4.2: clean '..., John gave the bag to' and corrupted '..., Mary gave the bag to'.

    Both carry the clean answer (IO Mary, S John): the metric on the corrupted run is still
    logit(Mary) - logit(John).
    """
    template = PROTOCOL_TEMPLATES[0][0]
    clean = IOIPrompt(template.format(" John"), io=" Mary", s=" John", template=template)
    corrupt = IOIPrompt(template.format(" Mary"), io=" Mary", s=" John", template=template)
    return clean, corrupt


NAME_SLOTS = ("A", "B", "C")
TEMPLATE_SLOTS = NAME_SLOTS + ("PLACE", "OBJECT")


def _check_template(template: str) -> None:
    """Reject a template that `str.format` would crash on or that would put the names out of order."""
    if not isinstance(template, str):
        raise IOIDataError(f"template {template!r} is a {type(template).__name__}, not a str")
    try:
        fields = [f for f in string.Formatter().parse(template) if f[1] is not None]
    except ValueError as err:  # unbalanced braces
        raise IOIDataError(f"template {template!r} is malformed ({err}); write a literal brace as {{{{ or }}}}") from None
    for _, name, spec, conversion in fields:
        if name not in TEMPLATE_SLOTS or spec or conversion:
            raw = "{" + name + ("!" + conversion if conversion else "") + (":" + spec if spec else "") + "}"
            raise IOIDataError(
                f"template {template!r} has the unknown slot {raw}; slots are {{A}}, {{B}}, {{C}}, {{PLACE}}, {{OBJECT}} "
                "(write a literal brace as {{ or }})"
            )
    used = [name for _, name, _, _ in fields if name in NAME_SLOTS]
    missing = [f"{{{slot}}}" for slot in NAME_SLOTS if slot not in used]
    if missing:
        raise IOIDataError(f"template {template!r} lacks the slot(s) {missing}; it needs {{A}}, {{B}} and {{C}} (S2)")
    # S1 and S2 are found as the first and second occurrence of S: a repeated or early name slot
    # would silently shift them.
    if used != list(NAME_SLOTS):
        order = " ".join("{" + name + "}" for name in used)
        raise IOIDataError(
            f"template {template!r} has the names as {order}; {{A}}, {{B}} and {{C}} (S2) must each appear once, in that order"
        )


def read_templates(path) -> list[str]:
    """The IOI templates of a text file, one a line (blank lines skipped), each checked as the built-in templates
    are; a bad file is one IOIDataError naming the file and line."""
    try:
        lines = open(path, encoding="utf-8").read().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise IOIDataError(f"cannot read IOI templates from {path}: {err}") from None
    templates = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            _check_template(line)
        except IOIDataError as err:
            raise IOIDataError(f"{path}:{number}: {err}") from None
        templates.append(line)
    if not templates:
        raise IOIDataError(f"{path} has no templates; write one a line, e.g. {TEMPLATES[0]!r}")
    return templates


def _check_name(name) -> None:
    if not isinstance(name, str) or not name.strip():
        raise IOIDataError(f"name {name!r} is not a name; names are non-empty strings such as 'Mary'")
    if any(ch.isspace() for ch in name):
        raise IOIDataError(f"name {name!r} contains whitespace; give names without spaces (the leading one is added), e.g. 'Mary'")


def _as_list(items, what: str) -> list:
    """`items` materialised once (lists, tuples, generators); a bare str or a non-iterable is an error."""
    if isinstance(items, str) or not isinstance(items, Iterable):
        raise IOIDataError(f"{what} must be a list, got the {type(items).__name__} {items!r}")
    return list(items)


_PROMPT_FIELDS = {"text": "the prompt without BOS", "io": "the indirect object with its leading space, e.g. ' Mary'",
                  "s": "the subject with its leading space, e.g. ' John'"}


def _as_prompts(prompts, caller: str) -> list[IOIPrompt]:
    """`prompts` as a non-empty list of IOIPrompts whose text, io and s are str; anything else is an
    IOIDataError naming the prompt and the field (not the tokenizer's ValueError or an AttributeError)."""
    if isinstance(prompts, IOIPrompt):
        raise IOIDataError(f"{caller} takes a list of prompts; wrap a single one as [prompt]")
    # Any iterable, read once: a researcher passes a generator expression as readily as a list, and
    # reading it twice (once for the tokens, once for batch.prompts) would leave prompts empty.
    prompts = _as_list(prompts, "prompts")
    if not prompts:
        raise IOIDataError("no prompts")
    for i, p in enumerate(prompts):
        if not isinstance(p, IOIPrompt):
            raise IOIDataError(f"prompt {i} is the {type(p).__name__} {p!r}, not an IOIPrompt")
        for name, meaning in _PROMPT_FIELDS.items():
            value = getattr(p, name)
            if not isinstance(value, str):
                raise IOIDataError(f"prompt {i}'s {name} is the {type(value).__name__} {value!r}, not a str ({meaning})")
    return prompts


def fill_template(template: str, io: str, s: str, io_first: bool, place: str = "park", obj: str = "ball") -> IOIPrompt:
    """One prompt from a template; names without leading space, e.g. fill_template(t, 'Mary', 'John', True)."""
    _check_template(template)
    _check_name(io)
    _check_name(s)
    if io == s:
        raise IOIDataError(f"IO and S are the same name {io!r}; they must differ")
    a, b = (io, s) if io_first else (s, io)
    text = template.format(A=a, B=b, C=s, PLACE=place, OBJECT=obj)
    return IOIPrompt(text, io=" " + io, s=" " + s, template=template)


def generate_dataset(
    tokenizer,
    n: int,
    seed: int = 0,
    templates: list[str] | None = None,
    names: list[str] | None = None,
) -> list[IOIPrompt]:
    """`n` IOI prompts in the style of Wang et al.: random template, names, place and object,
    alternating name order (ABBA / BABA). Only names that are one token under `tokenizer` are used,
    each once however often it is listed."""
    try:
        n = operator.index(n)  # ints only: 2.5 prompts is a mistake, not 2
    except TypeError:
        raise IOIDataError(f"n must be a whole number of prompts, got {n!r}") from None
    if n < 1:
        raise IOIDataError(f"n must be >= 1, got {n}; ask for at least one prompt")
    templates = TEMPLATES if templates is None else _as_list(templates, "templates")
    if not templates:
        raise IOIDataError("templates is empty; pass at least one template, or None for the default TEMPLATES")
    for t in templates:
        _check_template(t)
    candidates = NAMES if names is None else _as_list(names, "names")
    for name in candidates:
        _check_name(name)
    # A pool, not a weighting: repeats are dropped, so ["Mary", "Mary"] is one name (an error below),
    # never prompts with IO == S.
    candidates = list(dict.fromkeys(candidates))
    usable = [name for name in candidates if len(tokenizer.encode(" " + name, add_special_tokens=False)) == 1]
    if len(usable) < 2:
        dropped = [name for name in candidates if name not in usable]
        raise IOIDataError(
            f"need at least 2 distinct single-token names, got {usable}"
            + (f" ({dropped} are several tokens each)" if dropped else "")
        )
    rng = random.Random(seed)
    prompts = []
    for i in range(n):
        io, s = rng.sample(usable, 2)
        prompts.append(
            fill_template(rng.choice(templates), io, s, io_first=(i % 2 == 0), place=rng.choice(PLACES), obj=rng.choice(OBJECTS))
        )
    return prompts


def locate_positions(tokens: list[int], io_id: int, s_id: int, tokenizer, text: str = "") -> dict[str, int]:
    """Find IO, S1, S2, END, 'and' and verb in one token list (BOS at 0 if present)."""
    where = f" in prompt {text!r}" if text else ""
    if io_id == s_id:
        raise IOIDataError(f"IO and S are the same name {tokenizer.decode([io_id])!r}{where}; they must differ")
    io_at = [i for i, t in enumerate(tokens) if t == io_id]
    s_at = [i for i, t in enumerate(tokens) if t == s_id]
    if len(io_at) < 1:
        raise IOIDataError(f"cannot locate IO {tokenizer.decode([io_id])!r}{where}")
    if len(s_at) < 2:
        raise IOIDataError(f"cannot locate S1 and S2 (subject {tokenizer.decode([s_id])!r} must occur twice){where}")
    first_name = min(io_at[0], s_at[0])
    and_id = single_token_id(tokenizer, " and")
    and_at = [i for i in range(first_name + 1, len(tokens)) if tokens[i] == and_id]
    if not and_at:
        raise IOIDataError(f"cannot locate the ' and' after the first name{where}")
    s2 = s_at[1]
    if s2 + 1 >= len(tokens):
        raise IOIDataError(f"no verb after S2{where}")
    return {"IO": io_at[0], "S1": s_at[0], "S2": s2, "END": len(tokens) - 1, "and": and_at[0], "verb": s2 + 1}


def make_batch(tokenizer, prompts: Iterable[IOIPrompt], prepend_bos: bool = True) -> IOIBatch:
    """Tokenize equal-length prompts and locate their positions; unequal lengths are an error."""
    prompts = _as_prompts(prompts, "make_batch")
    if prepend_bos and tokenizer.bos_token_id is None:
        raise IOIDataError("the tokenizer has no BOS token; pass prepend_bos=False")
    rows, io_ids, s_ids, found = [], [], [], []
    for p in prompts:
        ids = tokenizer.encode(p.text, add_special_tokens=False)
        if prepend_bos:
            ids = [tokenizer.bos_token_id] + ids
        io_id, s_id = single_token_id(tokenizer, p.io), single_token_id(tokenizer, p.s)
        found.append(locate_positions(ids, io_id, s_id, tokenizer, p.text))
        rows.append(ids)
        io_ids.append(io_id)
        s_ids.append(s_id)
    lengths = {len(r) for r in rows}
    if len(lengths) != 1:
        by_len = {}
        for p, r in zip(prompts, rows):
            by_len.setdefault(len(r), p.text)
        raise IOIDataError(
            f"prompts have unequal token lengths {sorted(lengths)} (e.g. {by_len}); positions would misalign in one batch"
        )
    positions = {k: torch.tensor([f[k] for f in found]) for k in POSITION_NAMES}
    return IOIBatch(prompts, torch.tensor(rows), torch.tensor(io_ids), torch.tensor(s_ids), positions)


def _with_s2_replaced(batch: IOIBatch, new_ids: torch.Tensor) -> IOIBatch:
    tokens = batch.tokens.clone()
    tokens[torch.arange(len(batch)), batch.pos("S2")] = new_ids
    # Answers and positions stay those of the clean prompts: the metric compares the same names.
    return replace(batch, tokens=tokens)


def corrupt_s2_to_io(batch: IOIBatch) -> IOIBatch:
    """The thesis's corruption: S2 becomes the IO name ('..., Mary gave the bag to')."""
    return _with_s2_replaced(batch, batch.io_token)


def corrupt_three_names(batch: IOIBatch, tokenizer, seed: int = 0, names: list[str] | None = None) -> IOIBatch:
    """The ABC distribution: S2 becomes a third name, distinct from IO and S."""
    rng = random.Random(seed)
    names = NAMES if names is None else _as_list(names, "names")
    for name in names:
        _check_name(name)
    pool = [single_token_id(tokenizer, " " + n) for n in names]
    third = []
    for io, s in zip(batch.io_token.tolist(), batch.s_token.tolist()):
        choices = [t for t in pool if t not in (io, s)]
        if not choices:
            raise IOIDataError("need a third name distinct from IO and S")
        third.append(rng.choice(choices))
    return _with_s2_replaced(batch, torch.tensor(third))


# --- the robustness distribution (mechinterp.robustness) ------------------------------------------

# Twelve templates in the style of Wang et al.'s IOI dataset (written for this suite), of several token
# lengths, every one ending with a giving verb and " to" so END is the indirect object's slot. Every name,
# place and object is one token, so a template fixes its prompts' length and positions (IO and S1 swap
# with the name order; S2 and END do not move).
DISTRIBUTION_TEMPLATES = [
    "When {A} and {B} went to the {PLACE}, {C} gave a {OBJECT} to",
    "After {A} and {B} went to the {PLACE}, {C} gave a {OBJECT} to",
    "Then, {A} and {B} went to the {PLACE}. {C} gave a {OBJECT} to",
    "While {A} and {B} were working at the {PLACE}, {C} handed a {OBJECT} to",
    "Then, {A} and {B} had a lot of fun at the {PLACE}. {C} gave a {OBJECT} to",
    "When {A} and {B} got a {OBJECT} at the {PLACE}, {C} decided to give it to",
    "Friends {A} and {B} found a {OBJECT} at the {PLACE}. {C} gave it to",
    "The {PLACE} {A} and {B} went to had a {OBJECT}. {C} gave it to",
    "Today {A} and {B} were at the {PLACE} all day. Later, {C} handed the {OBJECT} to",
    "Yesterday {A} and {B} played in the {PLACE}, and then {C} gave a {OBJECT} to",
    "One day {A} and {B} walked to the {PLACE}. {C} wanted to give a {OBJECT} to",
    "In the {PLACE}, {A} and {B} found a {OBJECT}, and {C} gave it to",
]


def _one_known_token(tokenizer, name: str) -> bool:
    """The name, with its leading space, is one token and not the unknown token (a word-level vocabulary maps any
    unknown name to it)."""
    ids = tokenizer.encode(" " + name, add_special_tokens=False)
    return len(ids) == 1 and ids[0] != getattr(tokenizer, "unk_token_id", None)


def distribution_prompts(
    tokenizer, n: int, seed: int = 0, templates: list[str] | None = None, names: list[str] | None = None,
) -> list[IOIPrompt]:
    """`n` prompts over `templates` (default DISTRIBUTION_TEMPLATES): pairs of prompts with the same names,
    place and object in both orders (ABBA then BABA, as the protocol pairs them), the pairs dealt to the
    templates in turn so every template gets both orders and about n / len(templates) prompts."""
    templates = DISTRIBUTION_TEMPLATES if templates is None else _as_list(templates, "templates")
    if not templates:
        raise IOIDataError("templates is empty; pass at least one template, or None for DISTRIBUTION_TEMPLATES")
    try:
        n = operator.index(n)
    except TypeError:
        raise IOIDataError(f"n must be a whole number of prompts, got {n!r}") from None
    if n < 1:
        raise IOIDataError(f"n must be >= 1, got {n}; ask for at least one prompt")
    for t in templates:
        _check_template(t)
    pool = list(dict.fromkeys(NAMES if names is None else _as_list(names, "names")))
    for name in pool:
        _check_name(name)
    usable = [name for name in pool if _one_known_token(tokenizer, name)]
    if len(usable) < 2:
        raise IOIDataError(f"need at least 2 distinct single-token names, got {usable}")
    rng = random.Random(seed)
    prompts: list[IOIPrompt] = []
    for pair in range((n + 1) // 2):
        template = templates[pair % len(templates)]
        io, s = rng.sample(usable, 2)
        place, obj = rng.choice(PLACES), rng.choice(OBJECTS)
        for io_first in (True, False):
            prompts.append(fill_template(template, io, s, io_first=io_first, place=place, obj=obj))
    return prompts[:n]


@dataclass
class LengthGroup:
    """Prompts that share one forward pass: equal token length and S2 position (so also END)."""

    rows: torch.Tensor  # [group] row numbers of these prompts in the full prompt list
    batch: IOIBatch


def batches_by_length(tokenizer, prompts: Iterable[IOIPrompt], prepend_bos: bool = True) -> list[LengthGroup]:
    """`prompts` grouped by (token length, S2 position), one IOIBatch each, longest first. Every filler
    being one token, a template's prompts always land in one group; templates that agree on both share it,
    so a whole-position patch (residual at S2 or END) is one site for the whole group."""
    prompts = _as_prompts(prompts, "batches_by_length")
    keys = []
    for p in prompts:
        ids = tokenizer.encode(p.text, add_special_tokens=False)
        ids = ([tokenizer.bos_token_id] if prepend_bos else []) + ids
        s_id = single_token_id(tokenizer, p.s)
        s_at = [i for i, t in enumerate(ids) if t == s_id]
        if len(s_at) < 2:
            raise IOIDataError(f"cannot locate S2 in prompt {p.text!r}")
        keys.append((len(ids), s_at[1]))
    groups = []
    for key in sorted(set(keys), reverse=True):
        rows = [i for i, k in enumerate(keys) if k == key]
        groups.append(LengthGroup(torch.tensor(rows), make_batch(tokenizer, [prompts[i] for i in rows], prepend_bos)))
    return groups
