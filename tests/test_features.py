"""mechinterp/features.py on a small float64 random model and a random gated SAE: exact properties
of the ablation, attribution against finite differences, contexts and unembedding by construction.
The ablation, attribution and top tables also on a random SAE of every other architecture the
training config offers (sae_config.ARCHITECTURE_KNOBS): features.py reads only encode and W_dec.

Ground truth on a planted model (a trained SAE recovers the planted directions) is in
tests/test_sae_training.py; the E3 claims on planted twins and mutants in tests/test_claim_pairs_e3.py.
"""

from __future__ import annotations

import functools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformer_lens import HookedTransformer, HookedTransformerConfig

from fixtures.tokenizer import gpt2_tokenizer
from mechinterp import features
from mechinterp.ioi import make_batch, protocol_prompts
from mechinterp.metrics import logit_diff
from mechinterp.sae_config import ARCHITECTURE_KNOBS

HOOK = "blocks.1.hook_resid_post"


@functools.lru_cache(maxsize=None)
def small_model() -> HookedTransformer:
    """Seeded 3-layer float64 model with GPT-2's vocabulary; shared, so tests leave it unchanged."""
    cfg = HookedTransformerConfig(
        n_layers=3, d_model=32, n_heads=4, d_head=8, d_mlp=64, d_vocab=50257, n_ctx=64,
        act_fn="gelu", seed=0, initializer_range=0.3, normalization_type="LN", dtype=torch.float64,
    )
    return HookedTransformer(cfg, tokenizer=gpt2_tokenizer()).eval()


ARCHITECTURES = tuple(ARCHITECTURE_KNOBS)


@functools.lru_cache(maxsize=None)
def random_sae(d_sae: int = 96, seed: int = 0, architecture: str = "gated"):
    """An SAE of `architecture` (sae_lens's inference class) at HOOK with random weights and biases chosen so a
    good share of features fire (TopK: a quarter of them per token; JumpReLU: above a small threshold)."""
    from sae_lens.registry import get_sae_class
    from sae_lens.saes.sae import SAEMetadata

    sae_class, config_class = get_sae_class(architecture)
    extra = {"k": d_sae // 4} if architecture == "topk" else {}
    torch.manual_seed(seed)
    sae = sae_class(config_class(d_in=32, d_sae=d_sae, dtype="float64", metadata=SAEMetadata(hook_name=HOOK), **extra))
    with torch.no_grad():
        sae.W_enc.normal_(0, 0.3)
        sae.W_dec.normal_(0, 0.3)
        for name, parameter in sae.named_parameters():  # gated: b_gate, b_mag; the others: b_enc
            if name in ("b_gate", "b_mag", "b_enc"):
                parameter.fill_(0.1)
            elif name == "threshold":  # jumprelu
                parameter.fill_(0.05)
    return sae


def silence(sae, feature: int) -> None:
    """Make `feature` never fire: its pre-activation bias far below zero."""
    with torch.no_grad():
        dict(sae.named_parameters()).get("b_gate", sae.b_enc)[feature] = -1e6


@functools.lru_cache(maxsize=None)
def protocol_batch():
    return make_batch(gpt2_tokenizer(), protocol_prompts())


def end_logits(model, batch, hooks=()):
    with torch.no_grad(), model.hooks(fwd_hooks=list(hooks)):
        return model(batch.tokens)[torch.arange(len(batch)), batch.pos("END")]


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), n_directions=st.integers(1, 3))
def test_ablating_directions_absent_from_the_residual_changes_nothing(seed, n_directions):
    """Directions orthogonal to the residual at every position: the projection is the identity."""
    model, batch = small_model(), protocol_batch()
    prompt = make_batch(gpt2_tokenizer(), protocol_prompts()[:1])  # 17 positions < d_model 32: room to be orthogonal
    resid = features.residual_at(model, prompt.tokens, HOOK)[0]  # [seq, d_model]
    generator = torch.Generator().manual_seed(seed)
    raw = torch.randn(n_directions, 32, generator=generator, dtype=torch.float64)
    basis, _ = torch.linalg.qr(resid.T)  # span of the residuals
    orthogonal = raw - (raw @ basis) @ basis.T
    assert (resid @ orthogonal.T).abs().max() < 1e-10
    clean = end_logits(model, prompt)
    ablated = end_logits(model, prompt, [(HOOK, features.projection_hook(orthogonal))])
    torch.testing.assert_close(ablated, clean, rtol=0, atol=1e-9)
    assert batch  # the shared batch stays usable


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), n_directions=st.integers(1, 4))
def test_ablation_is_idempotent_and_removes_the_span(seed, n_directions):
    model, batch = small_model(), protocol_batch()
    directions = torch.randn(n_directions, 32, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    hook = features.projection_hook(directions)
    once = end_logits(model, batch, [(HOOK, hook)])
    twice = end_logits(model, batch, [(HOOK, hook), (HOOK, hook)])
    torch.testing.assert_close(twice, once, rtol=0, atol=1e-9)
    resid = features.residual_at(model, batch.tokens, HOOK)
    assert (hook(resid, None) @ directions.T).abs().max() < 1e-9


def test_ablation_changes_behaviour_when_the_direction_is_present():
    """The control for the two properties above: removing a direction the residual uses does change logits."""
    model, batch = small_model(), protocol_batch()
    resid = features.residual_at(model, batch.tokens, HOOK)
    used = resid[:, -1].mean(0)  # the mean END residual
    clean = end_logits(model, batch)
    ablated = end_logits(model, batch, [(HOOK, features.projection_hook(used))])
    assert (ablated - clean).abs().max() > 1e-3


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_ablation_footprint_is_the_share_of_its_token_the_projection_removes(architecture):
    """Known answers: the share is what projection_hook takes from the peak token's squared norm; a decoder row
    equal to that token's residual takes all of it (1); a prompt where the feature is silent has none (NaN)."""
    import copy

    model, batch, sae = small_model(), protocol_batch(), random_sae(architecture=architecture)
    resid = features.residual_at(model, batch.tokens, HOOK)
    acts = sae.encode(resid)[:, 1:]
    feature = int((acts.amax(1) > 0).all(0).double().mul(acts.amax((0, 1))).argmax())  # fires on every prompt
    table = features.ablation_footprint(model, sae, feature, batch)
    rows = torch.arange(len(batch))
    x = resid[rows, torch.tensor(table["position"].tolist())]
    removed = (x * x).sum(-1) - (features.projection_hook(sae.W_dec[feature])(x, None) ** 2).sum(-1)
    torch.testing.assert_close(torch.tensor(table["removed_share"].tolist(), dtype=torch.float64),
                               removed / (x * x).sum(-1), rtol=0, atol=1e-9)
    assert (table["activation"] > 0).all() and table["removed_share"].between(0, 1).all()

    whole = copy.deepcopy(sae)  # the encoder is untouched, so the peaks stay where they were
    with torch.no_grad():
        whole.W_dec[feature] = x[0]
    assert features.ablation_footprint(model, whole, feature, batch)["removed_share"][0] == pytest.approx(1, abs=1e-9)

    silent = copy.deepcopy(sae)
    silence(silent, feature)
    assert features.ablation_footprint(model, silent, feature, batch)["removed_share"].isna().all()


def test_direction_attribution_matches_finite_differences():
    """direction_attribution at (subspace, position) = d/de metric(resid - e * x's part in the subspace there) at
    e = 0, times -1: the first-order change of removing that part; rows cover every text position (not BOS)."""
    model, batch = small_model(), protocol_batch()
    generator = torch.Generator().manual_seed(0)
    basis, _ = torch.linalg.qr(torch.randn(model.cfg.d_model, 3, generator=generator))
    subspaces = {"random-3": basis.T.float(), "first-axis": torch.eye(model.cfg.d_model)[:1]}
    table = features.direction_attribution(model, batch, HOOK, subspaces)
    assert len(table) == 2 * (batch.tokens.shape[1] - 1) and 0 not in set(table["position"])
    eps = 1e-4
    for name, position in (("random-3", 1), ("random-3", 4), ("first-axis", 2)):
        rows = subspaces[name]

        def metric_at(e):
            def remove(resid, hook):  # noqa: ARG001
                r = rows.to(resid.dtype)
                part = (resid[:, position] @ r.T) @ r
                resid = resid.clone()
                resid[:, position] -= e * part
                return resid

            with torch.no_grad():
                return logit_diff(model.run_with_hooks(batch.tokens, fwd_hooks=[(HOOK, remove)]), batch).item()

        numeric = -(metric_at(eps) - metric_at(-eps)) / (2 * eps)
        (measured,) = table[(table["subspace"] == name) & (table["position"] == position)]["attribution"]
        assert measured == pytest.approx(numeric, rel=1e-3, abs=1e-6)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_feature_attribution_matches_finite_differences(architecture):
    """attribution[f] = d/de metric(resid + e * a_f * W_dec[f]) at e = 0, summed over text positions (not BOS)."""
    model, sae, batch = small_model(), random_sae(architecture=architecture), protocol_batch()
    attribution = features.feature_attribution(model, sae, batch)
    acts = features.feature_acts(model, sae, batch.tokens)  # [batch, seq, d_sae]
    acts[:, 0] = 0  # BOS: left out of the attribution
    firing = [int(f) for f in acts.sum((0, 1)).topk(5).indices]
    assert acts.sum((0, 1))[firing].min() > 0, "the random SAE must have firing features to test"
    eps = 1e-5
    for f in firing:
        shift = acts[..., f, None] * sae.W_dec[f]  # [batch, seq, d_model]

        def metric_at(e):
            def add(resid, hook):  # noqa: ARG001
                return resid + e * shift

            with torch.no_grad():
                return logit_diff(model.run_with_hooks(batch.tokens, fwd_hooks=[(HOOK, add)]), batch).item()

        numeric = (metric_at(eps) - metric_at(-eps)) / (2 * eps)
        assert attribution[f].item() == pytest.approx(numeric, rel=1e-5, abs=1e-8)
    silent = (acts.sum((0, 1)) == 0).nonzero()[:, 0]
    assert torch.all(attribution[silent] == 0)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_top_tables_agree_with_activations_and_attribution(architecture):
    model, sae, batch = small_model(), random_sae(architecture=architecture), protocol_batch()
    at_end = features.acts_at(model, sae, batch, "END").mean(0)
    table = features.top_activating_features(model, sae, batch, "END", k=3)
    assert table.feature.tolist() == at_end.topk(3).indices.tolist()
    attribution = torch.tensor([0.5, -2.0, 3.0, 0.0, -0.1], dtype=torch.float64)
    assert features.top_attributed_features(attribution, k=2).feature.tolist() == [2, 0]
    negative = features.top_attributed_features(attribution, k=2, most_negative=True)
    assert negative.feature.tolist() == [1, 4] and negative.attribution.tolist() == [-2.0, -0.1]


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_ablate_feature_reports_behaviour_and_head_attention(architecture):
    model, sae, batch = small_model(), random_sae(architecture=architecture), protocol_batch()
    feature = int(features.acts_at(model, sae, batch, "END").mean(0).argmax())
    result = features.ablate_feature(model, sae, feature, batch, heads=[(2, 1)])
    with torch.no_grad():
        logits = model(batch.tokens)
    from mechinterp.metrics import p_io

    assert result.p_io[0] == pytest.approx(p_io(logits, batch).item())
    assert set(result.attention.target) == {"IO", "S1", "S2"} and set(result.attention["head"]) == {"2.1"}
    assert result.attention_after_over_before("2.1", "IO") > 0
    with pytest.raises(ValueError, match="out of range"):
        features.ablate_feature(model, sae, sae.cfg.d_sae, batch)


def test_random_feature_control_is_reproducible_and_excludes():
    model, sae, batch = small_model(), random_sae(), protocol_batch()
    first = features.random_feature_control(model, sae, batch, n_features=4, seed=3, exclude=[0, 1])
    again = features.random_feature_control(model, sae, batch, n_features=4, seed=3, exclude=[0, 1])
    assert first.equals(again)
    assert not set(first.feature) & {0, 1}
    with pytest.raises(ValueError, match="only"):
        features.random_feature_control(model, sae, batch, n_features=sae.cfg.d_sae, exclude=[0])


def test_firing_rates_count_text_tokens_one_text_at_a_time():
    model, sae = small_model(), random_sae()
    texts = ["Lily gave the ball to Tom.", "Once upon a time there was a dog.", "Tom wanted to play."]
    rates = features.firing_rates(model, sae, texts, batch_size=2)  # padded batches of 2
    active, n_tokens = torch.zeros(sae.cfg.d_sae, dtype=torch.float64), 0
    for text in texts:
        ids = [model.tokenizer.bos_token_id] + model.tokenizer.encode(text, add_special_tokens=False)
        acts = features.feature_acts(model, sae, torch.tensor([ids]))[0, 1:]  # BOS is not text
        active += (acts > 0).sum(0).double()
        n_tokens += acts.shape[0]
    torch.testing.assert_close(rates, active / n_tokens, rtol=0, atol=1e-12)
    assert 0 < int((rates > 0).sum()) < sae.cfg.d_sae  # some live, some dead: the test can tell them apart


def test_random_feature_control_draws_only_live_features():
    model, sae, batch = small_model(), random_sae(), protocol_batch()
    live = torch.zeros(sae.cfg.d_sae, dtype=torch.bool)
    live[[3, 5, 8, 13, 21]] = True
    control = features.random_feature_control(model, sae, batch, n_features=4, seed=0, exclude=[5], live=live)
    assert set(control.feature) == {3, 8, 13, 21}
    with pytest.raises(ValueError, match="only 4 are available"):
        features.random_feature_control(model, sae, batch, n_features=5, exclude=[5], live=live)
    population = features.random_feature_control(model, sae, batch, n_features=None, exclude=[5], live=live)
    assert population.feature.tolist() == [3, 8, 13, 21]  # every live feature once, none excluded
    drawn = control.set_index("feature").delta_p_io
    torch.testing.assert_close(torch.tensor(population.set_index("feature").delta_p_io[drawn.index].tolist()),
                               torch.tensor(drawn.tolist()), rtol=0, atol=1e-6)  # the draw is a subset of it


def test_max_activating_contexts_point_at_the_activation():
    model, sae = small_model(), random_sae()
    texts = ["Lily gave the ball to Tom.", "Once upon a time there was a dog.", "Tom wanted to play."]
    feature = 5
    table = features.max_activating_contexts(model, sae, feature, texts, k=4, batch_size=2)
    assert len(table) == 4 and table.activation.is_monotonic_decreasing
    top = table.iloc[0]
    ids = [model.tokenizer.bos_token_id] + model.tokenizer.encode(texts[top.text_index], add_special_tokens=False)
    single = features.feature_acts(model, sae, torch.tensor([ids]))[0, :, feature]
    assert top.activation == pytest.approx(single[1:].max().item(), rel=1e-9)  # padding and batching change nothing
    assert single[top.position].item() == pytest.approx(top.activation, rel=1e-9)
    assert f"«{top.token}»" in top.context


def test_decoder_top_tokens_finds_a_planted_unembedding_direction():
    model, sae = small_model(), random_sae()
    mary = gpt2_tokenizer().encode(" Mary", add_special_tokens=False)[0]
    planted = sae.W_dec.detach().clone()
    planted[7] = model.W_U[:, mary] / model.W_U[:, mary].norm()
    # The unembedding direction of " Mary" raises " Mary" most unless another column is nearly parallel.
    from sae_lens.saes.gated_sae import GatedSAE

    copy = GatedSAE(sae.cfg)
    copy.load_state_dict({**sae.state_dict(), "W_dec": planted})
    top = features.decoder_top_tokens(model, copy, 7, k=3)
    assert top.token_id.iloc[0] == mary and top.token.iloc[0] == " Mary"


def test_roles_and_rules():
    model, sae, batch = small_model(), random_sae(), protocol_batch()
    assert {r.alias for r in features.ROLES.values()} == {1059, 44, 2338, 1276, 2837, 1854}
    assert all(r.rule in features.RULES for r in features.ROLES.values())
    role = features.FeatureRole("test-top", 1, "top-activation-at-END", 0, "")
    match = features.find_role(model, sae, role, batch)
    assert match.feature == int(features.acts_at(model, sae, batch, "END").mean(0).argmax())
    assert match.score >= match.runner_up
    negative = features.find_role(model, sae, features.FeatureRole("neg", 1, "bottom-attribution", 0, ""), batch)
    attribution = features.feature_attribution(model, sae, batch)
    assert negative.feature == int(attribution.argmin()) and negative.score == pytest.approx(attribution.min().item())
    with pytest.raises(ValueError, match="block-6"):
        features.find_role(model, sae, "L6-to", batch)
    tokens, positions = features.infinitive_to_batch(gpt2_tokenizer())
    to_id = gpt2_tokenizer().encode(" to", add_special_tokens=False)[0]
    assert all(tokens[i, p] == to_id for i, p in enumerate(positions.tolist()))


def test_near_duplicates_are_features_with_nearly_the_same_decoder_direction():
    from sae_lens.saes.gated_sae import GatedSAE, GatedSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    sae = GatedSAE(GatedSAEConfig(d_in=4, d_sae=4, dtype="float64", metadata=SAEMetadata(hook_name=HOOK)))
    with torch.no_grad():
        sae.W_dec.copy_(torch.tensor([[1.0, 0, 0, 0], [0.95, 0.31, 0, 0], [0.5, 0.87, 0, 0], [0, 0, 3.0, 0]], dtype=torch.float64))
    assert features.near_duplicates(sae, [0]) == [0, 1]  # cos 0.95 is a copy, cos 0.5 is not
    assert features.near_duplicates(sae, [3], min_cosine=0.9) == [3]  # the norm plays no part
    assert features.near_duplicates(sae, []) == []


def test_ablations_side_by_side_equal_one_at_a_time():
    """Copies of the batch in one forward, each under its own projection: P(IO) as k separate runs give it,
    and the clean run's memo and END-only unembedding give what a full forward gives (float64)."""
    from mechinterp.metrics import p_io

    model, sae, batch = small_model(), random_sae(), protocol_batch()
    features_ = [3, 17, 40, 95]
    together = features.p_io_with_each_projected_out(model, batch, HOOK, sae.W_dec[features_])
    for feature, value in zip(features_, together.tolist()):
        alone = features.ablate_feature(model, sae, feature, batch).p_io[1]
        assert value == pytest.approx(alone, rel=1e-9, abs=1e-12)
    with torch.no_grad():
        full = p_io(model(batch.tokens), batch).item()
    assert features.ablate_feature(model, sae, 3, batch).p_io[0] == pytest.approx(full, rel=1e-9)
