"""What a `--model` value names, parsed once into a ModelSpec that everything else uses.

    tiny-stories-8M                  a real checkpoint by transformer_lens name (or HF repo id)
    tiny-stories-8M@<revision>       the same at a Hugging Face revision (branch, tag or commit)
    /path/to/checkpoint              a local HF checkpoint, identified by its config (fingerprint)
    /path/to/checkpoint=gpt2-small   a local checkpoint taken as that model (renamed, fine-tuned)
    planted:tinystories-8m[/mutant]  a hand-set planted-circuit model (fixtures.planted)

A local directory's identity comes from its content, never from its path: the architecture-defining
fields of its config.json are matched against the six real checkpoints' (KNOWN_FINGERPRINTS). A
directory that matches none is an unidentified GPT-Neo / GPT-2 checkpoint: it gets family-wide
threshold rows and the circuit card, never a checkpoint's thesis numbers. Every problem is one
`UnknownModel` line, raised here, before any model loads.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

PLANTED_PREFIX = "planted:"
# Planted twins and their mutants use the threshold rows of the real model they imitate.
PLANTED_COUNTERPARTS: dict[str, str] = {"tinystories-8m": "tiny-stories-8M", "gpt2-small": "gpt2-small"}

# Architectures a local checkpoint may have: the two families the thesis studies (both pre-LN,
# so transformer_lens's folding and centering are valid for them). Value: the family's row prefix.
LOCAL_ARCHITECTURES: dict[str, str] = {"GPTNeoForCausalLM": "tiny-stories", "GPT2LMHeadModel": "gpt2"}


class UnknownModel(ValueError):
    """A --model value that names nothing this suite can check, or a checkpoint it cannot read."""


@dataclass(frozen=True)
class Fingerprint:
    """The architecture-defining fields of a checkpoint's config, in one vocabulary for both families."""

    architecture: str
    d_model: int
    n_layers: int
    n_heads: int
    d_mlp: int
    d_vocab: int
    n_positions: int
    attention_layers: tuple[str, ...]  # "global" / "local" per layer (GPT-2: all global)
    window_size: int | None  # local attention window (GPT-Neo only)

    def describe(self) -> str:
        local = f", window {self.window_size}" if self.window_size else ""
        return (f"{self.architecture}: {self.n_layers} layers, d_model {self.d_model}, {self.n_heads} heads, "
                f"d_mlp {self.d_mlp}, vocab {self.d_vocab}, {self.n_positions} positions{local}")


def _neo(d_model: int, n_layers: int) -> Fingerprint:
    # Every TinyStories checkpoint: GPT-Neo with 16 heads, MLP 4 x d_model (intermediate_size null),
    # GPT-2's vocabulary, 2048 positions, global/local layers alternating, window 256.
    return Fingerprint("GPTNeoForCausalLM", d_model, n_layers, 16, 4 * d_model, 50257, 2048,
                       ("global", "local") * (n_layers // 2), 256)


@dataclass(frozen=True)
class ModelVersion:
    """A real checkpoint the suite knows: adding a model version is one entry of MODEL_VERSIONS (plus the
    threshold rows that apply to it). Its family follows from its architecture (LOCAL_ARCHITECTURES); its twin
    (fixtures/twins.py) is built from its fingerprint."""

    name: str  # the transformer_lens name (OFFICIAL_MODEL_NAMES / MODEL_ALIASES, checked in tests/test_models.py)
    repo_id: str  # the HF hub repo
    fingerprint: Fingerprint  # from the repo's config.json on the hub

    @property
    def family(self) -> str:
        return LOCAL_ARCHITECTURES[self.fingerprint.architecture]


MODEL_VERSIONS: tuple[ModelVersion, ...] = (
    ModelVersion("tiny-stories-1M", "roneneldan/TinyStories-1M", _neo(64, 8)),
    ModelVersion("tiny-stories-3M", "roneneldan/TinyStories-3M", _neo(128, 8)),
    ModelVersion("tiny-stories-8M", "roneneldan/TinyStories-8M", _neo(256, 8)),
    ModelVersion("tiny-stories-28M", "roneneldan/TinyStories-28M", _neo(512, 8)),
    ModelVersion("tiny-stories-33M", "roneneldan/TinyStories-33M", _neo(768, 4)),
    ModelVersion("gpt2-small", "gpt2", Fingerprint("GPT2LMHeadModel", 768, 12, 12, 3072, 50257, 1024, ("global",) * 12, None)),
)
KNOWN_MODELS: dict[str, str] = {version.name: version.repo_id for version in MODEL_VERSIONS}  # name -> HF repo id
KNOWN_FINGERPRINTS: dict[str, Fingerprint] = {version.name: version.fingerprint for version in MODEL_VERSIONS}


@dataclass(frozen=True)
class ModelSpec:
    """One --model value, parsed. `rows_model` is the real checkpoint whose threshold rows apply
    (None for an unidentified local checkpoint, which gets family-wide rows only)."""

    raw: str  # the text the user gave, the spec's name in reports and test ids
    kind: str  # "known" | "local" | "planted"
    name: str  # known: transformer_lens name; local: resolved directory; planted: twin[/mutant]
    rows_model: str | None
    family: str  # "tiny-stories" | "gpt2": which family-wide rows apply
    revision: str | None = None  # HF revision of a known model
    identified_by: str = ""  # local: "config" or "override"
    fingerprint: Fingerprint | None = None  # local: what its config.json says

    @property
    def planted(self) -> bool:
        return self.kind == "planted"

    @property
    def row_key(self) -> str:
        """What threshold rows are matched against: the real model, or '<family>-(unidentified)',
        which only family globs such as 'tiny-stories-*' match."""
        return self.rows_model or f"{self.family}-(unidentified)"

    @property
    def repo_id(self) -> str | None:
        return KNOWN_MODELS[self.name] if self.kind == "known" else None

    def identity(self) -> str:
        """One line saying what this spec is and how it was identified, for the report."""
        if self.kind == "planted":
            return f"planted twin of {self.rows_model} (synthetic, hand-set circuits: checks the suite, not the thesis)"
        if self.kind == "known":
            at = f" at revision {self.revision}" if self.revision else ""
            return f"{self.name} ({self.repo_id}{at})"
        if self.identified_by == "config":
            return f"local directory, identified as {self.rows_model} by its config"
        if self.identified_by == "override":
            return f"local directory, taken as {self.rows_model} (explicit override; its config has that architecture)"
        return (f"local directory, unidentified {self.fingerprint.architecture} checkpoint ({self.fingerprint.describe()}): "
                f"family-wide rows and the circuit card only, no checkpoint's thesis numbers")


def known_name(text: str) -> str | None:
    """The KNOWN_MODELS name for a transformer_lens name or HF repo id (case-insensitive), else None."""
    lowered = text.lower()
    for name, repo in KNOWN_MODELS.items():
        if lowered in (name.lower(), repo.lower()):
            return name
    return None


def unknown_model_message(raw: str) -> str:
    return (f"unknown model {raw!r}; known: {', '.join(KNOWN_MODELS)} (optionally NAME@revision); or "
            f"'planted:<name>' (e.g. planted:tinystories-8m), or a directory holding an HF checkpoint "
            f"(config.json + weights), optionally DIR=NAME to take it as a known model")


# --- local checkpoints: config.json -> Fingerprint ------------------------------------------------


def read_config(directory: Path) -> dict:
    """A checkpoint directory's config.json as a dict; every problem is one line naming the file."""
    path = directory / "config.json"
    if not path.is_file():
        raise UnknownModel(f"{directory}: no config.json, so not an HF checkpoint directory")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UnknownModel(f"{path}: not valid JSON ({err})") from None
    if not isinstance(config, dict):
        raise UnknownModel(f"{path}: expected a JSON object, got {type(config).__name__}")
    return config


def fingerprint_of(config: dict, source: str = "config.json") -> Fingerprint:
    """The Fingerprint of an HF config dict of a GPT-Neo or GPT-2 checkpoint."""
    architectures = config.get("architectures") or []
    architecture = architectures[0] if isinstance(architectures, list) and architectures else None
    if architecture not in LOCAL_ARCHITECTURES:
        raise UnknownModel(f"{source}: architectures {architectures} is not one of {', '.join(LOCAL_ARCHITECTURES)} "
                           f"(the two families the thesis studies)")

    def field(key: str, default=None, kind=int):
        value = config.get(key, default)
        if value is None or not isinstance(value, kind) or isinstance(value, bool):
            raise UnknownModel(f"{source}: {architecture} config needs {key!r} ({kind.__name__}), got {value!r}")
        return value

    if architecture == "GPTNeoForCausalLM":
        d_model = field("hidden_size")
        layers = _neo_attention_layers(config, source)
        if len(layers) != field("num_layers"):
            raise UnknownModel(f"{source}: attention_types give {len(layers)} layers but num_layers is {config['num_layers']}")
        return Fingerprint(architecture, d_model, field("num_layers"), field("num_heads"),
                           config.get("intermediate_size") or 4 * d_model, field("vocab_size"),
                           field("max_position_embeddings"), layers, field("window_size"))
    d_model = field("n_embd")
    return Fingerprint(architecture, d_model, field("n_layer"), field("n_head"), config.get("n_inner") or 4 * d_model,
                       field("vocab_size"), field("n_positions", config.get("n_ctx")), ("global",) * field("n_layer"), None)


def _neo_attention_layers(config: dict, source: str) -> tuple[str, ...]:
    """GPT-Neo's per-layer attention kinds from `attention_types` ([[["global", "local"], 4]])."""
    try:
        layers = tuple(kind for kinds, repeat in config["attention_types"] for _ in range(repeat) for kind in kinds)
    except (KeyError, TypeError, ValueError):
        raise UnknownModel(f"{source}: GPT-Neo config needs attention_types like [[['global', 'local'], 4]], "
                           f"got {config.get('attention_types')!r}") from None
    if not set(layers) <= {"global", "local"}:
        raise UnknownModel(f"{source}: attention_types may hold only 'global' / 'local', got {sorted(set(layers))}")
    return layers


def identify(fingerprint: Fingerprint) -> str | None:
    """The known checkpoint with exactly this architecture, else None."""
    return next((name for name, known in KNOWN_FINGERPRINTS.items() if known == fingerprint), None)


# --- parsing ----------------------------------------------------------------------------------------


def _parse_planted(raw: str) -> ModelSpec:
    name = raw[len(PLANTED_PREFIX):]
    twin, _, mutant = name.partition("/")
    if twin.lower() not in PLANTED_COUNTERPARTS:
        raise UnknownModel(f"unknown planted twin {twin!r} in {raw!r}; planted twins: "
                           f"{', '.join(PLANTED_PREFIX + t for t in PLANTED_COUNTERPARTS)}")
    if mutant:
        mutants = _planted_mutants()
        if name not in mutants:
            of_twin = sorted(m.split('/', 1)[1] for m in mutants if m.startswith(twin + "/"))
            raise UnknownModel(f"unknown mutant {mutant!r} of {PLANTED_PREFIX}{twin}; its mutants: {', '.join(of_twin)}")
    rows_model = PLANTED_COUNTERPARTS[twin.lower()]
    family = "gpt2" if rows_model == "gpt2-small" else "tiny-stories"
    return ModelSpec(raw, "planted", name, rows_model, family)


# Planted models are built outside this package (fixtures.planted registers its builder on import), so the
# toolkit runs real models without them: (variant names, build(name) -> HookedTransformer).
_PLANTED_SOURCE: list[tuple[Callable[[], Iterable[str]], Callable[[str], Any]]] = []


def register_planted(variants: Callable[[], Iterable[str]], build: Callable[[str], Any]) -> None:
    """Where `planted:` specs come from: `variants()` lists every '<twin>/<variant>' name, `build(name)` builds one."""
    _PLANTED_SOURCE[:] = [(variants, build)]
    _parse_text.cache_clear()


def planted_builder() -> Callable[[str], Any]:
    return _planted_source()[1]


def _planted_source():
    if not _PLANTED_SOURCE:
        raise UnknownModel("planted models are not registered: import fixtures.planted first (it registers their builder)")
    return _PLANTED_SOURCE[0]


def _planted_mutants() -> set[str]:
    return set(_planted_source()[0]())


def _parse_local(raw: str, directory: Path, override: str | None) -> ModelSpec:
    directory = directory.expanduser().resolve()
    if not directory.is_dir():
        raise UnknownModel(f"{raw}: not a directory")
    fingerprint = fingerprint_of(read_config(directory), str(directory / "config.json"))
    family = LOCAL_ARCHITECTURES[fingerprint.architecture]
    if override is not None:
        name = known_name(override)
        if name is None:
            raise UnknownModel(f"{raw}: override {override!r} is not a known model; known: {', '.join(KNOWN_MODELS)}")
        if KNOWN_FINGERPRINTS[name] != fingerprint:
            raise UnknownModel(f"{raw}: its config ({fingerprint.describe()}) is not {name}'s architecture "
                               f"({KNOWN_FINGERPRINTS[name].describe()}); a renamed or fine-tuned copy keeps its architecture")
        return ModelSpec(raw, "local", str(directory), name, family, identified_by="override", fingerprint=fingerprint)
    name = identify(fingerprint)
    return ModelSpec(raw, "local", str(directory), name, family, identified_by="config" if name else "",
                     fingerprint=fingerprint)


@functools.lru_cache(maxsize=256)
def _parse_text(raw: str) -> ModelSpec:
    if raw.startswith(PLANTED_PREFIX):
        return _parse_planted(raw)
    if Path(raw).expanduser().is_dir():  # a directory wins over NAME@rev / DIR=NAME readings of its path
        return _parse_local(raw, Path(raw), None)
    directory, equals, override = raw.rpartition("=")
    if equals and directory:
        if not Path(directory).expanduser().is_dir():
            raise UnknownModel(f"{raw}: DIR=NAME needs an existing checkpoint directory, and {directory!r} is not one")
        return _parse_local(raw, Path(directory), override)
    base, at, revision = raw.partition("@")
    name = known_name(base)
    if name is not None:
        if at and not revision.strip():
            raise UnknownModel(f"{raw}: empty revision after '@'")
        family = LOCAL_ARCHITECTURES[KNOWN_FINGERPRINTS[name].architecture]
        return ModelSpec(raw, "known", name, name, family, revision=revision.strip() or None)
    raise UnknownModel(unknown_model_message(raw))


def parse_spec(spec: str | ModelSpec) -> ModelSpec:
    """The ModelSpec for a --model value (a ModelSpec passes through). Raises UnknownModel."""
    if isinstance(spec, ModelSpec):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise UnknownModel(f"model spec must be a non-empty string, got {spec!r}")
    raw = spec.strip()
    if not raw.startswith(PLANTED_PREFIX) and (Path(raw).expanduser().is_dir() or "=" in raw):
        return _parse_text.__wrapped__(raw)  # a directory's content can change between calls: never cached
    return _parse_text(raw)
