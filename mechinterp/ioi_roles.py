"""The IOI roles' rules and floors, defined once.

Two implementations measure every head of a model: the circuit card (mechinterp.circuit_card, on the
thesis's prompts or the model's own) and the learned models' brute force (fixtures.learned.ground_truth,
written apart from mechinterp's analyses, on held-out name pairs). Each fills a HeadMeasures; the roles
are then named here, by one rule, so a disagreement between the two is one of measurement, never of
definition. Every causal role needs its total effect (the head mean-ablated) beside its direct effect
and attention, and no role is named unless the model does IOI at all:

  name mover            attends IO from END (more than S1 + S2, and at least min_attention); direct effect
                        >= share of the logit difference; ablating it drops the logit difference by >= share
                        (a head whose removal raises the logit difference is never a name mover)
  negative name mover   the same attention; direct effect <= -share; ablating it raises the logit
                        difference by >= share
  S-inhibition          neither; attends S (S1 + S2) from END (>= min_attention, more than IO); ablating it
                        at END only drops the logit difference by >= share, and lowers the name movers' END
                        attention margin (IO - S1 - S2, summed over the movers) by >= margin: it acts through
                        the movers' queries (Wang et al.). No name mover, no S-inhibition
  S-suppression         none of these; attends S from END at least s_selectivity x IO (and >= min_attention);
                        ablating it drops the logit difference by >= share: it reads S and works against it
                        with no name mover in between

"drop" is clean logit difference - ablated, each head's z replaced by its mean over the prompts (per position).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class RoleFloors:
    # Below it (odds IO:S under e:1) there is no IOI behaviour to attribute: no role, no handover layer. Measured:
    # the learned no-IOI control (logit difference -0.03) got patching "effects" of 0.1-0.4 out of a near-zero gap.
    min_logit_diff: float = 1.0
    # Of the clean logit difference, for total (ablation) and direct effects alike: a part must carry a tenth of the
    # behaviour (E2.head-patch's 10% of the gap).
    share: float = 0.1
    # Of attention weight: several times a uniform head's 0.02-0.05 here. Measured: without it a 2-layer learned
    # model's H1.7 (END->IO 0.02, END->S 0.02, direct +0.32 of 2.84) passed "IO more than S" attending neither name.
    min_attention: float = 0.1
    margin: float = 0.1  # of attention weight: the least S-inhibition must move the name movers' END margin
    # S-suppression singles S out: a head splitting its attention between the names copies both (measured: the
    # learned neo-2l-s0's H0.7, END->S 0.53 vs END->IO 0.45, ablation drop 3%).
    s_selectivity: float = 2.0


@dataclass
class HeadMeasures:
    """Each head's measurements, [n_layers, n_heads] float64 means over the prompts (logits, attention weights)."""

    logit_diff: float  # clean, mean over prompts
    drop: torch.Tensor  # ablated at every position
    end_drop: torch.Tensor  # ablated at END only
    direct: torch.Tensor  # the head's END output through the final LayerNorm onto W_U[:, IO] - W_U[:, S]
    attn_io: torch.Tensor  # END -> IO
    attn_s: torch.Tensor  # END -> S1 + END -> S2
    # [L, H, 2, L, H]: with head (l, h) ablated at END only, every head's END -> IO (0) and END -> S1 + S2 (1)
    end_attention_ablated: torch.Tensor


@dataclass
class Roles:
    name_movers: list[tuple[int, int]] = field(default_factory=list)  # by drop, largest first
    negative_name_movers: list[tuple[int, int]] = field(default_factory=list)  # by drop, most negative first
    s_inhibition: list[tuple[int, int]] = field(default_factory=list)  # by name-mover margin drop
    s_suppression: list[tuple[int, int]] = field(default_factory=list)  # by drop
    nm_margin_drop: torch.Tensor | None = None  # [L, H], zeros when there is no name mover
    does_ioi: bool = False


def ranked(values: torch.Tensor, keep: torch.Tensor, descending: bool = True) -> list[tuple[int, int]]:
    """The heads where `keep` holds, ordered by `values`."""
    n = values.shape[1]
    order = values.flatten().argsort(descending=descending, stable=True)
    return [(int(i) // n, int(i) % n) for i in order if keep.flatten()[i]]


def assign_roles(m: HeadMeasures, floors: RoleFloors | None = None) -> Roles:
    """The roles of `m`'s heads under `floors` (module docstring)."""
    floors = floors or RoleFloors()
    ld = m.logit_diff
    does_ioi = ld >= floors.min_logit_diff
    none = torch.zeros_like(m.drop, dtype=torch.bool)
    if not does_ioi:
        return Roles(nm_margin_drop=torch.zeros_like(m.drop), does_ioi=False)
    floor = floors.share * ld
    attends_io = (m.attn_io > m.attn_s) & (m.attn_io >= floors.min_attention)
    is_mover = attends_io & (m.direct >= floor) & (m.drop >= floor)
    is_negative = attends_io & (m.direct <= -floor) & (m.drop <= -floor)
    margin_drop = torch.zeros_like(m.drop)
    if is_mover.any():
        movers = is_mover.double()
        clean_margin = ((m.attn_io - m.attn_s) * movers).sum()
        ablated = m.end_attention_ablated
        margin_drop = clean_margin - ((ablated[:, :, 0] - ablated[:, :, 1]) * movers).sum((-2, -1))
    attends_s = (m.attn_s > m.attn_io) & (m.attn_s >= floors.min_attention)
    is_s_inhibition = (~is_mover & ~is_negative & attends_s & (m.end_drop >= floor) & (margin_drop >= floors.margin)
                       if is_mover.any() else none)
    is_s_suppression = (~is_mover & ~is_negative & ~is_s_inhibition & (m.drop >= floor)
                        & (m.attn_s >= floors.s_selectivity * m.attn_io) & (m.attn_s >= floors.min_attention))
    return Roles(name_movers=ranked(m.drop, is_mover), negative_name_movers=ranked(m.drop, is_negative, descending=False),
                 s_inhibition=ranked(margin_drop, is_s_inhibition), s_suppression=ranked(m.drop, is_s_suppression),
                 nm_margin_drop=margin_drop, does_ioi=True)
