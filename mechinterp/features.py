"""SAE features on IOI (thesis section 3.5): activation, attribution, ablation, contexts, roles.

Every function takes a model, an SAE (sae_lens, hook name in `sae.cfg.metadata.hook_name`) and
data, and returns tensors or DataFrames:

- `feature_acts` / `top_activating_features`: which features fire at a named position (tables 3.2, 3.5, 3.10);
- `feature_attribution`: gradient x activation of the logit difference per feature (tables 3.3, 3.6, 3.8);
  `direction_attribution`: the same for known directions at each position (a planted model's ground truth);
- `ablate_directions` (the one generic routine) and its thin variants `ablate_feature`,
  `random_feature_control`: project the residual stream at the SAE's hook onto the orthogonal
  complement of decoder directions, at every position, and measure P(IO), logit difference and the
  attention of named heads (figs 3.21-3.25); `ablation_footprint`: how much of its token a feature's
  ablation removes;
- `max_activating_contexts` (tables 3.4, 3.7, 3.9), `firing_rates` (which features are live) and
  `decoder_top_tokens` (W_dec[f] @ W_U);
- roles: a thesis feature is named by what it does (`ROLES`), and `find_role` returns the feature
  that fills the role in any SAE; the thesis's index is only the role's alias.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Callable, Sequence

import pandas as pd
import torch
from tqdm.auto import tqdm

from mechinterp import progress

from mechinterp.attention import attention_from, attention_patterns
from mechinterp.ioi import NAMES, IOIBatch, single_token_id
from mechinterp.memo import memoized
from mechinterp.metrics import logit_diff, p_io


def _hook_name(sae) -> str:
    name = sae.cfg.metadata.hook_name
    if not name:
        raise ValueError("the SAE has no hook_name in its metadata; it cannot be placed in the model")
    return name


def sae_block(sae) -> int:
    """The block whose output the SAE reads, from its hook name (blocks.<n>.hook_resid_post)."""
    match = re.match(r"blocks\.(\d+)\.", _hook_name(sae))
    if match is None:
        raise ValueError(f"cannot read a block index from hook {_hook_name(sae)!r}")
    return int(match.group(1))


def unit_decoder(sae) -> torch.Tensor:
    """[d_sae, d_model] decoder directions scaled to unit length."""
    w_dec = sae.W_dec.detach()
    return w_dec / w_dec.norm(dim=-1, keepdim=True).clamp_min(1e-12)


# --- activations ----------------------------------------------------------------------------------


@torch.no_grad()
def residual_at(model, tokens: torch.Tensor, hook_name: str) -> torch.Tensor:
    """[batch, seq, d_model] residual stream at `hook_name`; the forward stops after that block."""
    block = int(re.match(r"blocks\.(\d+)\.", hook_name).group(1))
    _, cache = model.run_with_cache(tokens.to(model.cfg.device), names_filter=[hook_name], stop_at_layer=block + 1)
    return cache[hook_name]


@torch.no_grad()
def feature_acts(model, sae, tokens: torch.Tensor) -> torch.Tensor:
    """[batch, seq, d_sae] SAE feature activations at the SAE's hook."""
    resid = residual_at(model, tokens, _hook_name(sae))
    return sae.encode(resid.to(sae.W_dec.dtype))


def acts_at(model, sae, batch: IOIBatch, position: str = "END") -> torch.Tensor:
    """[batch, d_sae] feature activations at a named IOI position of each prompt."""
    acts = feature_acts(model, sae, batch.tokens)
    return acts[torch.arange(len(batch)), batch.pos(position).to(acts.device)]


def top_activating_features(model, sae, batch: IOIBatch, position: str = "END", k: int = 5) -> pd.DataFrame:
    """The k features with the largest mean activation at `position` over the prompts (tables 3.2, 3.5, 3.10)."""
    mean = acts_at(model, sae, batch, position).double().mean(0)
    values, index = mean.topk(k)
    return pd.DataFrame({"feature": index.tolist(), "activation": values.tolist()})


# --- attribution ----------------------------------------------------------------------------------


def _residual_and_gradient(
    model, batch: IOIBatch, hook_name: str, metric: Callable[[torch.Tensor, IOIBatch], torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(residual [batch, seq, d_model], gradient of `metric` with respect to it, first text position): the
    residual at `hook_name` made a leaf, so the model itself is left unchanged. The first text position skips a
    prepended BOS: the SAEs are trained without it (`exclude_special_tokens`), so it is left out of every sum."""
    kept: dict[str, torch.Tensor] = {}

    def as_leaf(resid, hook):  # noqa: ARG001
        kept["resid"] = resid.detach().requires_grad_(True)
        return kept["resid"]

    with torch.enable_grad():
        logits = model.run_with_hooks(batch.tokens.to(model.cfg.device), fwd_hooks=[(hook_name, as_leaf)])
        (grad,) = torch.autograd.grad(metric(logits, batch), kept["resid"])
    start = 1 if bool((batch.tokens[:, 0] == model.tokenizer.bos_token_id).all()) else 0
    return kept["resid"].detach(), grad.detach(), start


def feature_attribution(
    model, sae, batch: IOIBatch, metric: Callable[[torch.Tensor, IOIBatch], torch.Tensor] = logit_diff
) -> torch.Tensor:
    """[d_sae] gradient x activation: each feature's activation times the directional derivative of
    `metric` (default mean logit difference) along its decoder direction, summed over the text's
    positions (BOS excluded).

    Equals the first-order change of the metric if the feature were removed from the residual
    stream at every text position (thesis 2.5.11). The model itself is left unchanged (no SAE
    splice). BOS is left out because the SAEs are trained without it (`exclude_special_tokens`):
    its residual is an outlier the SAE never saw, so "features" there are artefacts of encoding it.
    """
    resid, grad, start = _residual_and_gradient(model, batch, _hook_name(sae), metric)
    with torch.no_grad():
        acts = sae.encode(resid.to(sae.W_dec.dtype)).double()
        slope = grad.double() @ sae.W_dec.detach().double().T  # [batch, seq, d_sae]: grad . W_dec[f]
        return (acts * slope)[:, start:].sum((0, 1)).cpu()


def direction_attribution(
    model, batch: IOIBatch, hook_name: str, subspaces: dict[str, torch.Tensor],
    metric: Callable[[torch.Tensor, IOIBatch], torch.Tensor] = logit_diff,
) -> pd.DataFrame:
    """Gradient x activation of named subspaces ({name: orthonormal rows [k, d_model]}) at each text position,
    summed over the batch: (x's component in the subspace) . (the gradient's), the part of `metric`'s first-order
    change that removing that subspace there would make. With a model's known directions (a planted model's
    `planted.subspaces`) it is the ground truth a feature's attribution splits: an SAE feature holding several of
    them at a position carries the sum of their rows. Columns: subspace, position, token (of the first prompt),
    attribution."""
    resid, grad, start = _residual_and_gradient(model, batch, hook_name, metric)
    resid, grad = resid.double(), grad.double()
    tokens = [model.tokenizer.decode([t]) for t in batch.tokens[0].tolist()]
    rows = []
    for name, basis in subspaces.items():
        basis = basis.to(resid.device).double()
        per_position = ((resid @ basis.T) * (grad @ basis.T)).sum(-1).sum(0)  # [seq]
        rows += [(name, p, tokens[p], float(per_position[p])) for p in range(start, len(tokens))]
    return pd.DataFrame(rows, columns=["subspace", "position", "token", "attribution"])


def top_attributed_features(attribution: torch.Tensor, k: int = 5, most_negative: bool = False) -> pd.DataFrame:
    """The k features of largest (or most negative) attribution (tables 3.3, 3.6, 3.8)."""
    values, index = (-attribution if most_negative else attribution).topk(k)
    values = -values if most_negative else values
    return pd.DataFrame({"feature": index.tolist(), "attribution": values.tolist()})


# --- ablation: one generic routine, thin named variants -------------------------------------------


def projection_hook(directions: torch.Tensor):
    """A hook removing the span of `directions` [k, d_model] from the residual stream at every position."""
    if directions.ndim == 1:
        directions = directions[None]
    basis, _ = torch.linalg.qr(directions.detach().double().T)  # [d_model, k] orthonormal

    def project_out(resid, hook):  # noqa: ARG001
        b = basis.to(resid.device, resid.dtype)
        return resid - (resid @ b) @ b.T

    return project_out


@dataclass
class AblationResult:
    """IOI behaviour and named-head attention, before and after removing directions at one hook."""

    p_io: tuple[float, float]  # (clean, ablated) mean P(IO) at END
    logit_diff: tuple[float, float]  # (clean, ablated) mean logit(IO) - logit(S)
    attention: pd.DataFrame = field(default_factory=pd.DataFrame)  # head, source, target, before, after

    @property
    def delta_p_io(self) -> float:
        return self.p_io[1] - self.p_io[0]

    def attention_after_over_before(self, head: str, target: str, source: str = "END") -> float:
        table = self.attention
        row = table[(table["head"] == head) & (table["target"] == target) & (table["source"] == source)]
        if len(row) != 1:
            raise KeyError(f"no attention measured for {head} {source}->{target}")
        before, after = float(row["before"].iloc[0]), float(row["after"].iloc[0])
        return after / before if before > 0 else float("nan")


def _end_logits(model, tokens: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
    """[rows, vocab] logits at each row's END position, unembedding only there."""
    resid = model(tokens, stop_at_layer=model.cfg.n_layers)
    at_end = resid[torch.arange(len(tokens), device=resid.device), end.to(resid.device)][:, None, :]
    final_norm = getattr(model, "ln_final", None)  # absent where cfg.normalization_type is None (planted models)
    return model.unembed(at_end if final_norm is None else final_norm(at_end))[:, 0]


def _behaviour(model, batch: IOIBatch) -> tuple[float, float]:
    """(P(IO), logit difference) at END. Only END is unembedded (over a 50k vocabulary the unembedding of
    every position is most of a small model's forward), and the clean run is memoized: a random-feature
    control ablates dozens of features against one clean run."""

    def compute() -> tuple[float, float]:
        with torch.no_grad():
            logits = _end_logits(model, batch.tokens.to(model.cfg.device), batch.pos("END"))
        return p_io(logits, batch).item(), logit_diff(logits, batch).item()

    key = ("feature-behaviour", tuple(batch.tokens.flatten().tolist()), tuple(batch.tokens.shape),
           tuple(batch.pos("END").tolist()), tuple(batch.io_token.tolist()), tuple(batch.s_token.tolist()))
    return memoized(model, key, compute)  # never memoized under hooks (mechinterp.memo): ablations recompute


def ablate_directions(
    model,
    hook_name: str,
    directions: torch.Tensor,
    batch: IOIBatch,
    heads: Sequence[tuple[int, int]] = (),
    source: str = "END",
    targets: Sequence[str] = ("IO", "S1", "S2"),
) -> AblationResult:
    """Remove `directions` at `hook_name` (all positions); P(IO), logit diff and each head's
    attention from `source` to `targets`, before and after."""
    hook = projection_hook(directions)
    clean = _behaviour(model, batch)
    before = {head: attention_from(model, batch, source, tuple(targets), head) for head in heads}
    with model.hooks(fwd_hooks=[(hook_name, hook)]):
        ablated = _behaviour(model, batch)
        after = {head: attention_from(model, batch, source, tuple(targets), head) for head in heads}
    rows = [
        {"head": f"{layer}.{h}", "source": source, "target": t, "before": before[(layer, h)][t], "after": after[(layer, h)][t]}
        for (layer, h) in heads
        for t in targets
    ]
    return AblationResult((clean[0], ablated[0]), (clean[1], ablated[1]), pd.DataFrame(rows))


def ablate_feature(model, sae, feature: int, batch: IOIBatch, heads: Sequence[tuple[int, int]] = (), **kwargs) -> AblationResult:
    """Ablate one SAE feature: project out its decoder direction at the SAE's hook (thesis 3.5.1)."""
    if not 0 <= feature < sae.cfg.d_sae:
        raise ValueError(f"feature {feature} out of range for an SAE of width {sae.cfg.d_sae}")
    return ablate_directions(model, _hook_name(sae), sae.W_dec[feature], batch, heads, **kwargs)


def near_duplicates(sae, features: Sequence[int], min_cosine: float = 0.9) -> list[int]:
    """Features whose unit decoder direction has cosine >= `min_cosine` with one of `features`'
    (those included): an SAE often splits one direction over several copies, and projecting out a
    copy removes nearly the same direction as the original."""
    if not features:
        return []
    decoder = unit_decoder(sae).double()
    cosines = decoder @ decoder[list(features)].T  # [d_sae, len(features)]
    return sorted(set((cosines >= min_cosine).any(-1).nonzero().flatten().tolist()) | set(features))


def grouped_lead(scores: torch.Tensor, sae, feature: int, min_cosine: float = 0.9) -> tuple[float, float, list[int], list[int]]:
    """(score of `feature`'s group, score of the best other group, the two groups): `scores` [d_sae]
    (higher is better, e.g. attribution) summed over near-duplicates (decoder cos >= `min_cosine`), so a
    lead does not depend on how one SAE splits a direction over copies. The runner-up group is the best
    feature outside the first group with its own copies (those not already in the first group)."""
    first = near_duplicates(sae, [feature], min_cosine)
    rest = scores.clone().double()
    rest[first] = float("-inf")
    runner = int(rest.argmax())
    second = sorted(set(near_duplicates(sae, [runner], min_cosine)) - set(first))
    return float(scores[first].sum()), float(scores[second].sum()), first, second


# One-feature ablations run side by side in one forward (copies of the batch): at least 10, more for a short batch
# (about 800 tokens a forward; on the CPU a forward of a few prompts is mostly overhead: the one-prompt thesis batch
# runs ~2x faster per ablation at 50 copies than at 10, the 8 prompts no faster beyond 10).
ABLATIONS_PER_PASS, ABLATION_TOKENS_PER_PASS = 10, 800


def p_io_with_each_projected_out(model, batch: IOIBatch, hook_name: str, directions: torch.Tensor) -> torch.Tensor:
    """[k] mean P(IO) at END with each of `directions` [k, d_model] projected out at `hook_name`, on its own:
    k copies of the batch in one forward, copy i under direction i. The same as k runs of `projection_hook`
    (one direction) up to float rounding, at the cost of one wider forward instead of k (on the CPU,
    a forward of a few prompts is mostly overhead)."""
    units = directions.detach().double()
    units = (units / units.norm(dim=-1, keepdim=True))[:, None, None, :]  # [k, 1, 1, d]
    k, n = len(directions), len(batch)

    def project_each(resid, hook):  # noqa: ARG001
        copies = resid.view(k, n, *resid.shape[1:])
        u = units.to(resid.device, resid.dtype)
        return (copies - (copies * u).sum(-1, keepdim=True) * u).view_as(resid)

    with torch.no_grad(), model.hooks(fwd_hooks=[(hook_name, project_each)]):
        logits = _end_logits(model, batch.tokens.to(model.cfg.device).repeat(k, 1), batch.pos("END").repeat(k))
    probs = logits.float().softmax(-1).gather(-1, batch.io_token.to(logits.device).repeat(k)[:, None])[:, 0]
    return probs.view(k, n).mean(-1).cpu()


def random_feature_control(
    model, sae, batch: IOIBatch, n_features: int | None = 50, seed: int = 0, exclude: Sequence[int] = (),
    live: torch.Tensor | None = None,
) -> pd.DataFrame:
    """Ablate `n_features` random features one at a time: feature, p_io_clean, p_io_ablated, delta_p_io.
    `n_features` None: every candidate once, in index order (the population a draw estimates).

    `live` ([d_sae] bool, e.g. `firing_rates(...) > 0`) restricts the draw to features that fire on
    some text: a dead feature's decoder row was never trained, so projecting it out ablates nothing
    the SAE found, only an arbitrary direction.
    """
    candidates = range(sae.cfg.d_sae) if live is None else live.nonzero().flatten().tolist()
    pool = sorted(set(candidates) - set(exclude))
    if n_features is not None and n_features > len(pool):
        raise ValueError(f"asked for {n_features} random features, only {len(pool)} are available")
    chosen = pool if n_features is None else random.Random(seed).sample(pool, n_features)
    clean_p_io, _ = _behaviour(model, batch)
    hook_name = _hook_name(sae)
    rows = []
    per_pass = max(ABLATIONS_PER_PASS, ABLATION_TOKENS_PER_PASS // batch.tokens.numel())
    with progress.stage("random feature ablations", total=len(chosen), unit="features") as stage:
        for start in range(0, len(chosen), per_pass):
            features = chosen[start : start + per_pass]
            ablated = p_io_with_each_projected_out(model, batch, hook_name, sae.W_dec[features])
            for feature, ablated_p_io in zip(features, ablated.tolist()):
                rows.append({"feature": feature, "p_io_clean": clean_p_io, "p_io_ablated": ablated_p_io,
                             "delta_p_io": ablated_p_io - clean_p_io})
            stage.advance(len(features))
    return pd.DataFrame(rows)


def attention_to_token(
    model, batch: IOIBatch, token_id: int, layers: Sequence[int], source: str = "END"
) -> float:
    """Mean over prompts and over every head of `layers` of the attention from `source` to earlier
    occurrences of `token_id` (summed over occurrences; the source position itself excluded)."""
    heads = [(layer, h) for layer in layers for h in range(model.cfg.n_heads)]
    patterns = attention_patterns(model, batch, heads)  # [heads, batch, query, key]
    rows = torch.arange(len(batch))
    src = batch.pos(source)
    from_source = patterns[:, rows, src, :]  # [heads, batch, key]
    keys = torch.arange(batch.tokens.shape[1])
    is_target = (batch.tokens == token_id) & (keys[None, :] < src[:, None])
    if not bool(is_target.any()):
        raise ValueError(f"no occurrence of token {token_id} before {source} in any prompt")
    return (from_source * is_target[None].to(from_source.dtype)).sum(-1).double().mean().item()


def peak_share(model, sae, feature: int, batch: IOIBatch, position: str = "verb") -> float:
    """Fraction of prompts whose strongest activation of `feature` (BOS excluded) is at `position`."""
    acts = feature_acts(model, sae, batch.tokens)[:, 1:, feature]
    peak = acts.argmax(-1) + 1
    return (peak == batch.pos(position).to(peak.device)).double().mean().item()


@torch.no_grad()
def ablation_footprint(model, sae, feature: int, batch: IOIBatch) -> pd.DataFrame:
    """Per prompt, the token where `feature` fires most (BOS excluded) and the share of that token's residual
    stream the projection ablation removes there: cos^2(x, W_dec[f]) = |(x . u) u|^2 / |x|^2.

    Near 1 the feature is its token's whole content (an SAE that absorbed the token's other components into
    it), so ablating it is ablating the token, and what it does cannot be told from what the token does. A high
    share alone is no proof of that: a direction that dominates its token's norm gives one too (the planted twin's
    norm-5 triggers: 0.76-0.85 of their token with the oracle SAE, which holds exactly that direction).
    NaN on a prompt where the feature does not fire."""
    resid = residual_at(model, batch.tokens, _hook_name(sae))
    acts = sae.encode(resid.to(sae.W_dec.dtype))[:, 1:, feature]
    peak = acts.argmax(-1) + 1
    rows = torch.arange(len(batch))
    x = resid[rows, peak].double()
    u = unit_decoder(sae)[feature].double().to(x.device)
    share = (x @ u) ** 2 / (x * x).sum(-1).clamp_min(1e-30)
    fires = acts[rows, peak - 1] > 0
    share = torch.where(fires.to(share.device), share, torch.full_like(share, float("nan")))  # silent: no token
    return pd.DataFrame({"prompt": rows.tolist(), "position": peak.tolist(),
                         "token": [model.tokenizer.decode([t]) for t in batch.tokens[rows, peak].tolist()],
                         "activation": acts[rows, peak - 1].tolist(), "removed_share": share.tolist()})


def attention_change(result: AblationResult, head: tuple[int, int], targets: Sequence[str]) -> tuple[float, float, float]:
    """(before, after, after / before) of one head's attention (from the result's source) summed over `targets`."""
    table = result.attention[result.attention["head"] == f"{head[0]}.{head[1]}"].set_index("target")
    before = float(table.loc[list(targets), "before"].sum())
    after = float(table.loc[list(targets), "after"].sum())
    return before, after, (after / before if before > 0 else float("nan"))


# --- contexts and unembedding ---------------------------------------------------------------------


def _encode_texts(tokenizer, texts: Sequence[str], context_size: int) -> list[list[int]]:
    """BOS + each text's tokens, truncated to `context_size` in all."""
    bos = tokenizer.bos_token_id
    return [[bos] + tokenizer.encode(t, add_special_tokens=False)[: context_size - 1] for t in texts]


@torch.no_grad()
def _acts_over_texts(model, sae, encoded: list[list[int]], feature: int | None, batch_size: int, desc: str,
                     remember: bool = False):
    """Yield (first text index, acts [batch, width(, d_sae)], valid [batch, width]) over `encoded`.

    Right padding cannot change earlier positions of a causal model; padded positions and BOS (not
    a token of the text) are marked invalid. With `remember`, the residuals are memoized (mechinterp.memo):
    a second feature's scan of the same texts pays only the SAE (E3's role is matched on two prompt sets)."""
    bos = model.tokenizer.bos_token_id
    hook = _hook_name(sae)
    starts = range(0, len(encoded), batch_size)
    stage, _, detail = desc.partition(" of ")  # "contexts of feature 796": one stage name, the feature as its detail
    for start in progress.counted(tqdm(starts, desc=desc, leave=False), stage, total=len(starts), unit="batches", detail=detail):
        chunk = encoded[start : start + batch_size]
        width = max(len(ids) for ids in chunk)
        tokens = torch.tensor([ids + [bos] * (width - len(ids)) for ids in chunk])
        if remember:
            key = ("corpus residual", hook, tuple(tuple(ids) for ids in chunk))
            resid = memoized(model, key, lambda tokens=tokens: residual_at(model, tokens, hook))
        else:
            resid = residual_at(model, tokens, hook)
        acts = sae.encode(resid.to(sae.W_dec.dtype))
        acts = (acts if feature is None else acts[..., feature]).cpu()
        valid = torch.arange(width)[None, :] < torch.tensor([len(ids) for ids in chunk])[:, None]
        valid[:, 0] = False
        yield start, acts, valid


def firing_rates(model, sae, texts: Sequence[str], context_size: int = 128, batch_size: int = 16) -> torch.Tensor:
    """[d_sae] fraction of the text's tokens (BOS excluded) on which each feature is active."""
    encoded = _encode_texts(model.tokenizer, texts, context_size)
    counts, n_tokens = torch.zeros(sae.cfg.d_sae, dtype=torch.float64), 0
    for _, acts, valid in _acts_over_texts(model, sae, encoded, None, batch_size, "feature firing rates"):
        counts += ((acts > 0) & valid[..., None]).sum((0, 1)).double()
        n_tokens += int(valid.sum())
    return counts / max(n_tokens, 1)


def max_activating_contexts(
    model,
    sae,
    feature: int,
    texts: Sequence[str],
    k: int = 10,
    context_size: int = 128,
    window: tuple[int, int] = (12, 4),
    batch_size: int = 16,
) -> pd.DataFrame:
    """The k strongest activations of `feature` over `texts` (each truncated to `context_size`
    tokens after BOS): activation, token, context (the token marked «»), text index, position."""
    tokenizer = model.tokenizer
    encoded = _encode_texts(tokenizer, texts, context_size)
    best: list[tuple[float, int, int]] = []  # (activation, text index, position)
    for start, acts, valid in _acts_over_texts(model, sae, encoded, feature, batch_size, f"contexts of feature {feature}",
                                               remember=True):
        width = acts.shape[1]
        acts[~valid] = float("-inf")
        values, flat = acts.flatten().topk(min(k, acts.numel()))
        best += [(v, start + i // width, i % width) for v, i in zip(values.tolist(), flat.tolist()) if v > float("-inf")]
        best = sorted(best, reverse=True)[:k]
    rows = []
    before, after = window
    for activation, text_index, position in best:
        ids = encoded[text_index]
        left = tokenizer.decode(ids[max(1, position - before) : position])
        right = tokenizer.decode(ids[position + 1 : position + 1 + after])
        token = tokenizer.decode([ids[position]])
        rows.append({"activation": activation, "token": token, "context": f"{left}«{token}»{right}", "text_index": text_index, "position": position})
    return pd.DataFrame(rows, columns=["activation", "token", "context", "text_index", "position"])


@torch.no_grad()
def decoder_top_tokens(model, sae, feature: int, k: int = 10) -> pd.DataFrame:
    """The k tokens whose logits the feature's unit decoder direction raises most: (W_dec[f] @ W_U)."""
    logits = unit_decoder(sae)[feature].to(model.W_U.dtype) @ model.W_U
    values, index = logits.topk(k)
    return pd.DataFrame({"token": [model.tokenizer.decode([i]) for i in index.tolist()], "token_id": index.tolist(), "logit": values.tolist()})


# --- names ----------------------------------------------------------------------------------------

# Names a token may be: the IOI names plus TinyStories' common ones (the thesis's max-activating
# examples for feature 2837 are Amy, Lily, Mary, Anna, Molly, Sarah).
STORY_NAMES = frozenset(NAMES) | {
    "Mia", "Molly", "Sue", "Joe", "Leo", "Zoe", "Eva", "Bella", "Timmy", "Tommy", "Billy", "Sally",
    "Susie", "Jenny", "Annie",
}


def is_name(token: str) -> bool:
    """Whether a decoded token is a name (leading space and case of the first letter as written)."""
    return token.strip() in STORY_NAMES


def distinct_names(tokens: Sequence[str]) -> int:
    """How many different names `tokens` hold (a names cluster, not one name firing everywhere)."""
    return len({t.strip() for t in tokens if is_name(t)})


def name_share(tokens: Sequence[str]) -> float:
    """Fraction of `tokens` that are names."""
    if not tokens:
        raise ValueError("no tokens")
    return sum(is_name(t) for t in tokens) / len(tokens)


# --- roles ----------------------------------------------------------------------------------------

# Sentences with " to" before a verb (thesis: feature 1276 fires on "to play", "to eat").
INFINITIVE_PROMPTS = (
    "Lily wanted to play with her red ball.",
    "Tom was very hungry and he wanted to eat the cake.",
    "The little dog liked to run in the park.",
    "Sam went outside to look for his toy.",
    "Mia tried to climb the big tree.",
    "Ben asked his mom if he could go to sleep.",
    "They decided to build a tall tower.",
    "She was happy to help her friend.",
)


@dataclass(frozen=True)
class FeatureRole:
    """A thesis feature named by what it does; `alias` is its index in the thesis's own SAE only."""

    name: str
    block: int
    rule: str  # one of RULES
    alias: int
    description: str


RULES = ("top-activation-at-END", "top-attribution", "bottom-attribution", "top-activation-at-infinitive-to")

ROLES: dict[str, FeatureRole] = {
    role.name: role
    for role in (
        FeatureRole("L6-to", 6, "top-activation-at-END", 1059,
                    "top-activating layer-6 feature at END; fires on 'to' in giving contexts (tables 3.5, 3.7)"),
        FeatureRole("L5-to", 5, "top-activation-at-END", 44,
                    "top-activating layer-5 feature at END; fires on 'to' in giving contexts (tables 3.2, 3.4)"),
        FeatureRole("L5-gave", 5, "top-attribution", 2338,
                    "highest-attribution layer-5 feature (5.15); fires on 'gave' (table 3.3)"),
        FeatureRole("L5-infinitive-to", 5, "top-activation-at-infinitive-to", 1276,
                    "layer-5 feature firing on 'to' before infinitive verbs (s3.5.1)"),
        FeatureRole("L6-negative-names", 6, "bottom-attribution", 2837,
                    "most negative attribution in layer 6 (-7.79); fires on a cluster of names (tables 3.8, 3.9)"),
        FeatureRole("L7-logit", 7, "top-attribution", 1854,
                    "the one layer-7 feature with large attribution (4.1, next 0.07); W_U ranks names first (s3.5.3)"),
    )
}


@dataclass(frozen=True)
class RoleMatch:
    role: str
    feature: int  # index in the SAE searched
    score: float  # the rule's value for that feature (activation or attribution)
    runner_up: float  # the rule's value for the next feature
    alias: int  # the thesis's index for the role
    values: torch.Tensor = field(default=None, repr=False, compare=False)  # [d_sae] the rule's quantity for every feature, own sign


def infinitive_to_batch(tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens [n, seq] (BOS, right-padded) of INFINITIVE_PROMPTS and the position of each ' to'."""
    to_id = single_token_id(tokenizer, " to")
    rows = [[tokenizer.bos_token_id] + tokenizer.encode(p, add_special_tokens=False) for p in INFINITIVE_PROMPTS]
    width = max(len(r) for r in rows)
    positions = []
    for prompt, ids in zip(INFINITIVE_PROMPTS, rows):
        if ids.count(to_id) != 1:
            raise ValueError(f"infinitive prompt {prompt!r} must hold exactly one ' to'")
        positions.append(ids.index(to_id))
    tokens = torch.tensor([r + [tokenizer.bos_token_id] * (width - len(r)) for r in rows])
    return tokens, torch.tensor(positions)


def role_scores(model, sae, role: FeatureRole, batch: IOIBatch) -> torch.Tensor:
    """[d_sae] the quantity `role.rule` ranks features by (higher is better)."""
    if role.rule == "top-activation-at-END":
        return acts_at(model, sae, batch, "END").double().mean(0).cpu()
    if role.rule == "top-attribution":
        return feature_attribution(model, sae, batch)
    if role.rule == "bottom-attribution":
        return -feature_attribution(model, sae, batch)
    if role.rule == "top-activation-at-infinitive-to":
        tokens, positions = infinitive_to_batch(model.tokenizer)
        acts = feature_acts(model, sae, tokens)
        return acts[torch.arange(len(positions)), positions.to(acts.device)].double().mean(0).cpu()
    raise ValueError(f"unknown rule {role.rule!r}; known: {RULES}")


def find_role(model, sae, role: FeatureRole | str, batch: IOIBatch) -> RoleMatch:
    """The feature of `sae` that fills `role` on `batch`; the SAE must read the role's block."""
    role = ROLES[role] if isinstance(role, str) else role
    if sae_block(sae) != role.block:
        raise ValueError(f"role {role.name} is a block-{role.block} feature, but the SAE reads block {sae_block(sae)}")
    scores = role_scores(model, sae, role, batch)
    top = scores.topk(2)
    sign = -1.0 if role.rule == "bottom-attribution" else 1.0  # report attribution with its own sign
    return RoleMatch(role.name, int(top.indices[0]), sign * float(top.values[0]), sign * float(top.values[1]), role.alias,
                     sign * scores)
