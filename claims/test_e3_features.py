"""E3 (thesis s3.5): gated SAE features of TinyStories-8M, each named by its role.

A feature index belongs to one trained SAE, so every claim first finds the feature that fills its
role (mechinterp.features.ROLES: "the top-activating layer-6 feature at END", ...) and reports the
thesis's index only as the role's alias. The measured `feature_index` is recorded (no threshold) so
a regression run shows when a retrained SAE assigns the role to another feature.

E3.L6-to-feature-collapse  ablating the top layer-6 feature at END: P(IO) 77.3% -> 0.25%, H7.7 stops
                           attending from END to the names (figs 3.24, 3.25)
E3.L5-to-feature           the top layer-5 feature at END: P(IO) 77.3% -> 4.8%, H6.11 stops moving names,
                           H7.7 END->IO 0.7 -> 0.3 (figs 3.21, 3.22)
E3.L5-gave-feature         the top-attribution layer-5 feature fires on "gave"; ablating it lowers H7.7
                           END->IO 0.7 -> 0.3 and leaves H6.11 mostly unchanged
E3.L5-infinitive-to        the layer-5 "to"-before-a-verb feature; ablating it makes later heads attend
                           to earlier "to" tokens (fig 3.23)
E3.L6-negative-names       the most negative layer-6 attribution fires on names (tables 3.8, 3.9)
E3.L7-logit-feature        one layer-7 feature dominates attribution (4.1 vs 0.07) and W_U ranks names first
E3.random-control          ablating random features barely moves P(IO)

Everything is measured on the thesis's 8 protocol prompts; ablation projects the residual stream
after the block onto the orthogonal complement of the decoder direction, at every position.

Where the SAEs come from (claims.test_e3_features.SAESet): `--sae-dir DIR` (trained SAEs, one sae_lens
SAE per subdirectory), or `--sae-config FILE.json` (SAETrainingConfig fields; trained on TinyStories
from the HF hub for real models, on the story corpus for planted ones, and cached), or by default for
planted models PLANTED_SAE_CONFIG on the story corpus. A real model with neither option is skipped
with one line saying how to provide them. Thresholds: claims/thresholds.py, section E3.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Mapping

import pytest

from claims.framework import Measured, claim_of, tokenizer_for
from mechinterp import features
from mechinterp.attention import attention_patterns
from mechinterp.ioi import IOIBatch, make_batch, protocol_prompts, single_token_id
from mechinterp.models import is_planted, real_counterpart
from mechinterp.plots.sae import attention_before_after, control_histogram, tables_figure
from mechinterp.sae_training import (SAEOptionError, SAETrainingConfig, check_sae_dir, load_sae_dir,
                                     sae_config_from_file, train_sae)

H77, H611 = (7, 7), (6, 11)
SAE_BLOCKS = (5, 6, 7)

# The planted twin's SAEs, trained in the test session and cached (keyed by config, model weights and
# corpus). Sized for CI on a 2-core CPU: the story corpus is run through the model once (~36k tokens)
# and cycled for 100k training tokens in batches of 128 (~780 steps: with batches of 1024, 100 steps
# left the SAE unconverged). Width 1024 = 4 x d_model: the twin's residual stream holds a few dozen
# planted directions, not thousands of features. L1 40 from a sweep over 5, 10, 20, 40 (lr 1e-3): every
# setting recovered each planted direction at decoder cos >= 0.93, but at L1 <= 20 the features that
# fire at END absorb the twin's other content at "to" tokens (its rotating position code, the names
# H6.11 moved there) and split the trigger over many features (112 with cos > 0.5 at L1 5), so the
# top feature at END had cos 0.5-0.9 with the trigger; at 40 it is 0.92-0.95. The price is
# reconstruction: explained variance ~0.45, since most of the twin's residual is dense (constant,
# positional sinusoids, a random code per token), which a sparse code cannot carry.
PLANTED_SAE_CONFIG = SAETrainingConfig(
    width=1024, l1_coefficient=40.0, lr=1e-3, training_tokens=100_000, train_batch_size_tokens=128,
    context_size=128, store_batch_size_prompts=8, n_batches_in_buffer=8, n_eval_batches=2, seed=0,
)
PLANTED_CORPUS_STORIES = 600  # fixtures.corpus.story_corpus(600, seed=0): ~37k tokens, ~850 giving "to"s
TINYSTORIES_CONTEXT_STORIES = 2000  # real models: validation stories searched for max-activating contexts

# Findings the planted TinyStories twin does not reproduce through a trained SAE, each with its measured
# cause (a gap in the fixture, not in the claim). The claim still runs on the twin and records its
# values; the report shows it as a "known gap" (pytest: xfail), and strictly: once it passes, the test
# fails until the entry is removed.
PLANTED_TWIN = "planted:tinystories-8m"
PLANTED_TWIN_GAPS = {
    "E3.L7-logit-feature": (
        "the twin plants no layer-7 feature: H7.7 writes each name's own unembedding direction, so the block-7 SAE "
        "has one feature per name and the top attribution barely leads the next (0.28 vs 0.27, ratio 1.04); the "
        "top feature's W_U tokens are names (' John' first), as the thesis found"),
    "E3.L5-infinitive-to": (
        "the SAE's infinitive feature carries is-to and the twin's ' to' position code in the same ratio as inf@5, so "
        "projecting it out removes the later heads' attraction to earlier ' to' together with what cancels it: END's "
        "attention to earlier ' to' stays ~1e-6 after the ablation (projecting the exact infinitive-to@5 direction "
        "instead gives 0.90)"),
    "E3.L6-negative-names": (
        "names@6 always comes with a name's own code, so the SAE folds it into one feature per name (31 features with "
        "cos > 0.5 with names@6, best 0.87) whose attribution mixes the repeller (negative) with the code (positive); "
        "the most negative layer-6 attribution is a name feature, but not by far: -0.14 against -0.12 (ratio 1.13)"),
    "E3.random-control": (
        "the twin's P(IO) is steep in anything H7.7 reads at IO: calibrated to the thesis's 77% / 9.4, one unit of "
        "H7.7's score on IO moves P(IO) by ~0.44, and it reads is-name at 15.6 per unit, so removing 0.3% of is-name "
        "at IO costs 0.02. Live SAE features carry is-name, inhibition or verb content next to their tokens' codes: "
        "mean |dP(IO)| over 30 random live features 0.11 after block 5, 0.14 after block 6 (role copies excluded); "
        "even random unit directions give 0.044 / 0.059"),
}
RANDOM_CONTROL_BLOCKS = (5, 6)  # thesis s3.5.1 states the control for layer 5; 6 holds the strongest feature
RANDOM_CONTROL_FEATURES = 30
# Live = fires at least once on the first 200 texts of the context corpus (~12k tokens of the story corpus):
# only live features are drawn, since a dead feature's decoder row is an untrained direction.
RANDOM_CONTROL_LIVE_TEXTS = 200
# A feature whose decoder is this close to a role feature's is a copy of it (SAEs split one direction over
# several features), not a "random other feature"; 0.9 is the same bar as recovering a planted direction.
ROLE_COPY_COSINE = 0.9


# --- where the SAEs come from ---------------------------------------------------------------------


def planted_corpus() -> list[str]:
    from fixtures.corpus import story_corpus

    return story_corpus(PLANTED_CORPUS_STORIES, seed=0)


def read_sae_config(path: str | None, planted: bool) -> SAETrainingConfig | None:
    """--sae-config: a JSON object of SAETrainingConfig fields over the model kind's defaults."""
    base = PLANTED_SAE_CONFIG if planted else SAETrainingConfig()
    if path is None:
        return base if planted else None
    try:
        return sae_config_from_file(path, base)
    except SAEOptionError as err:
        if not planted:
            raise
        raise SAEOptionError(f"{err} (fields the file does not set come from PLANTED_SAE_CONFIG, the planted twin's)") from None


def check_sae_options(sae_config: str | None, sae_dir: str | None, specs: Iterable[str] = ()) -> None:
    """--sae-config / --sae-dir checked at the start of a run, before any model loads (conftest): a
    one-line SAEOptionError naming the bad file. The config file is read over the defaults of each
    kind of model in `specs` (planted and/or real; both when no specs are given)."""
    if sae_config is not None:
        kinds = {is_planted(spec) for spec in specs} or {True, False}
        for planted in sorted(kinds):
            read_sae_config(sae_config, planted)
    if sae_dir is not None:
        check_sae_dir(sae_dir)


@dataclass
class SAESet:
    """The gated SAE of each block for one model under test, fetched on first use."""

    spec: str
    model: object
    sae_dir: str | None = None
    config: SAETrainingConfig | None = None
    cache_dir: str | None = None
    _saes: dict = field(default_factory=dict)

    def how_to_provide(self) -> str:
        return (f"E3 needs gated SAEs of {real_counterpart(self.spec)} blocks {', '.join(map(str, SAE_BLOCKS))}: "
                "pass --sae-dir DIR (trained SAEs, sae_lens format) or --sae-config FILE.json (trains them on "
                "TinyStories from the HF hub; mechinterp/sae_training.py)")

    def __getitem__(self, block: int):
        if block not in self._saes:
            self._saes[block] = self._fetch(block)
        return self._saes[block]

    def _fetch(self, block: int):
        hook = f"blocks.{block}.hook_resid_post"
        if self.sae_dir is not None:
            found = check_sae_dir(self.sae_dir)
            if hook not in found:
                pytest.skip(f"--sae-dir {self.sae_dir} has no SAE for {hook} (found: {', '.join(found) or 'none'})")
            return load_sae_dir(found[hook]) if (found[hook] / "training.json").exists() else _load_foreign(found[hook])
        if self.config is None:
            pytest.skip(self.how_to_provide())
        corpus = planted_corpus() if is_planted(self.spec) else None
        return train_sae(self.model, corpus, replace(self.config, block=block), cache_dir=self.cache_dir)


def _load_foreign(directory: Path):
    """An SAE trained elsewhere (no training.json): loaded as sae_lens saved it."""
    from sae_lens import SAE

    try:
        return SAE.load_from_disk(str(directory))
    except Exception as err:  # sae_lens raises KeyError/ValueError/safetensors errors for what check_sae_dir cannot see
        raise SAEOptionError(f"--sae-dir: cannot load the SAE in {directory} ({type(err).__name__}: {err})") from err


def context_corpus(spec: str) -> list[str]:
    """Text searched for max-activating contexts: the story corpus, or TinyStories validation stories."""
    if is_planted(spec):
        return planted_corpus()
    try:
        import datasets

        rows = datasets.load_dataset("roneneldan/TinyStories", split="validation", streaming=True)
        return [row["text"] for _, row in zip(range(TINYSTORIES_CONTEXT_STORIES), rows)]
    except Exception as err:  # offline, no cache: the datasets library raises many kinds
        pytest.skip(f"max-activating contexts need TinyStories text (HF datasets, roneneldan/TinyStories): {type(err).__name__}")


@pytest.fixture(scope="session")
def e3_sae_sets(request):
    """spec -> SAESet, built once per session from --sae-dir / --sae-config."""
    sets: dict[str, SAESet] = {}

    def get(subject) -> SAESet:
        if subject.spec not in sets:
            config_path = request.config.getoption("sae_config", None)
            sets[subject.spec] = SAESet(subject.spec, subject.model, request.config.getoption("sae_dir", None),
                                        read_sae_config(config_path, subject.planted))
        return sets[subject.spec]

    return get


# --- shared measurement pieces ----------------------------------------------------------------------


def protocol_batch(model) -> IOIBatch:
    return make_batch(tokenizer_for(model), protocol_prompts())


def role_values(match: features.RoleMatch) -> dict[str, float]:
    return {"feature_index": match.feature, "role_score": match.score, "role_runner_up": match.runner_up}


def role_details(match: features.RoleMatch, sae) -> dict:
    record = getattr(sae.cfg.metadata, "training_record", None) or {}
    return {
        "role": match.role, "description": features.ROLES[match.role].description, "feature": match.feature,
        "thesis_alias": match.alias, "sae_hook": sae.cfg.metadata.hook_name, "sae_width": sae.cfg.d_sae,
        "sae_quality": record.get("quality"), "sae_key": record.get("key"),
    }


def attention_ratio(result: features.AblationResult, head: tuple[int, int], targets: tuple[str, ...]) -> tuple[float, float, float]:
    """(before, after, after / before) of one head's END attention summed over `targets`."""
    table = result.attention[result.attention["head"] == f"{head[0]}.{head[1]}"].set_index("target")
    before = float(table.loc[list(targets), "before"].sum())
    after = float(table.loc[list(targets), "after"].sum())
    return before, after, (after / before if before > 0 else float("nan"))


def head_values(result: features.AblationResult, head: tuple[int, int], targets: tuple[str, ...], label: str) -> dict[str, float]:
    before, after, ratio = attention_ratio(result, head, targets)
    name = f"H{head[0]}.{head[1]}_END_to_{label}"
    return {f"{name}_before": before, f"{name}_after": after, f"{name}_after_over_before": ratio}


def behaviour_values(result: features.AblationResult) -> dict[str, float]:
    clean, ablated = result.p_io
    return {"p_io_clean": clean, "p_io_ablated": ablated, "p_io_ablated_over_clean": ablated / clean,
            "logit_diff_clean": result.logit_diff[0], "logit_diff_ablated": result.logit_diff[1]}


def ablation_figure(model, sae, feature: int, batch: IOIBatch, head: tuple[int, int], title: str):
    """One head's pattern on the first protocol prompt, before and after ablating `feature`."""
    before = attention_patterns(model, batch, [head])[0, 0]
    with model.hooks(fwd_hooks=[(sae.cfg.metadata.hook_name, features.projection_hook(sae.W_dec[feature]))]):
        after = attention_patterns(model, batch, [head])[0, 0]
    labels = [tokenizer_for(model).decode([t]) for t in batch.tokens[0].tolist()]
    return attention_before_after(before, after, labels, title)


# --- the claims -------------------------------------------------------------------------------------


def measure_l6_to_feature_collapse(model, saes: Mapping[int, object]) -> Measured:
    batch, sae = protocol_batch(model), saes[6]
    match = features.find_role(model, sae, "L6-to", batch)
    result = features.ablate_feature(model, sae, match.feature, batch, heads=[H77])
    values = {**role_values(match), **behaviour_values(result), **head_values(result, H77, ("IO", "S1", "S2"), "names")}
    figure = ablation_figure(model, sae, match.feature, batch, H77,
                             f"H7.7 before / after ablating layer-6 feature {match.feature} (role L6-to, thesis 1059; figs 3.24, 3.25)")
    details = {**role_details(match, sae), "top_activating_at_END": features.top_activating_features(model, sae, batch).to_dict("records"),
               "attention": result.attention.to_dict("records")}
    return Measured(values, figure, details)


def measure_l5_to_feature(model, saes: Mapping[int, object]) -> Measured:
    batch, sae = protocol_batch(model), saes[5]
    match = features.find_role(model, sae, "L5-to", batch)
    result = features.ablate_feature(model, sae, match.feature, batch, heads=[H611, H77])
    attribution = features.feature_attribution(model, sae, batch)
    values = {**role_values(match), **behaviour_values(result),
              **head_values(result, H611, ("IO", "S1", "S2"), "names"), **head_values(result, H77, ("IO",), "IO"),
              "attribution": attribution[match.feature].item()}
    figure = ablation_figure(model, sae, match.feature, batch, H611,
                             f"H6.11 before / after ablating layer-5 feature {match.feature} (role L5-to, thesis 44; figs 3.21, 3.22)")
    details = {**role_details(match, sae), "top_activating_at_END": features.top_activating_features(model, sae, batch).to_dict("records"),
               "attention": result.attention.to_dict("records")}
    return Measured(values, figure, details)


def verb_share(model, sae, feature: int, batch: IOIBatch) -> float:
    """Fraction of prompts whose strongest activation of `feature` (BOS excluded) is at the verb after S2."""
    acts = features.feature_acts(model, sae, batch.tokens)[:, 1:, feature]
    peak = acts.argmax(-1) + 1
    return (peak == batch.pos("verb").to(peak.device)).double().mean().item()


def measure_l5_gave_feature(model, saes: Mapping[int, object]) -> Measured:
    batch, sae = protocol_batch(model), saes[5]
    match = features.find_role(model, sae, "L5-gave", batch)
    result = features.ablate_feature(model, sae, match.feature, batch, heads=[H77, H611])
    values = {**role_values(match), "attribution_over_runner_up": match.score / max(match.runner_up, 1e-9),
              "verb_share": verb_share(model, sae, match.feature, batch), **behaviour_values(result),
              **head_values(result, H77, ("IO",), "IO"), **head_values(result, H611, ("IO", "S1", "S2"), "names")}
    figure = ablation_figure(model, sae, match.feature, batch, H77,
                             f"H7.7 before / after ablating layer-5 feature {match.feature} (role L5-gave, thesis 2338)")
    top = features.top_attributed_features(match.values, k=5)  # the role's rule is the attribution
    details = {**role_details(match, sae), "top_attribution": top.to_dict("records"), "attention": result.attention.to_dict("records")}
    return Measured(values, figure, details)


def measure_l5_infinitive_to(model, saes: Mapping[int, object]) -> Measured:
    batch, sae = protocol_batch(model), saes[5]
    match = features.find_role(model, sae, "L5-infinitive-to", batch)
    later = list(range(features.sae_block(sae) + 1, model.cfg.n_layers))
    to_id = single_token_id(tokenizer_for(model), " to")
    before = features.attention_to_token(model, batch, to_id, later)
    with model.hooks(fwd_hooks=[(sae.cfg.metadata.hook_name, features.projection_hook(sae.W_dec[match.feature]))]):
        after = features.attention_to_token(model, batch, to_id, later)
    values = {**role_values(match), "to_attention_before": before, "to_attention_after": after,
              "to_attention_after_over_before": after / max(before, 1e-9)}
    head = (later[0], 0)
    figure = ablation_figure(model, sae, match.feature, batch, head,
                             f"H{head[0]}.{head[1]} before / after ablating layer-5 feature {match.feature} (role L5-infinitive-to, thesis 1276; fig 3.23)")
    return Measured(values, figure, {**role_details(match, sae), "later_layers": later})


def measure_l6_negative_names(model, saes: Mapping[int, object], corpus: list[str]) -> Measured:
    batch, sae = protocol_batch(model), saes[6]
    match = features.find_role(model, sae, "L6-negative-names", batch)
    contexts = features.max_activating_contexts(model, sae, match.feature, corpus, k=10)
    values = {**role_values(match), "attribution": match.score,
              "attribution_over_runner_up": match.score / match.runner_up if match.runner_up < 0 else float("inf"),
              "name_share_top_contexts": features.name_share(contexts["token"].tolist())}
    bottom = features.top_attributed_features(match.values, k=5, most_negative=True)  # the role's rule is the attribution
    figure = tables_figure({"most negative attribution, layer 6 (table 3.8)": bottom,
                            f"max-activating contexts of feature {match.feature} (table 3.9)": contexts[["activation", "token", "context"]]},
                           "Role L6-negative-names (thesis 2837)")
    return Measured(values, figure, {**role_details(match, sae), "contexts": contexts.to_dict("records")})


def measure_l7_logit_feature(model, saes: Mapping[int, object]) -> Measured:
    batch, sae = protocol_batch(model), saes[7]
    match = features.find_role(model, sae, "L7-logit", batch)
    unembed = features.decoder_top_tokens(model, sae, match.feature, k=10)
    values = {**role_values(match), "attribution_over_runner_up": match.score / max(match.runner_up, 1e-9),
              "name_share_top_unembed_tokens": features.name_share(unembed["token"].tolist()),
              "top_unembed_token_is_name": float(features.is_name(unembed["token"].iloc[0]))}
    top = features.top_attributed_features(match.values, k=5)  # the role's rule is the attribution
    figure = tables_figure({"top attribution, layer 7 (s3.5.3)": top, f"W_dec[{match.feature}] @ W_U, top tokens": unembed},
                           "Role L7-logit (thesis 1854)")
    return Measured(values, figure, {**role_details(match, sae), "unembed_top_tokens": unembed.to_dict("records")})


def measure_random_control(model, saes: Mapping[int, object], corpus: list[str], blocks=RANDOM_CONTROL_BLOCKS) -> Measured:
    """Mean |delta P(IO)| over random live features of each block (firing on `corpus`); the role
    features of that block and their near-copies (decoder cosine >= ROLE_COPY_COSINE) are excluded."""
    batch = protocol_batch(model)
    values, deltas, marked, details = {}, [], {}, {}
    for block in blocks:
        sae = saes[block]
        roles = [r for r in features.ROLES.values() if r.block == block]
        matches = [features.find_role(model, sae, r, batch) for r in roles]
        role_features = sorted({m.feature for m in matches})
        excluded = features.near_duplicates(sae, role_features, ROLE_COPY_COSINE)
        live = features.firing_rates(model, sae, corpus[:RANDOM_CONTROL_LIVE_TEXTS]) > 0
        control = features.random_feature_control(model, sae, batch, RANDOM_CONTROL_FEATURES, seed=block,
                                                  exclude=excluded, live=live)
        values[f"mean_abs_delta_p_io_L{block}"] = control["delta_p_io"].abs().mean().item()
        values[f"max_abs_delta_p_io_L{block}"] = control["delta_p_io"].abs().max().item()
        values[f"live_features_L{block}"] = int(live.sum())
        values[f"excluded_role_copies_L{block}"] = len(excluded) - len(role_features)
        deltas += control["delta_p_io"].tolist()
        (top,) = [m.feature for m, r in zip(matches, roles) if r.rule == "top-activation-at-END"]
        marked[f"top feature at END, L{block} ({top})"] = features.ablate_feature(model, sae, top, batch).delta_p_io
        details[f"L{block}"] = {"role_features": role_features, "excluded": excluded, "ablations": control.to_dict("records")}
    figure = control_histogram(deltas, marked, f"Random live feature ablations, layers {', '.join(map(str, blocks))} (s3.5.1)")
    return Measured(values, figure, details)


# --- tests ------------------------------------------------------------------------------------------


def check_claim(request, subject, check, measured: Measured) -> None:
    """check(measured), except on the planted twin with its default SAEs for a claim in PLANTED_TWIN_GAPS:
    an expected failure. The gaps were measured with PLANTED_SAE_CONFIG; SAEs from --sae-config or
    --sae-dir (regression runs) are checked plainly, whatever they show."""
    claim = claim_of(request.node)
    default_saes = request.config.getoption("sae_dir", None) is None and request.config.getoption("sae_config", None) is None
    gap = PLANTED_TWIN_GAPS.get(claim) if subject.spec == PLANTED_TWIN and default_saes else None
    if gap is None:
        check(measured)
        return
    try:
        check(measured)
    except AssertionError as failure:
        pytest.xfail(f"known gap of {PLANTED_TWIN}: {gap}. {failure}")
    pytest.fail(f"{claim} now passes on {PLANTED_TWIN}: remove it from PLANTED_TWIN_GAPS")


@pytest.mark.claim("E3.L6-to-feature-collapse")
def test_l6_to_feature_collapse(request, subject, check, e3_sae_sets):
    check_claim(request, subject, check, measure_l6_to_feature_collapse(subject.model, e3_sae_sets(subject)))


@pytest.mark.claim("E3.L5-to-feature")
def test_l5_to_feature(request, subject, check, e3_sae_sets):
    check_claim(request, subject, check, measure_l5_to_feature(subject.model, e3_sae_sets(subject)))


@pytest.mark.claim("E3.L5-gave-feature")
def test_l5_gave_feature(request, subject, check, e3_sae_sets):
    check_claim(request, subject, check, measure_l5_gave_feature(subject.model, e3_sae_sets(subject)))


@pytest.mark.claim("E3.L5-infinitive-to")
def test_l5_infinitive_to(request, subject, check, e3_sae_sets):
    check_claim(request, subject, check, measure_l5_infinitive_to(subject.model, e3_sae_sets(subject)))


@pytest.mark.claim("E3.L6-negative-names")
def test_l6_negative_names(request, subject, check, e3_sae_sets):
    saes = e3_sae_sets(subject)
    check_claim(request, subject, check, measure_l6_negative_names(subject.model, saes, context_corpus(subject.spec)))


@pytest.mark.claim("E3.L7-logit-feature")
def test_l7_logit_feature(request, subject, check, e3_sae_sets):
    check_claim(request, subject, check, measure_l7_logit_feature(subject.model, e3_sae_sets(subject)))


@pytest.mark.claim("E3.random-control")
def test_random_control(request, subject, check, e3_sae_sets):
    saes = e3_sae_sets(subject)
    check_claim(request, subject, check, measure_random_control(subject.model, saes, context_corpus(subject.spec)))
