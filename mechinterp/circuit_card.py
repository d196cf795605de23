"""The IOI circuit of any model, found by role rather than by head index (thesis ch. 5 future work).

For every model (every TinyStories version, GPT-2 small, an unidentified checkpoint) the card
answers: how well does it do IOI, and which heads play which part? No thresholds: the card is
measured and shown. Each role is a rule over the suite's own measurements:

  name movers           positive direct logit attribution (DLA) at END and END attends IO more
                        than S1 + S2, and noticeably (thesis s3.4.2: H7.7; GPT-2 small H9.9, H9.6)
  negative name movers  the same attention, negative DLA beyond noticeable_dla of the logit
                        difference (GPT-2 small 10.7, 11.10; none in TS-8M)
  S-inhibition          head patching moves the logit difference (|effect| >= noticeable_effect),
                        END attends S2 (noticeably, and more than IO), the head's own DLA is
                        small, and its effect goes through the name movers: patching its END output
                        alone lowers their END attention margin (IO - S1 - S2) by noticeable_margin
                        (Wang et al.'s definition; thesis fig 3.13: H5.7; GPT-2 small 8.6). No name
                        movers, no S-inhibition: a head suppressing S through the MLPs is another role
  previous-token / duplicate-token / induction
                        E1's attention scores on repeated random tokens (mechinterp.head_scores),
                        heads scoring at least min_head_score
  handover layer        residual patching: first layer where patching END restores more than S2

Roles that read the logit difference (all but the E1 scores) need it at least min_logit_diff.

Inputs are the thesis's: the 8 protocol prompts for logit difference, DLA and attention; its
patching pair (corrupt -> clean) for head and residual patching; E1's random-token setup.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformer_lens import HookedTransformer

from mechinterp.attention import mean_attention
from mechinterp.dla import head_dla
from mechinterp.head_scores import HeadScoreConfig, head_scores
from mechinterp.ioi import IOIBatch, make_batch, protocol_prompts
from mechinterp.metrics import logit_diff, p_io
from mechinterp.patching import (
    PatchingConfig,
    PatchingError,
    patch_head_out_all_pos,
    patch_resid_pre_by_pos,
    patching_pair_batches,
    s2_to_end_handover,
)


@dataclass(frozen=True)
class CircuitCardConfig:
    top_k: int = 3  # heads listed per role
    noticeable_dla: float = 0.05  # |DLA| / logit difference that counts as a direct effect (E2.no-neg-mover's 5%)
    noticeable_effect: float = 0.1  # |patching effect| that counts (E2.head-patch's 10% of the gap)
    noticeable_attention: float = 0.1  # an attention weight that counts: several times the ~0.02-0.05 of a uniform head here
    noticeable_margin: float = 0.1  # name movers' END margin (attention weight) S-inhibition must move: the same floor
    # The logit difference below which no role that reads it (DLA fraction, patching) is named: odds IO:S under
    # e:1 is no IOI behaviour to attribute, and a fraction of a near-zero total or gap is noise (measured: the
    # learned control, logit difference -0.03, got patching "effects" of 0.1-0.4). fixtures.learned.ground_truth's floor.
    min_logit_diff: float = 1.0
    # S-suppression singles S out: END->S1+S2 at least this many times END->IO. A head splitting its attention between
    # the two names copies both (measured: neo-2l-s0's H0.7, 0.53 vs 0.45, patching effect 0.19, ablation drop 3%).
    s_selectivity: float = 2.0
    min_head_score: float = 0.1  # E1 scores listed from here: 5-10x chance (0.01-0.02 on 50-100 keys)
    head_scores: HeadScoreConfig = field(default_factory=lambda: HeadScoreConfig(n_sequences=20, seq_len=50, seed=0))  # E1's
    patching: PatchingConfig = field(default_factory=lambda: PatchingConfig(progress=False))


@dataclass(frozen=True)
class RoleHead:
    head: tuple[int, int]
    score: float  # the role's ranking value: DLA fraction, patching effect or attention score
    attention: float | None = None  # the role's attention: END->IO (movers) or END->S2 (S-inhibition)

    @property
    def name(self) -> str:
        return f"H{self.head[0]}.{self.head[1]}"

    def describe(self) -> str:
        attention = "" if self.attention is None else f", attn {self.attention:.2f}"
        return f"{self.name} ({self.score:+.2f}{attention})"


@dataclass
class CircuitCard:
    model_name: str
    logit_diff: float
    p_io: float
    name_movers: list[RoleHead]
    negative_name_movers: list[RoleHead]
    s_inhibition: list[RoleHead]
    s_suppression: list[RoleHead]
    previous_token: list[RoleHead]
    duplicate_token: list[RoleHead]
    induction: list[RoleHead]
    handover_layer: float  # n_layers when END never overtakes S2; NaN when patching is undefined
    notes: list[str] = field(default_factory=list)

    def values(self) -> dict[str, float]:
        """The card's numbers, for the report's measured-values column."""
        first = lambda heads: heads[0].score if heads else float("nan")  # noqa: E731
        return {"logit_diff": self.logit_diff, "p_io": self.p_io, "handover_layer": self.handover_layer,
                "top_name_mover_dla_fraction": first(self.name_movers),
                "top_s_inhibition_patching_effect": first(self.s_inhibition),
                "top_s_suppression_patching_effect": first(self.s_suppression),
                "n_negative_name_movers": float(len(self.negative_name_movers))}

    def table(self) -> dict[str, str]:
        """Label -> short text, one row per role: what the report shows side by side per model."""
        heads = lambda role: ", ".join(h.describe() for h in role) or "none"  # noqa: E731
        return {
            "logit diff / P(IO)": f"{self.logit_diff:.2f} / {self.p_io:.3f}",
            "name movers (DLA fraction, END->IO)": heads(self.name_movers),
            "negative name movers (DLA fraction, END->IO)": heads(self.negative_name_movers),
            "S-inhibition (patching effect, END->S2)": heads(self.s_inhibition),
            "S-suppression (patching effect, END->S1+S2)": heads(self.s_suppression),
            "duplicate-token (score)": heads(self.duplicate_token),
            "previous-token (score)": heads(self.previous_token),
            "induction (score)": heads(self.induction),
            "S2 -> END handover layer": f"{self.handover_layer:g}",
            **({"notes": "; ".join(self.notes)} if self.notes else {}),
        }


def _ranked(values: torch.Tensor, keep: torch.Tensor, k: int, attention: torch.Tensor | None = None,
            descending: bool = True) -> list[RoleHead]:
    """The k heads where `keep` holds, ordered by `values`."""
    flat, mask = values.flatten(), keep.flatten()
    order = flat.argsort(descending=descending)
    n_heads = values.shape[1]
    picked = [int(i) for i in order if mask[i]][:k]
    return [RoleHead((i // n_heads, i % n_heads), float(flat[i]),
                     None if attention is None else float(attention.flatten()[i])) for i in picked]


def name_mover_margin_drop(model: HookedTransformer, clean: IOIBatch, corrupt: IOIBatch, heads: list[tuple[int, int]],
                           movers: list[tuple[int, int]]) -> torch.Tensor:
    """[len(heads)] how much patching each head's END output alone from `corrupt` into `clean` lowers the
    movers' END attention margin (END->IO - END->S1 - END->S2, summed over `movers`, mean over prompts).
    Hand-written: transformer_lens patches into a metric of the logits, this reads attention patterns."""
    copies = len(heads) + 1  # copy 0 is the clean run
    tiled, n = clean.tile(copies), len(clean)
    end = clean.pos("END")
    with torch.inference_mode():
        _, corrupt_cache = model.run_with_cache(corrupt.tokens.to(model.cfg.device),
                                                names_filter=lambda name: name.endswith("attn.hook_z"))
    rows = torch.arange(n)

    def patch_z(z, hook):
        for copy, (layer, head) in enumerate(heads, start=1):
            if layer == hook.layer():
                z[copy * n + rows, end, head] = corrupt_cache[hook.name][rows, end, head].to(z.dtype)
        return z

    mover_layers = sorted({layer for layer, _ in movers})
    patterns = {}
    keep = lambda pattern, hook: patterns.__setitem__(hook.layer(), pattern)  # noqa: E731
    hooks = [(f"blocks.{l}.attn.hook_z", patch_z) for l in sorted({l for l, _ in heads})]
    hooks += [(f"blocks.{l}.attn.hook_pattern", keep) for l in mover_layers]
    with torch.inference_mode():
        model.run_with_hooks(tiled.tokens.to(model.cfg.device), fwd_hooks=hooks)
    all_rows, end_all = torch.arange(len(tiled)), tiled.pos("END")
    margin = torch.zeros(len(tiled), dtype=torch.float64)
    for layer, head in movers:
        at_end = patterns[layer][all_rows, head, end_all].double().cpu()  # [rows, key]
        margin += (at_end[all_rows, tiled.pos("IO")] - at_end[all_rows, tiled.pos("S1")] - at_end[all_rows, tiled.pos("S2")])
    by_copy = margin.view(copies, n).mean(1)
    return by_copy[0] - by_copy[1:]


def circuit_card(model: HookedTransformer, tokenizer, config: CircuitCardConfig | None = None) -> CircuitCard:
    """Measure the card of `model` (see the module docstring for each role's rule)."""
    config = config or CircuitCardConfig()
    batch = make_batch(tokenizer, protocol_prompts())
    with torch.inference_mode():
        logits = model(batch.tokens.to(model.cfg.device))
    total = logit_diff(logits, batch).item()
    notes = []
    does_ioi = total >= config.min_logit_diff
    if not does_ioi:
        notes.append(f"logit difference {total:.2f} < {config.min_logit_diff:g}: no IOI behaviour, so no role that reads it")

    dla = head_dla(model, batch).double().cpu()
    dla_fraction = dla / abs(total) if abs(total) > 1e-9 else dla * float("nan")
    attention = mean_attention(model, batch, [("END", "IO"), ("END", "S1"), ("END", "S2")])
    to_io, to_s = attention[("END", "IO")], attention[("END", "S1")] + attention[("END", "S2")]
    # A mover must attend IO at all, not only more than S: a head with 0.02 on IO and on S is resting, not moving
    # (the learned models' brute force, fixtures.learned.ground_truth, has the same floor).
    attends_io = (to_io > to_s) & (to_io >= config.noticeable_attention) & does_ioi
    name_movers = _ranked(dla_fraction, attends_io & (dla_fraction > config.noticeable_dla), config.top_k, to_io)
    negative = _ranked(dla_fraction, attends_io & (dla_fraction < -config.noticeable_dla), config.top_k, to_io,
                       descending=False)

    try:
        clean, corrupt = patching_pair_batches(tokenizer)
        effects = patch_head_out_all_pos(model, clean, corrupt, cfg=config.patching).double().cpu()
        resid = patch_resid_pre_by_pos(model, clean, corrupt, cfg=config.patching)
        handover = s2_to_end_handover(resid, int(clean.pos("S2")[0]), int(clean.pos("END")[0]))["handover_layer"]
        to_s2 = attention[("END", "S2")]
        s_inhibition_rule = (does_ioi & (effects.abs() >= config.noticeable_effect) & (to_s2 > to_io)
                             & (to_s2 >= config.noticeable_attention) & (dla_fraction.abs() < config.noticeable_dla))
        candidates = [(int(l), int(h)) for l, h in s_inhibition_rule.nonzero()]
        if candidates and not name_movers:
            notes.append("no name movers, so no S-inhibition (the patching rule alone names "
                         + ", ".join(f"H{l}.{h}" for l, h in candidates) + ", with no mover's attention to move; S-suppression lists those that single S out)")
        through_movers = torch.zeros_like(s_inhibition_rule)
        if candidates and name_movers:
            drops = name_mover_margin_drop(model, clean, corrupt, candidates, [m.head for m in name_movers])
            for (l, h), drop in zip(candidates, drops):
                through_movers[l, h] = bool(drop >= config.noticeable_margin)
        s_inhibition = _ranked(effects.abs(), s_inhibition_rule & through_movers, config.top_k, attention[("END", "S2")])
        # S1 + S2, not S2 alone: a head that copies S to write against it may read either occurrence.
        # Signed: its clean output must restore the logit difference (a head lifting S gives a negative effect).
        s_suppression_rule = (does_ioi & (effects >= config.noticeable_effect) & (to_s >= config.s_selectivity * to_io)
                              & (to_s >= config.noticeable_attention) & ~(s_inhibition_rule & through_movers))
        s_suppression = _ranked(effects.abs(), s_suppression_rule, config.top_k, to_s)
    except PatchingError as undefined:  # the corruption does not move the metric: no patching role
        notes.append(f"patching undefined: {undefined}")
        s_inhibition, s_suppression, handover = [], [], float("nan")

    scores = head_scores(model, config.head_scores)
    by_score = lambda kind: _ranked(scores[kind].double().cpu(), scores[kind] >= config.min_head_score, config.top_k)  # noqa: E731
    return CircuitCard(
        model_name=model.cfg.model_name, logit_diff=total, p_io=p_io(logits, batch).item(),
        name_movers=name_movers, negative_name_movers=negative, s_inhibition=s_inhibition, s_suppression=s_suppression,
        previous_token=by_score("previous_token"), duplicate_token=by_score("duplicate_token"),
        induction=by_score("induction"), handover_layer=handover, notes=notes,
    )
