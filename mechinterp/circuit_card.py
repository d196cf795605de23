"""The IOI circuit of any model, found by role rather than by head index (thesis ch. 5 future work).

For every model (every TinyStories version, GPT-2 small, an unidentified checkpoint) the card
answers: how well does it do IOI, and which heads play which part? No thresholds: the card is
measured and shown. Every head is measured three ways on the card's prompts: its direct effect
(DLA at END), its END attention to IO, S1 and S2, and its total effect, the drop in logit
difference when it is mean-ablated (every position; and END only, with every head's END
attention recorded, for S-inhibition's path through the name movers' queries). The causal roles
(name movers, negative name movers, S-inhibition, S-suppression) are then named by
mechinterp.ioi_roles, the one definition the learned models' brute force (fixtures.learned.
ground_truth) uses too. Besides:

  previous-token / duplicate-token / induction
                        E1's attention scores on repeated random tokens (mechinterp.head_scores),
                        heads scoring at least min_head_score
  handover layer        residual patching (S2 -> IO corruption): first layer where patching END
                        restores more than S2

No role and no handover layer unless the logit difference reaches the floor (RoleFloors.min_logit_diff):
below it there is no IOI behaviour, and the card says so instead of giving numbers that read as findings.

Prompts: the thesis's 8 protocol prompts; where the model shows no IOI on them (their wording may not be
the model's), a distribution over mechinterp.ioi's robustness templates. Given templates of its own
(`--ioi-templates FILE`), the card reads those instead. The card says which prompts its roles rest on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch
from transformer_lens import HookedTransformer

from mechinterp.attention import per_prompt_attention
from mechinterp.dla import head_dla
from mechinterp.head_scores import HeadScoreConfig, head_scores
from mechinterp.ioi import (
    DISTRIBUTION_TEMPLATES,
    IOIBatch,
    IOIDataError,
    batches_by_length,
    corrupt_s2_to_io,
    distribution_prompts,
    make_batch,
    protocol_prompts,
)
from mechinterp.ioi_roles import HeadMeasures, RoleFloors, Roles, assign_roles, ranked
from mechinterp.metrics import logit_diff, p_io
from mechinterp.patching import (
    PatchingConfig,
    PatchingError,
    _prefix_kv_cache,
    end_metric,
    patch_resid_pre_by_pos,
    patching_pair_batches,
    s2_to_end_handover,
)

PROTOCOL = "the thesis's 8 protocol prompts"


@dataclass(frozen=True)
class CircuitCardConfig:
    top_k: int = 3  # heads listed per role
    floors: RoleFloors = field(default_factory=RoleFloors)  # the roles' floors, shared with the brute force
    # Prompts over the templates when the protocol's do not fit the model: every template in both name orders,
    # twice (12 templates -> 48). Each prompt costs n_heads x 2 ablated sequences, so few.
    n_template_prompts: int = 48
    template_seed: int = 0
    max_rows_per_forward: int = 2048  # ablated sequences in one forward pass; bounds memory
    min_head_score: float = 0.1  # E1 scores listed from here: 5-10x chance (0.01-0.02 on 50-100 keys)
    head_scores: HeadScoreConfig = field(default_factory=lambda: HeadScoreConfig(n_sequences=20, seq_len=50, seed=0))  # E1's
    patching: PatchingConfig = field(default_factory=lambda: PatchingConfig(progress=False))


@dataclass(frozen=True)
class RoleHead:
    head: tuple[int, int]
    score: float  # the role's ranking value: ablation drop / logit difference, or E1's attention score
    attention: float | None = None  # the role's attention from END: to IO (movers) or to S1 + S2 (the S roles)
    direct: float | None = None  # direct effect / logit difference (causal roles)

    @property
    def name(self) -> str:
        return f"H{self.head[0]}.{self.head[1]}"

    def describe(self) -> str:
        direct = "" if self.direct is None else f", direct {self.direct:+.2f}"
        attention = "" if self.attention is None else f", attn {self.attention:.2f}"
        return f"{self.name} ({self.score:+.2f}{direct}{attention})"


@dataclass
class CircuitCard:
    model_name: str
    logit_diff: float  # on `prompts`, where the roles are read
    p_io: float
    prompts: str  # which prompts the roles rest on
    protocol_logit_diff: float  # on the thesis's 8 protocol prompts, whatever `prompts` is; NaN when unreadable
    name_movers: list[RoleHead]
    negative_name_movers: list[RoleHead]
    s_inhibition: list[RoleHead]
    s_suppression: list[RoleHead]
    previous_token: list[RoleHead]
    duplicate_token: list[RoleHead]
    induction: list[RoleHead]
    handover_layer: float  # n_layers when END never overtakes S2; NaN without IOI behaviour or when patching is undefined
    notes: list[str] = field(default_factory=list)
    does_ioi: bool = True

    def values(self) -> dict[str, float]:
        """The card's numbers, for the report's measured-values column (role numbers NaN without IOI)."""
        first = lambda heads: heads[0].score if heads else float("nan")  # noqa: E731
        return {"logit_diff": self.logit_diff, "p_io": self.p_io, "protocol_logit_diff": self.protocol_logit_diff,
                "handover_layer": self.handover_layer,
                "top_name_mover_ablation_drop_fraction": first(self.name_movers),
                "top_s_inhibition_ablation_drop_fraction": first(self.s_inhibition),
                "top_s_suppression_ablation_drop_fraction": first(self.s_suppression),
                "n_negative_name_movers": float(len(self.negative_name_movers)) if self.does_ioi else float("nan")}

    def table(self) -> dict[str, str]:
        """Label -> short text, one row per role: what the report shows side by side per model."""
        no_ioi = "- (no IOI behaviour)"
        heads = lambda role: (", ".join(h.describe() for h in role) or "none") if self.does_ioi else no_ioi  # noqa: E731
        listed = lambda role: ", ".join(h.describe() for h in role) or "none"  # noqa: E731
        return {
            "roles read on": self.prompts,
            "logit diff / P(IO)": f"{self.logit_diff:.2f} / {self.p_io:.3f}",
            **({} if self.prompts == PROTOCOL else {"logit diff on the protocol prompts": (
                "- (unreadable: a name is not one known token)" if math.isnan(self.protocol_logit_diff)
                else f"{self.protocol_logit_diff:.2f}")}),
            "name movers (ablation drop / LD, direct / LD, END->IO)": heads(self.name_movers),
            "negative name movers (ablation drop / LD, direct / LD, END->IO)": heads(self.negative_name_movers),
            "S-inhibition (END-only ablation drop / LD, direct / LD, END->S1+S2)": heads(self.s_inhibition),
            "S-suppression (ablation drop / LD, direct / LD, END->S1+S2)": heads(self.s_suppression),
            "duplicate-token (score)": listed(self.duplicate_token),
            "previous-token (score)": listed(self.previous_token),
            "induction (score)": listed(self.induction),
            "S2 -> END handover layer": f"{self.handover_layer:g}" if self.does_ioi else no_ioi,
            **({"notes": "; ".join(self.notes)} if self.notes else {}),
        }


def _ablated(model: HookedTransformer, batch: IOIBatch, clean_cache, layer: int, heads: list[int], end_only: bool,
             clean_attention: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Copy c of `batch` with head (layer, heads[c])'s z mean-ablated (every position, or END only), in one forward
    pass from `layer` on (nothing before it changes): from its clean residual, and for END only from END alone, the
    clean keys and values before it cached (mechinterp.patching's shared prefix). Returns the logit difference
    [copies, prompts] and every head's END attention to IO and to S1 + S2 [copies, prompts, 2, layers, heads]
    (END only; earlier layers keep `clean_attention`, [prompts, 2, layers, heads]). Hand-written over
    transformer_lens hooks: its patching utilities patch a run's own activations, not a mean over the prompts."""
    n, copies, n_layers = len(batch), len(heads), model.cfg.n_layers
    end = batch.pos("END")
    if not bool((end == end[0]).all()):
        raise ValueError("the batch's prompts must share their END position (mechinterp.ioi.batches_by_length)")
    begin = int(end[0]) if end_only else 0
    mean = clean_cache[f"blocks.{layer}.attn.hook_z"][:, begin:].mean(0)  # [pos from begin, head, d_head]
    rows, cols = torch.arange(copies), torch.tensor(heads)

    def ablate(z, hook):
        z = z.view(copies, n, *z.shape[1:])  # [copy, prompt, pos, head, d_head]
        z[rows, :, :, cols] = mean[:, cols].transpose(0, 1)[:, None].to(z.dtype)
        return z.view(copies * n, *z.shape[2:])

    patterns: dict[int, torch.Tensor] = {}
    keep = lambda pattern, hook: patterns.__setitem__(hook.layer(), pattern[:, :, -1].double().cpu())  # noqa: E731
    hooks = [(f"blocks.{layer}.attn.hook_z", ablate)]
    hooks += [(f"blocks.{l}.attn.hook_pattern", keep) for l in range(layer, n_layers)] if end_only else []
    start = clean_cache[f"blocks.{layer}.hook_resid_pre"][:, begin:].repeat(copies, 1, 1)
    prefix = _prefix_kv_cache(clean_cache, n_layers, layer, begin, copies) if begin else None
    tiled = batch.tile(copies)
    shifted = replace(tiled, positions={**tiled.positions, "END": tiled.pos("END") - begin})
    with torch.inference_mode(), model.hooks(fwd_hooks=hooks):
        resid = model(start, start_at_layer=layer, stop_at_layer=n_layers, past_kv_cache=prefix)
        ld = end_metric(model, resid, shifted).double().cpu().view(copies, n)
    attention = clean_attention[None].repeat(copies, 1, 1, 1, 1)
    if end_only:
        at = torch.arange(copies * n)
        for l, pattern in patterns.items():  # [rows, head, key]
            attention.view(copies * n, 2, n_layers, -1)[:, 0, l] = pattern[at, :, tiled.pos("IO")]
            attention.view(copies * n, 2, n_layers, -1)[:, 1, l] = pattern[at, :, tiled.pos("S1")] + pattern[at, :, tiled.pos("S2")]
    return ld, attention


def head_measures(model: HookedTransformer, batches: list[IOIBatch], max_rows_per_forward: int = 2048,
                  min_attention: float = 0.0) -> HeadMeasures:
    """Every head's direct effect, END attention and mean-ablation drops, averaged over the prompts of `batches`
    (equal-length groups; each head's mean is taken over its own group, per position). Only heads attending IO or S
    (S1 + S2) from END at least `min_attention` on average are ablated, the others' drops NaN: every causal role
    needs that attention (mechinterp.ioi_roles), and ablation is the card's cost."""
    L, H = model.cfg.n_layers, model.cfg.n_heads
    names = lambda name: name.endswith(("attn.hook_z", "hook_resid_pre", "attn.hook_k", "attn.hook_v"))  # noqa: E731
    sums = {k: torch.zeros(L, H, dtype=torch.float64) for k in ("drop", "end_drop", "direct", "attn_io", "attn_s")}
    end_attention = torch.zeros(L, H, 2, L, H, dtype=torch.float64)
    per_batch, total, n_total = [], 0.0, 0
    for batch in batches:  # first the attention, which picks the heads to ablate
        attention = per_prompt_attention(model, batch, [("END", "IO"), ("END", "S1"), ("END", "S2")])
        clean_attention = torch.stack([attention[("END", "IO")], attention[("END", "S1")] + attention[("END", "S2")]], 1)
        sums["attn_io"] += clean_attention[:, 0].sum(0)
        sums["attn_s"] += clean_attention[:, 1].sum(0)
        per_batch.append(clean_attention)
        n_total += len(batch)
    attends = (torch.maximum(sums["attn_io"], sums["attn_s"]) / n_total) >= min_attention  # [L, H]
    for batch, clean_attention in zip(batches, per_batch):
        n = len(batch)
        with torch.inference_mode():
            logits, cache = model.run_with_cache(batch.tokens.to(model.cfg.device), names_filter=names)
        clean = logit_diff(logits, batch, per_prompt=True).double().cpu()
        total += float(clean.sum())
        sums["direct"] += head_dla(model, batch).double().cpu() * n
        chunk = max(1, max_rows_per_forward // n)
        for layer in range(L):
            heads = attends[layer].nonzero()[:, 0].tolist()
            for start in range(0, len(heads), chunk):
                part = heads[start:start + chunk]
                ablated, _ = _ablated(model, batch, cache, layer, part, False, clean_attention)
                sums["drop"][layer, part] += (clean - ablated).sum(1)
                ablated, attn = _ablated(model, batch, cache, layer, part, True, clean_attention)
                sums["end_drop"][layer, part] += (clean - ablated).sum(1)
                end_attention[layer, part] += attn.sum(1)
    for quantity in ("drop", "end_drop"):
        sums[quantity][~attends] = float("nan")
    end_attention[~attends] = float("nan")
    return HeadMeasures(logit_diff=total / n_total, end_attention_ablated=end_attention / n_total,
                        **{k: v / n_total for k, v in sums.items()})


def _prompt_sets(tokenizer, config: CircuitCardConfig, templates: list[str] | None, source: str | None):
    """(label, prompts) in the order the card tries them: the model's own templates alone when given; else the
    protocol prompts, then the robustness templates."""
    def over(chosen: list[str], label: str):
        prompts = distribution_prompts(tokenizer, config.n_template_prompts, config.template_seed, chosen)
        return f"{len(prompts)} prompts over {label}", prompts
    if templates:
        mine = f"{len(templates)} template{'s' if len(templates) != 1 else ''} of your own"
        return [over(list(templates), mine + (f" ({source})" if source else ""))]
    return [(PROTOCOL, protocol_prompts()),
            over(list(DISTRIBUTION_TEMPLATES), f"the {len(DISTRIBUTION_TEMPLATES)} robustness templates (mechinterp.ioi)")]


def _card_roles(measures: HeadMeasures, roles: Roles, top_k: int) -> dict[str, list[RoleHead]]:
    ld = abs(measures.logit_diff)

    def listed(role: list[tuple[int, int]], score: torch.Tensor, attention: torch.Tensor) -> list[RoleHead]:
        return [RoleHead((l, h), float(score[l, h] / ld), float(attention[l, h]), float(measures.direct[l, h] / ld))
                for l, h in role[:top_k]]

    return {"name_movers": listed(roles.name_movers, measures.drop, measures.attn_io),
            "negative_name_movers": listed(roles.negative_name_movers, measures.drop, measures.attn_io),
            "s_inhibition": listed(roles.s_inhibition, measures.end_drop, measures.attn_s),
            "s_suppression": listed(roles.s_suppression, measures.drop, measures.attn_s)}


def _behaviour(model: HookedTransformer, groups: list[IOIBatch]) -> tuple[float, float]:
    """Mean logit difference and P(IO) over the prompts of `groups`."""
    ld = pio = 0.0
    with torch.inference_mode():
        for batch in groups:
            logits = model(batch.tokens.to(model.cfg.device))
            ld += logit_diff(logits, batch).item() * len(batch)
            pio += p_io(logits, batch).item() * len(batch)
    n = sum(len(batch) for batch in groups)
    return ld / n, pio / n


def _handover(model: HookedTransformer, tokenizer, label: str, groups: list[IOIBatch], config: CircuitCardConfig) -> float:
    """The S2 -> END handover layer: on the thesis's patching pair with the protocol prompts, else on the largest
    group of the card's prompts, each corrupted S2 -> IO."""
    if label == PROTOCOL:
        clean, corrupt = patching_pair_batches(tokenizer)
    else:
        clean = max(groups, key=len)
        corrupt = corrupt_s2_to_io(clean)
    resid = patch_resid_pre_by_pos(model, clean, corrupt, cfg=config.patching)
    return s2_to_end_handover(resid, int(clean.pos("S2")[0]), int(clean.pos("END")[0]))["handover_layer"]


def circuit_card(model: HookedTransformer, tokenizer, config: CircuitCardConfig | None = None,
                 templates: list[str] | None = None, templates_source: str | None = None) -> CircuitCard:
    """Measure the card of `model` (module docstring), on `templates` (checked IOI templates, mechinterp.ioi)
    when given, else on the protocol prompts or, where the model shows no IOI on those, the robustness templates."""
    config = config or CircuitCardConfig()
    floors = config.floors
    notes: list[str] = []
    tried = []  # (label, groups, logit diff, P(IO)) of each prompt set read
    for label, prompts in _prompt_sets(tokenizer, config, templates, templates_source):
        try:
            groups = [group.batch for group in batches_by_length(tokenizer, prompts)]
        except IOIDataError as unreadable:  # e.g. a name that is several tokens under this tokenizer
            notes.append(f"{label} unreadable: {unreadable}")
            continue
        tried.append((label, groups, *_behaviour(model, groups)))
        if tried[-1][2] >= floors.min_logit_diff:
            break
    if not tried:
        raise IOIDataError("; ".join(notes))
    chosen = tried[-1] if tried[-1][2] >= floors.min_logit_diff else tried[0]
    label, groups, total, pio = chosen
    does_ioi = total >= floors.min_logit_diff
    for other, _, ld, _ in tried:
        if ld < floors.min_logit_diff:
            notes.append(f"logit difference {ld:.2f} < {floors.min_logit_diff:g} on {other}: no IOI behaviour there"
                         + ("" if does_ioi else ", so no role and no handover layer"))
    protocol_ld = next((ld for other, _, ld, _ in tried if other == PROTOCOL), None)
    if protocol_ld is None:
        try:
            protocol_ld = _behaviour(model, [make_batch(tokenizer, protocol_prompts())])[0]
        except IOIDataError:
            protocol_ld = float("nan")

    roles = {"name_movers": [], "negative_name_movers": [], "s_inhibition": [], "s_suppression": []}
    handover = float("nan")
    if does_ioi:
        measures = head_measures(model, groups, config.max_rows_per_forward, floors.min_attention)
        roles = _card_roles(measures, assign_roles(measures, floors), config.top_k)
        if not roles["name_movers"]:
            notes.append("no name movers, so no S-inhibition (a head suppressing S without them is S-suppression)")
        try:
            handover = _handover(model, tokenizer, label, groups, config)
        except PatchingError as undefined:  # the corruption does not move the metric
            notes.append(f"patching undefined: {undefined}")

    scores = head_scores(model, config.head_scores)
    by_score = lambda kind: [RoleHead(head, score) for head, score in _top_scores(scores[kind], config)]  # noqa: E731
    return CircuitCard(
        model_name=model.cfg.model_name, logit_diff=total, p_io=pio, prompts=label, protocol_logit_diff=protocol_ld,
        **roles, previous_token=by_score("previous_token"), duplicate_token=by_score("duplicate_token"),
        induction=by_score("induction"), handover_layer=handover, notes=notes, does_ioi=does_ioi,
    )


def _top_scores(scores: torch.Tensor, config: CircuitCardConfig) -> list[tuple[tuple[int, int], float]]:
    scores = scores.double().cpu()
    return [(head, float(scores[head])) for head in ranked(scores, scores >= config.min_head_score)[: config.top_k]]
