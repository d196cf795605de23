"""Ground truth: the planted twins do what their docstrings say; every mutant differs in its one thing.

Everything is measured directly from hooks (attention patterns, residual projections, head outputs),
never through mechinterp's analyses, which these models exist to validate. Bounds are set from the
construction (fixtures/planted/*.py docstrings give the designed scores); each says where it comes
from. Head scores use repeated random tokens of lengths 20 and 50 (BOS + x + x), the protocol of
mechinterp.head_scores; those are the lengths verified here.
"""

from __future__ import annotations

import pytest
import torch

from fixtures.corpus import story_corpus
from fixtures.planted import MUTANTS, TWINS, PlantingError, build
from fixtures.planted.mutants import REGISTRY
from fixtures.planted.vocab import BOUNDARY_TOKENS, PLANTED_GIVING_VERBS, token_ids
from fixtures.tokenizer import gpt2_tokenizer
from mechinterp import features
from mechinterp.ioi import corrupt_s2_to_io, make_batch, patching_pair, protocol_prompts
from mechinterp.metrics import logit_diff, p_io

TS, G2 = "tinystories-8m", "gpt2-small"
_MODELS: dict[str, object] = {}


def model(name: str):
    """Build once per test session (the builds are deterministic; tests never change weights)."""
    if name not in _MODELS:
        _MODELS[name] = build(name)
    return _MODELS[name]


@pytest.fixture(scope="module")
def batch():
    return make_batch(gpt2_tokenizer(), protocol_prompts())


def run(m, tokens, hooks=(), logits: bool = True):
    """Logits (None with logits=False: the vocabulary-sized unembedding is skipped) and every layer's
    attention pattern [batch, head, query, key]."""
    patterns = {}

    def keep(pattern, hook):
        patterns[hook.layer()] = pattern.detach()

    hooks = list(hooks) + [(f"blocks.{layer}.attn.hook_pattern", keep) for layer in range(m.cfg.n_layers)]
    with torch.no_grad():
        out = m.run_with_hooks(tokens, fwd_hooks=hooks, stop_at_layer=None if logits else m.cfg.n_layers)
    return (out if logits else None), patterns


def attention(patterns, head, batch, query: str, key) -> float:
    """Mean attention of `head` from position `query` to position(s) `key` (a name or a tensor)."""
    layer, h = head
    rows = torch.arange(len(batch))
    keys = batch.pos(key) if isinstance(key, str) else key
    return patterns[layer][rows, h, batch.pos(query), keys].mean().item()


def names_attention(patterns, head, batch) -> float:
    return sum(attention(patterns, head, batch, "END", k) for k in ("IO", "S1", "S2"))


def project_out(direction: torch.Tensor):
    """Hook: x -> x - (x . u) u at every position (the thesis's feature ablation)."""
    u = direction / direction.norm()

    def hook(x, hook):
        return x - (x @ u)[..., None] * u

    return hook


# ---- shape, tokenizer, determinism -------------------------------------------------------------


@pytest.mark.parametrize("name, shape", [
    (TS, dict(n_layers=8, d_model=256, n_heads=16, d_head=16, d_mlp=1024, d_vocab=50257)),
    (G2, dict(n_layers=12, d_model=768, n_heads=12, d_head=64, d_mlp=3072, d_vocab=50257, n_ctx=1024)),
])
def test_real_shape_and_tokenizer(name, shape):
    m = model(name)
    for key, value in shape.items():
        assert getattr(m.cfg, key) == value, key
    assert m.tokenizer.bos_token_id == 50256
    tokens = m.to_tokens("When John and Mary went to the shops, John gave the bag to")
    assert tokens[0, 0].item() == 50256 and tokens.shape == (1, 15)
    info = m.planted
    assert info.name == name and info.description == TWINS[name]
    assert "Mary" in info.names and len(info.name_token_ids) == len(info.names)
    for d in info.directions.values():
        assert d.shape == (m.cfg.d_model,) and abs(d.norm().item() - 1) < 1e-5


def test_directions_and_roles_named_as_documented():
    ts, g2 = model(TS).planted, model(G2).planted
    assert set(ts.directions) == {"to@5", "to@6", "verb@5", "infinitive-to@5", "names@6"}
    assert ts.head_roles[(4, 0)] == "duplicate-token" and ts.head_roles[(5, 7)] == "s-inhibition"
    assert ts.head_roles[(7, 7)] == "name-mover" and ts.head_roles[(6, 11)] == "secondary-name-mover"
    assert ts.heads_with_role("previous-token") == [(1, 5), (2, 9)]
    assert not ts.heads_with_role("induction") and not ts.heads_with_role("negative-name-mover")
    assert g2.heads_with_role("previous-token") == [(2, 2), (4, 11)]
    assert g2.heads_with_role("induction") == [(5, 5), (6, 9)]
    assert g2.heads_with_role("duplicate-token") == [(0, 5), (3, 0)]
    assert g2.heads_with_role("name-mover") == [(9, 6), (9, 9), (10, 0)]
    assert g2.heads_with_role("negative-name-mover") == [(10, 7), (11, 10)]
    assert g2.heads_with_role("s-inhibition") == [(7, 3), (7, 9), (8, 6), (8, 10)]


def test_build_is_deterministic_and_seeded(batch):
    again = build(TS)
    for (key, a), b in zip(model(TS).state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), key
    other = build(TS, seed=1)  # other codes and rotation, same construction
    assert not torch.equal(other.embed.W_E, again.embed.W_E)
    ld0 = logit_diff(run(again, batch.tokens)[0], batch).item()
    ld1 = logit_diff(run(other, batch.tokens)[0], batch).item()
    assert abs(ld0 - ld1) < 0.05  # designed behaviour does not depend on the seed
    with pytest.raises(PlantingError, match="unknown planted model"):
        build("tinystories-8m/nonsense")


# ---- IOI behaviour -------------------------------------------------------------------------------


@pytest.mark.parametrize("name, target, min_p_io", [(TS, 9.4, 0.7), (G2, 3.6, 0.4)])
def test_does_ioi_on_protocol_prompts(name, target, min_p_io, batch):
    """Gains are set so the designed attention gives the thesis's logit difference (TS 9.4, GPT-2 3.6)
    and P(IO) 0.773 (TS) / 0.5 (GPT-2); the 0.15 band (the claim's tolerance) covers the small gap
    between designed and measured attention."""
    logits, _ = run(model(name), batch.tokens)
    per_prompt = logit_diff(logits, batch, per_prompt=True)
    assert (per_prompt > 0).all()
    assert abs(per_prompt.mean().item() - target) < 0.15
    assert p_io(logits, batch).item() > min_p_io


def test_tinystories_planted_heads(batch):
    """Designed scores (tinystories.py docstring) -> attention on the protocol prompts."""
    _, pat = run(model(TS), batch.tokens)
    assert attention(pat, (7, 7), batch, "END", "IO") >= 0.7  # design 0.77
    for s in ("S1", "S2"):
        assert attention(pat, (7, 7), batch, "END", s) <= 0.06  # design 0.04
    assert attention(pat, (5, 7), batch, "END", "S2") >= 0.95  # 12 vs 6 (IO, S1) and 3 (position 0)
    assert attention(pat, (5, 7), batch, "verb", "S2") >= 0.95
    assert attention(pat, (5, 7), batch, "and", batch.pos("and") - 1) >= 0.9  # the name before "and": 6 vs 3
    assert abs(attention(pat, (4, 0), batch, "S2", "S1") - 1 / 3) < 0.01  # BOS, S1, S2 share
    for key in ("IO", "S1"):  # first occurrences: 9 each; S2 9 - 6 (dup); position 0 5
        assert attention(pat, (6, 11), batch, "END", key) >= 0.45
    assert attention(pat, (6, 11), batch, "END", "S2") <= 0.01
    for head in ((2, 3), (6, 3)):
        assert attention(pat, head, batch, "END", "verb") >= 0.99
    roles = model(TS).planted.head_roles
    for layer, p in pat.items():
        for h in range(p.shape[1]):
            if (layer, h) not in roles:  # resting: position 0 at every query, and nothing written
                assert p[:, h, :, 0].min() >= 0.99, (layer, h)
                assert model(TS).blocks[layer].attn.W_O[h].abs().max() == 0


def _direct_effects(m, batch):
    """Per-head direct logit difference at END [layers, heads], and accumulated-residual logit
    difference after each sublayer (embed, attn0, mlp0, ...): computed from hooks, without LN."""
    store = {}
    names = {f"blocks.{layer}.attn.hook_z" for layer in range(m.cfg.n_layers)}
    names |= {f"blocks.{layer}.hook_resid_{w}" for layer in range(m.cfg.n_layers) for w in ("pre", "mid")}
    names |= {f"blocks.{m.cfg.n_layers - 1}.hook_resid_post"}
    with torch.no_grad():
        _, cache = m.run_with_cache(batch.tokens, names_filter=lambda n: n in names, stop_at_layer=m.cfg.n_layers)
    rows = torch.arange(len(batch))
    end = batch.pos("END")
    direction = m.W_U[:, batch.io_token].T - m.W_U[:, batch.s_token].T  # [batch, d_model]
    heads = torch.stack([
        torch.einsum("bhd,hdm,bm->h", cache[f"blocks.{layer}.attn.hook_z"][rows, end], m.W_O[layer], direction)
        for layer in range(m.cfg.n_layers)
    ]) / len(batch)
    lens = []
    for layer in range(m.cfg.n_layers):
        for where in ("pre", "mid"):
            lens.append((cache[f"blocks.{layer}.hook_resid_{where}"][rows, end] * direction).sum(-1).mean().item())
    lens.append((cache[f"blocks.{m.cfg.n_layers - 1}.hook_resid_post"][rows, end] * direction).sum(-1).mean().item())
    store["heads"], store["lens"] = heads, torch.tensor(lens)
    return store


def test_tinystories_direct_effects_and_lens(batch):
    """Only H7.7 writes the logit difference (H6.11 lifts IO and S1 alike); the lens never falls."""
    eff = _direct_effects(model(TS), batch)
    heads, lens = eff["heads"], eff["lens"]
    total = lens[-1].item()
    assert heads[7, 7].item() >= 0.99 * total
    others = heads.clone()
    others[7, 7] = 0
    assert others.abs().max().item() <= 0.01 * total
    steps = lens.diff()
    # Monotone: no sublayer lowers the logit difference by more than H6.11's designed leak onto S2
    # (score 9 - 6 vs 9 on IO and S1: ~e^-6 of its attention, ~0.005 logits).
    assert steps.min().item() >= -0.01
    assert steps.argmax().item() == 14  # the step into resid_mid of layer 7: attention layer 7


def test_gpt2_circuit(batch):
    m = model(G2)
    _, pat = run(m, batch.tokens)
    for head in ((9, 9), (9, 6), (10, 0), (10, 7), (11, 10)):
        assert attention(pat, head, batch, "END", "IO") >= 0.8  # design 0.83
        assert attention(pat, head, batch, "END", "S2") <= 0.01  # inhibited by 8
    for head in ((7, 3), (7, 9), (8, 6), (8, 10)):
        assert attention(pat, head, batch, "END", "S2") >= 0.95
        assert attention(pat, head, batch, "verb", "S2") >= 0.95
    for head in ((0, 5), (3, 0)):
        assert attention(pat, head, batch, "S2", "S1") >= 0.95
    for head in ((5, 5), (6, 9)):
        assert attention(pat, head, batch, "S2", batch.pos("S1") + 1) >= 0.95  # induction: token after S1
    eff = _direct_effects(m, batch)
    heads, lens = eff["heads"], eff["lens"]
    for head in ((9, 9), (9, 6), (10, 0)):
        assert heads[head].item() > 0.3
    for head in ((10, 7), (11, 10)):
        assert heads[head].item() < -0.3  # negative name movers
    steps = lens.diff()  # embed->attn0, attn0->mlp0, ...: attention layer L is step 2L
    assert steps.argmax().item() == 18  # attention layer 9 writes the most
    assert steps[20].item() < 0 and steps[22].item() < 0  # the lens dips at layers 10 and 11


# ---- ablations (the intended effects) ------------------------------------------------------------


def test_tinystories_ablations(batch):
    m = model(TS)
    d = m.planted.directions
    logits, pat = run(m, batch.tokens)
    base_io_7, base_names_611 = attention(pat, (7, 7), batch, "END", "IO"), names_attention(pat, (6, 11), batch)

    # Zero-ablating H5.7's output: no S-inhibition, H7.7 moves S (twice) as much as IO.
    def no_h57(z, hook):
        z[:, :, 7] = 0
        return z

    logits_57, _ = run(m, batch.tokens, [("blocks.5.attn.hook_z", no_h57)])
    assert logit_diff(logits_57, batch).item() < 0

    # to@6 after block 6: H7.7 stops moving names, P(IO) collapses (thesis 77.3% -> 0.25%).
    logits_6, pat_6 = run(m, batch.tokens, [("blocks.6.hook_resid_post", project_out(d["to@6"]))])
    assert p_io(logits_6, batch).item() < 0.01
    assert names_attention(pat_6, (7, 7), batch) < 0.1

    # to@5 after block 5: H6.11 off, H7.7 keeps only the verb's share (thesis: 0.7 -> 0.3; P(IO) 4.8%).
    logits_5, pat_5 = run(m, batch.tokens, [("blocks.5.hook_resid_post", project_out(d["to@5"]))])
    assert p_io(logits_5, batch).item() < 0.05
    assert names_attention(pat_5, (6, 11), batch) < 0.1 * base_names_611
    assert 0.2 < attention(pat_5, (7, 7), batch, "END", "IO") < 0.7 * base_io_7

    # verb@5 after block 5: H7.7 falls (thesis 0.7 -> 0.3), H6.11 keeps its names.
    _, pat_v = run(m, batch.tokens, [("blocks.5.hook_resid_post", project_out(d["verb@5"]))], logits=False)
    assert attention(pat_v, (7, 7), batch, "END", "IO") < 0.7 * base_io_7
    assert abs(names_attention(pat_v, (6, 11), batch) - base_names_611) < 0.02

    # infinitive-to@5 after block 5: every head of layers 6-7 attends from END to the earlier "to".
    went_to = (batch.tokens == m.to_single_token(" to")).int().argmax(-1)  # the first " to": "went to"
    before = torch.stack([pat[layer][torch.arange(len(batch)), :, batch.pos("END"), went_to] for layer in (6, 7)])
    _, pat_i = run(m, batch.tokens, [("blocks.5.hook_resid_post", project_out(d["infinitive-to@5"]))], logits=False)
    after = torch.stack([pat_i[layer][torch.arange(len(batch)), :, batch.pos("END"), went_to] for layer in (6, 7)])
    assert before.mean().item() < 0.01 and after.mean().item() > 0.5

    # names@6 after block 6: H7.7 attends to the names wherever it looks (thesis s3.5.2, feature 2837:
    # "ablating it makes all previous heads pay attention to only the previous names").
    _, pat_n = run(m, batch.tokens, [("blocks.6.hook_resid_post", project_out(d["names@6"]))], logits=False)
    assert names_attention(pat_n, (7, 7), batch) > 0.95 > names_attention(pat, (7, 7), batch)


def test_tinystories_feature_attributions(batch):
    """Gradient x activation of each planted direction, summed over positions, mean over the 8
    prompts (the thesis's feature attribution, with the planted direction as the feature): the verb
    feature leads layer 5 (design: 0.7 vs 0.3 of to@6; thesis table 3.3: 2.6x the next), names@6 is
    strongly negative at layer 6."""
    m = model(TS)
    d = m.planted.directions

    def attribution(key: str, layer: int) -> float:
        table = features.direction_attribution(m, batch, f"blocks.{layer}.hook_resid_post", {key: d[key][None]})
        return table["attribution"].sum()

    verb, to5 = attribution("verb@5", 5), attribution("to@5", 5)
    assert verb > 2 * to5 > 0
    # Thesis table 3.8: the most negative layer-6 attribution (-7.79) is a name feature. Design: names@6
    # costs H7.7's IO 3 of score, about -4 logit difference per prompt at the margin.
    assert attribution("names@6", 6) < -1 and attribution("to@6", 6) > 0

def test_triggers_are_sparse_on_the_corpus():
    """Over 30 stories each trigger fires (> 1; designed 5) only where designed and is ~0 elsewhere."""
    m = model(TS)
    tok = m.tokenizer
    d = m.planted.directions
    to_id = m.to_single_token(" to")
    verbs = set(token_ids(tok, PLANTED_GIVING_VERBS))
    anchors = verbs | set(token_ids(tok, BOUNDARY_TOKENS, leading_space=False))
    hooks = ("blocks.5.hook_resid_post", "blocks.6.hook_resid_post")
    for text in story_corpus(30, seed=3):
        tokens = m.to_tokens(text)
        with torch.no_grad():
            _, cache = m.run_with_cache(tokens, names_filter=lambda n: n in hooks, stop_at_layer=7)
        ids = tokens[0].tolist()
        giving_to = []
        for i, t in enumerate(ids):
            last = max((j for j in range(i) if ids[j] in anchors), default=None)
            giving_to.append(t == to_id and last is not None and ids[last] in verbs)
        giving_to = torch.tensor(giving_to)
        is_to, is_verb = torch.tensor(ids) == to_id, torch.tensor([t in verbs for t in ids])
        expected = {"to@5": (5, giving_to), "to@6": (6, giving_to), "verb@5": (5, is_verb),
                    "infinitive-to@5": (5, is_to & ~giving_to)}
        for key, (layer, where) in expected.items():
            act = cache[f"blocks.{layer}.hook_resid_post"][0] @ d[key]
            assert (act[where] > 4.5).all(), (key, text)
            assert (act[~where].abs() < 0.1).all(), (key, text)


# ---- head scores on random tokens ----------------------------------------------------------------


def random_repeated_tokens(n: int, n_seq: int = 8, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.stack([torch.randperm(50256, generator=g)[:n] for _ in range(n_seq)])
    return torch.cat([torch.full((n_seq, 1), 50256), x, x], dim=1)


def head_scores(m, n: int) -> dict[str, torch.Tensor]:
    """[layers, heads] previous-token (first copy), duplicate-token and induction (second copy)."""
    _, pat = run(m, random_repeated_tokens(n), logits=False)
    p = torch.stack([pat[layer] for layer in range(m.cfg.n_layers)])  # [L, B, H, q, k]
    first = torch.arange(2, n + 1)  # query i -> i-1, i-1 not BOS
    second = torch.arange(n + 1, 2 * n + 1)
    return {
        "prev": p[:, :, :, first, first - 1].mean((1, 3)),
        "dup": p[:, :, :, second, second - n].mean((1, 3)),
        "induction": p[:, :, :, second, second - n + 1].mean((1, 3)),
    }


@pytest.mark.parametrize("n", [20, 50])
def test_head_scores_tinystories(n):
    s = head_scores(model(TS), n)
    for head in ((1, 5), (2, 9)):
        assert 0.25 <= s["prev"][head].item() <= 0.4  # design: e^10 / (e^10 + e^10.7) = 0.33
    assert abs(s["dup"][4, 0].item() - 1 / 3) < 0.02  # design: BOS, copy, self share
    others = s["dup"].clone()
    others[4, 0] = 0
    assert others.max().item() < 0.01
    assert s["induction"].max().item() < 0.01
    prev = s["prev"].clone()
    prev[1, 5] = prev[2, 9] = 0
    assert prev.max().item() < 0.01


@pytest.mark.parametrize("n", [20, 50])
def test_head_scores_gpt2(n):
    s = head_scores(model(G2), n)
    for name, heads in (("prev", [(2, 2), (4, 11)]), ("dup", [(0, 5), (3, 0)]), ("induction", [(5, 5), (6, 9)])):
        scores = s[name].clone()
        for head in heads:
            assert scores[head].item() >= 0.95, (name, head)
            scores[head] = 0
        assert scores.max().item() < 0.05, name


# ---- EAP ground truth ----------------------------------------------------------------------------


def test_eap_in_edges_tinystories():
    """Edge scores (corrupt - clean upstream output) . clean gradient at the downstream input, on the
    thesis's patching pair: H7.7's query reads H5.7 first, H5.7's value H4.0 first, and H7.7's value
    reads exactly the embedding and MLP0 (equal halves of the name code)."""
    m = model(TS)
    clean = make_batch(m.tokenizer, [patching_pair()[0]])
    corrupt = corrupt_s2_to_io(clean)
    ups = ["hook_embed"] + [f"blocks.{layer}.attn.hook_result" for layer in range(7)] + \
          [f"blocks.{layer}.hook_mlp_out" for layer in range(7)]
    m.set_use_split_qkv_input(True)
    m.set_use_attn_result(True)
    try:
        with torch.no_grad():
            _, c = m.run_with_cache(clean.tokens, names_filter=lambda n: n in ups)
            _, x = m.run_with_cache(corrupt.tokens, names_filter=lambda n: n in ups)
        grads = {}

        def keep(t, hook):
            t.retain_grad()
            grads[hook.name] = t

        downs = ["blocks.7.hook_q_input", "blocks.7.hook_v_input", "blocks.5.hook_v_input"]
        logits = m.run_with_hooks(clean.tokens, fwd_hooks=[(n, keep) for n in downs])
        logit_diff(logits, clean).backward()
    finally:
        m.set_use_split_qkv_input(False)
        m.set_use_attn_result(False)
        m.zero_grad(set_to_none=True)

    def in_edges(down: str, layer: int, head: int) -> dict[str, float]:
        g = grads[down].grad[:, :, head]
        out = {"embed": ((x["hook_embed"] - c["hook_embed"]) * g).sum().item()}
        for u in range(layer):
            r = x[f"blocks.{u}.attn.hook_result"] - c[f"blocks.{u}.attn.hook_result"]
            out |= {f"H{u}.{h}": (r[:, :, h] * g).sum().item() for h in range(m.cfg.n_heads)}
            out[f"MLP{u}"] = ((x[f"blocks.{u}.hook_mlp_out"] - c[f"blocks.{u}.hook_mlp_out"]) * g).sum().item()
        return dict(sorted(out.items(), key=lambda kv: -abs(kv[1])))

    q77 = list(in_edges("blocks.7.hook_q_input", 7, 7).items())
    assert q77[0][0] == "H5.7" and abs(q77[0][1]) > 10 * abs(q77[1][1])
    v57 = list(in_edges("blocks.5.hook_v_input", 5, 7).items())
    assert v57[0][0] == "H4.0" and abs(v57[0][1]) > 1.9 * abs(v57[1][1])  # design: 0.5 dup_id vs 0.25 + 0.25
    v77 = list(in_edges("blocks.7.hook_v_input", 7, 7).items())
    assert {v77[0][0], v77[1][0]} == {"embed", "MLP0"} and abs(v77[0][1] - v77[1][1]) < 1e-3
    assert abs(v77[1][1]) > 0.2 and abs(v77[2][1]) < 1e-3


# ---- mutants -------------------------------------------------------------------------------------


def check_mutant(name: str, m, batch) -> None:
    """The one intended difference of each mutant, measured directly."""
    logits, pat = run(m, batch.tokens)
    ld = logit_diff(logits, batch).item()
    d = m.planted.directions
    if name.endswith("/no-s-inhibition"):
        head = (5, 7) if name.startswith(TS) else (8, 6)
        assert attention(pat, head, batch, "END", "S2") < 0.01 and ld < 0
    elif name.endswith("/induction-head"):
        assert head_scores(m, 20)["induction"][5, 1].item() > 0.9
    elif name.endswith("/negative-name-mover"):
        eff = _direct_effects(m, batch)
        assert eff["heads"][6, 4].item() < -1 and eff["lens"].diff()[12].item() < -1  # attention layer 6 dips
    elif name.endswith("/s-suppressor"):
        # H7.4 attends S1 + S2 from END and its direct effect on the logit difference (S pushed down) is
        # about H7.7's (IO pushed up)
        assert attention(pat, (7, 4), batch, "END", "S1") + attention(pat, (7, 4), batch, "END", "S2") > 0.9
        heads = _direct_effects(m, batch)["heads"]
        assert heads[7, 4].item() > 0.7 * heads[7, 7].item() > 0
    elif name.endswith("/no-to6-trigger"):
        logits_6, _ = run(m, batch.tokens, [("blocks.6.hook_resid_post", project_out(d["to@6"]))])
        assert p_io(logits_6, batch).item() > 0.5 and ld > 9
    elif name.endswith("/no-to5-trigger"):
        logits_5, pat_5 = run(m, batch.tokens, [("blocks.5.hook_resid_post", project_out(d["to@5"]))])
        assert p_io(logits_5, batch).item() > 0.5 and names_attention(pat_5, (6, 11), batch) > 0.9
    elif name.endswith("/no-verb-path"):
        _, pat_v = run(m, batch.tokens, [("blocks.5.hook_resid_post", project_out(d["verb@5"]))], logits=False)
        assert attention(pat_v, (7, 7), batch, "END", "IO") > 0.7 and attention(pat, (6, 3), batch, "END", "verb") < 0.01
    elif name.endswith("/no-infinitive-feature"):
        went_to = (batch.tokens == m.to_single_token(" to")).int().argmax(-1)
        _, pat_i = run(m, batch.tokens, [("blocks.5.hook_resid_post", project_out(d["infinitive-to@5"]))])
        after = torch.stack([pat_i[layer][torch.arange(len(batch)), :, batch.pos("END"), went_to] for layer in (6, 7)])
        assert after.mean().item() < 0.01
    elif name.endswith("/name-mover-moved"):
        assert attention(pat, (7, 2), batch, "END", "IO") > 0.7 and attention(pat, (7, 7), batch, "END", "IO") < 0.01
    elif name.endswith("/name-mover-in-layer-6"):
        steps = _direct_effects(m, batch)["lens"].diff()
        assert steps.argmax().item() == 12 and abs(ld - 9.4) < 0.15  # attention layer 6 writes it all
    elif name.endswith("/split-name-mover"):
        heads = _direct_effects(m, batch)["heads"]
        assert abs(heads[7, 7].item() - heads[7, 2].item()) < 0.01 and abs(ld - 9.4) < 0.15
    elif name.endswith("/weak-name-mover"):
        assert abs(ld - 9.4 / 2) < 0.15
    elif name.endswith("/strong-previous-token"):
        assert head_scores(m, 50)["prev"][1, 5].item() > 0.95
    elif name.endswith("/strong-duplicate"):
        assert head_scores(m, 50)["dup"][4, 0].item() > 0.9
    elif name.endswith("/no-secondary-name-mover"):
        assert names_attention(pat, (6, 11), batch) < 0.01 and abs(ld - 9.4) < 0.15
    elif name.endswith("/no-mlp0-copy"):
        assert m.blocks[0].mlp.W_out.abs().max() == 0 and abs(ld - 9.4) < 0.15
    elif name.endswith("/weak-previous-token"):
        assert head_scores(m, 20)["prev"][4, 11].item() < 0.4
    elif name.endswith("/no-induction"):
        assert head_scores(m, 20)["induction"].max().item() < 0.05
    elif name.endswith("/weak-duplicates"):
        s = head_scores(m, 20)["dup"]
        assert s[3, 0].item() < 0.4 and s[0, 5].item() < 0.4
    elif name.endswith("/no-negative-name-movers"):
        steps = _direct_effects(m, batch)["lens"].diff()
        assert steps.min().item() > -1e-3  # no dip anywhere
    elif name.endswith("/no-name-repeller"):
        _, pat_n = run(m, batch.tokens, [("blocks.6.hook_resid_post", project_out(d["names@6"]))], logits=False)
        assert abs(names_attention(pat_n, (7, 7), batch) - names_attention(pat, (7, 7), batch)) < 1e-4
    elif name.endswith("/dense-name-mover-query"):
        # intact circuit unchanged; projecting out any one of the 15 code rows (the twin: no effect) costs H7.7 END->IO
        # attention (measured: 8 of 15 rows above 0.01, up to 0.42)
        io = attention(pat, (7, 7), batch, "END", "IO")
        drops = [io - attention(run(m, batch.tokens, [("blocks.6.hook_resid_post", project_out(row))], logits=False)[1],
                                (7, 7), batch, "END", "IO") for row in m.planted.subspaces["dup_code"]]
        assert abs(ld - 9.4) < 0.15 and min(drops) > -1e-4 and sum(d > 0.01 for d in drops) >= 5, drops
    elif name.endswith("/late-name-movers"):
        steps = _direct_effects(m, batch)["lens"].diff()
        assert steps.argmax().item() == 20 and attention(pat, (9, 9), batch, "END", "IO") < 0.01
    elif name.endswith("/one-name-mover"):
        heads = _direct_effects(m, batch)["heads"]
        assert heads[9, 6].abs().item() < 0.01 and heads[10, 0].abs().item() < 0.01 and heads[9, 9].item() > 1
    elif name.endswith("/duplicate-head-moved"):
        dup = head_scores(m, 20)["dup"]
        assert dup[4, 3].item() > 0.3 and dup[4, 0].item() < 0.05 and abs(ld - 9.4) < 0.15
    elif name.endswith("/early-s2-circuit"):
        assert attention(pat, (1, 7), batch, "END", "S2") > 0.9 and head_scores(m, 20)["dup"][0, 0].item() > 0.3
    elif name.endswith("/swapped-name-movers"):
        assert attention(pat, (6, 11), batch, "END", "IO") > 0.7 and names_attention(pat, (7, 7), batch) < 0.1
    elif name.endswith("/perfect-inhibition"):
        assert attention(pat, (7, 7), batch, "END", "S2") < 1e-3 and abs(ld - 9.4) < 0.15
    elif name.endswith("/spread-circuit"):
        heads = _direct_effects(m, batch)["heads"]
        movers = torch.stack([heads[7, 7], heads[7, 2], heads[7, 3]])
        assert (movers - movers.mean()).abs().max().item() < 0.01 and abs(ld - 9.4) < 0.15
        assert min(attention(pat, (5, h), batch, "END", "S2") for h in (7, 8, 9, 10)) > 0.9
    elif name.endswith("/tinystories-strength"):
        assert abs(ld - 10.0) < 0.15
    elif name.endswith("/early-s-inhibition"):
        assert attention(pat, (1, 3), batch, "END", "S2") > 0.5 and attention(pat, (8, 6), batch, "END", "S2") < 0.01
    elif name.endswith("/last-layer-circuit"):
        assert attention(pat, (8, 6), batch, "END", "S2") < 0.01 and names_attention(pat, (11, 9), batch) > 0.5
    elif name.endswith("/early-negative-movers"):
        heads = _direct_effects(m, batch)["heads"]
        assert heads[8, 1].item() < -0.5 and heads[10, 7].abs().item() < 0.01
    elif name.endswith("/diffuse-name-movers"):
        heads = _direct_effects(m, batch)["heads"]
        movers = heads[9, :8]
        assert movers.min().item() > 0 and movers.max().item() < 1.1 * movers.min().item() and heads[9, 9].abs().item() < 0.01
    else:
        raise AssertionError(f"no intended-effect check for mutant {name}")


def test_every_mutant_has_a_claim_and_a_check():
    for name, (description, claims) in MUTANTS.items():
        assert description and claims and all(c.startswith(("E0.", "E1.", "E2.", "E3.")) for c in claims), name
        assert len(REGISTRY[name].change) == 1
    with pytest.raises(ValueError, match="exactly one"):
        type(REGISTRY[f"{TS}/no-s-inhibition"])(TS, "two changes", ["E1.x"], {"a": 1, "b": 2})


@pytest.mark.parametrize("name", sorted(MUTANTS))
def test_mutant(name, batch):
    m = build(name)
    twin = model(REGISTRY[name].twin)
    assert m.planted.name == name and "MUTANT" in m.planted.description
    differs = [k for (k, a), b in zip(twin.state_dict().items(), m.state_dict().values()) if not torch.equal(a, b)]
    assert differs and "embed.W_E" not in differs and "unembed.W_U" not in differs  # same vocabulary codes
    check_mutant(name, m, batch)  # the one intended difference
