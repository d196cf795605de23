"""Claims beyond the eight protocol prompts: every quantity over a distribution of IOI prompts, with a
bootstrap interval over prompts, the spread across templates and a robustness verdict.

A claim's distribution measure has two parts:
  collect(model, batch) -> {name: tensor [prompts, ...]}  per-prompt arrays from one length group's forward
                                                          passes (mechinterp.ioi.batches_by_length)
  statistic(means) -> {quantity: float}                   the claim's quantities from the arrays' means over
                                                          prompts (every E1/E2 quantity is a function of
                                                          means: a mean, a ratio of means, an argmax, ...)
so a bootstrap resample or a held-out template is only another weighting of the prompts: the forwards run
once (weighted means of the cached arrays), never once per resample.

Reported per quantity: the value on the whole distribution, a percentile bootstrap interval over prompts
(`RobustnessConfig.n_bootstrap` resamples of all prompts with replacement), and the range of the value
with each template held out once. Verdict per threshold row: "robust" when the row holds at the
interval's bound (the lower end for >, >=; the upper for <, <=; both for 'within'), "protocol only" when
it holds on the protocol prompts but not so, "fails" when it fails on the protocol prompts (the protocol
value decides the threshold table, whatever the distribution says). A claim is robust when all its rows
are, fails when any fails on the protocol, and is "protocol only" otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from mechinterp import progress
from mechinterp.heads import Head
from mechinterp.ioi import (
    DISTRIBUTION_TEMPLATES,
    batches_by_length,
    distribution_prompts,
)
from mechinterp.memo import memoized

Arrays = dict[str, torch.Tensor]
Collect = Callable[..., Arrays]  # (model, batch) -> per-prompt arrays
Statistic = Callable[[Mapping[str, torch.Tensor]], dict[str, float]]  # means over prompts -> quantities
# means over prompts -> the head filling a role (or the heads, for a role the claim gives to several)
RoleFinder = Callable[[Mapping[str, torch.Tensor]], "Head | tuple[Head, ...]"]

ROBUST, PROTOCOL_ONLY, FAILS = "robust", "protocol only", "fails"


# Prompts per model by default: the full 256 where a forward pass is cheap (TinyStories-8M, d_model 256),
# 64 on wider models (GPT-2 small, d_model 768: its 256-prompt pass alone on one core took 584 s, most
# of a default run). `--distribution-prompts 256` gives the full pass everywhere; the page says how many.
FULL_PROMPT_COUNT, WIDE_MODEL_PROMPT_COUNT, WIDE_D_MODEL = 256, 64, 512


def default_prompt_count(model) -> int:
    return FULL_PROMPT_COUNT if model.cfg.d_model < WIDE_D_MODEL else WIDE_MODEL_PROMPT_COUNT


@dataclass(frozen=True)
class RobustnessConfig:
    n_prompts: int = 256  # prompts drawn (mechinterp.ioi.distribution_prompts); CI may use fewer
    seed: int = 0  # the prompts' draw (names, places, objects)
    n_bootstrap: int = 1000  # resamples of the prompts
    confidence: float = 0.95  # two-sided percentile interval
    bootstrap_seed: int = 0
    templates: tuple[str, ...] = tuple(DISTRIBUTION_TEMPLATES)

    def describe(self) -> str:
        return (f"{self.n_prompts} prompts over {len(self.templates)} templates (ABBA and BABA, seed {self.seed}); "
                f"{self.confidence:.0%} percentile bootstrap over prompts ({self.n_bootstrap} resamples); "
                "spread: the value with each template held out once")


@dataclass
class PerPrompt:
    """Per-prompt arrays (leading axis: prompt) and each prompt's group (its template)."""

    arrays: Arrays
    groups: list[str]

    def __post_init__(self):
        sizes = {name: a.shape[0] for name, a in self.arrays.items()}
        if not self.arrays or set(sizes.values()) != {len(self.groups)}:
            raise ValueError(f"every array needs one row per prompt ({len(self.groups)}): {sizes}")
        self.arrays = {name: a.double() for name, a in self.arrays.items()}

    def weighted_means(self, weights: torch.Tensor) -> dict[str, torch.Tensor]:
        """{name: [resamples, ...]} means of each array under `weights` [resamples, prompts] (rows sum to 1)."""
        return {name: torch.einsum("rn,n...->r...", weights.double(), a) for name, a in self.arrays.items()}

    def means(self) -> dict[str, torch.Tensor]:
        return {name: a.mean(0) for name, a in self.arrays.items()}


@dataclass
class DistributionResult:
    table: pd.DataFrame  # quantity, value, ci_low, ci_high, loto_min, loto_max, undefined_share
    roles: list[dict] = field(default_factory=list)  # role, protocol head, distribution head, same
    n_prompts: int = 0
    n_templates: int = 0


def bootstrap_weights(n_prompts: int, n_resamples: int, seed: int) -> torch.Tensor:
    """[resamples, prompts] weights of resampling the prompts with replacement (counts / n)."""
    generator = torch.Generator().manual_seed(seed)
    draws = torch.randint(0, n_prompts, (n_resamples, n_prompts), generator=generator)
    counts = torch.zeros(n_resamples, n_prompts, dtype=torch.float64)
    counts.scatter_add_(1, draws, torch.ones_like(draws, dtype=torch.float64))
    return counts / n_prompts


def held_out_weights(groups: Sequence[str]) -> tuple[list[str], torch.Tensor]:
    """(group names, [groups, prompts] weights: uniform over the prompts outside that group)."""
    names = list(dict.fromkeys(groups))
    labels = np.array(groups)
    weights = torch.tensor(np.stack([labels != g for g in names]), dtype=torch.float64)
    if bool((weights.sum(1) == 0).any()):
        raise ValueError("leave-one-group-out needs at least two groups")
    return names, weights / weights.sum(1, keepdim=True)


RESAMPLES_PER_CHUNK = 64  # weighted means held at once: [64, edges] for EAP's ~50k edges, not [1000, edges]


def _statistics(statistic: Statistic, per_prompt: PerPrompt, weights: torch.Tensor) -> pd.DataFrame:
    """One row of quantities per resample (row of `weights` [resamples, prompts]), in chunks of resamples."""
    rows = []
    for start in range(0, weights.shape[0], RESAMPLES_PER_CHUNK):
        means = per_prompt.weighted_means(weights[start:start + RESAMPLES_PER_CHUNK])
        n = next(iter(means.values())).shape[0]
        rows += [statistic({k: v[r] for k, v in means.items()}) for r in range(n)]
    return pd.DataFrame(rows, dtype=float)


def evaluate_distribution(per_prompt: PerPrompt, statistic: Statistic, cfg: RobustnessConfig,
             roles: Mapping[str, tuple[Head, RoleFinder]] | None = None,
             protocol_means: Mapping[str, torch.Tensor] | None = None) -> DistributionResult:
    """The statistic on all prompts, its bootstrap interval and its leave-one-template-out range; and for each
    role (name -> (the claim's head, finder)) the head the finder picks on the distribution (and on the protocol)."""
    point = statistic(per_prompt.means())
    boot = _statistics(statistic, per_prompt, bootstrap_weights(len(per_prompt.groups), cfg.n_bootstrap, cfg.bootstrap_seed))
    _, loto_w = held_out_weights(per_prompt.groups)
    loto = _statistics(statistic, per_prompt, loto_w)
    alpha = (1 - cfg.confidence) / 2
    rows = []
    for quantity, value in point.items():
        samples = boot[quantity].to_numpy(dtype=float)
        undefined = np.isnan(samples)
        defined = samples[~undefined]
        low, high = (np.quantile(defined, [alpha, 1 - alpha]) if len(defined) else (math.nan, math.nan))
        held = loto[quantity].to_numpy(dtype=float)
        rows.append({"quantity": quantity, "value": float(value), "ci_low": float(low), "ci_high": float(high),
                     "loto_min": float(np.nanmin(held)) if not np.isnan(held).all() else math.nan,
                     "loto_max": float(np.nanmax(held)) if not np.isnan(held).all() else math.nan,
                     "undefined_share": float(undefined.mean())})
    found = []
    means = per_prompt.means()
    for role, (head, finder) in (roles or {}).items():
        on_distribution = _heads(finder(means))
        entry = {"role": role, "claim_head": _heads_name(_heads(head)), "distribution_head": _heads_name(on_distribution),
                 "same_head": on_distribution == _heads(head)}
        if protocol_means is not None:
            entry["protocol_head"] = _heads_name(_heads(finder(protocol_means)))
        found.append(entry)
    return DistributionResult(pd.DataFrame(rows), found, len(per_prompt.groups), len(set(per_prompt.groups)))


def _heads(value) -> tuple[Head, ...]:
    """A role's head(s) as a sorted tuple: one Head, or several where a role is shared (e.g. the top two)."""
    if isinstance(value, Head) or (isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, int) for v in value)):
        return (Head.parse(value),)
    return tuple(sorted(Head.parse(v) for v in value))


def _heads_name(heads: tuple[Head, ...]) -> str:
    return "+".join(str(h) for h in heads)


# --- verdicts -----------------------------------------------------------------------------------


def holds_on_interval(row, low: float, high: float, undefined_share: float = 0.0, alpha: float = 0.025) -> bool:
    """Whether threshold `row` (claims.thresholds.Threshold) holds at the interval's bound. More undefined
    resamples (NaN: the quantity does not exist there) than the interval's tail is a failure."""
    if undefined_share > alpha:
        return False
    if row.op in (">", ">="):
        return row.passes(low)
    if row.op in ("<", "<="):
        return row.passes(high)
    return row.passes(low) and row.passes(high)


def row_verdict(row, protocol_value: float | None, dist_row: Mapping | None, alpha: float = 0.025) -> str:
    if protocol_value is None or not row.passes(protocol_value):
        return FAILS
    if dist_row is None:
        return PROTOCOL_ONLY
    robust = holds_on_interval(row, dist_row["ci_low"], dist_row["ci_high"], dist_row["undefined_share"], alpha)
    return ROBUST if robust else PROTOCOL_ONLY


def claim_verdict(row_verdicts: Sequence[str]) -> str:
    if not row_verdicts or FAILS in row_verdicts:
        return FAILS
    return ROBUST if all(v == ROBUST for v in row_verdicts) else PROTOCOL_ONLY


def verdicts(rows, protocol_values: Mapping[str, float], result: DistributionResult, cfg: RobustnessConfig) -> dict:
    """The report's robustness block: per row thesis value, protocol value, distribution value [interval],
    held-out range and verdict; the claim's verdict; the roles; what the distribution was."""
    by_quantity = {r["quantity"]: r for r in result.table.to_dict("records")}
    alpha = (1 - cfg.confidence) / 2
    per_row = []
    for row in rows:
        dist = by_quantity.get(row.quantity)
        verdict = row_verdict(row, protocol_values.get(row.quantity), dist, alpha)
        per_row.append({
            "quantity": row.quantity, "rule": row.describe(), "thesis": row.thesis_value,
            "protocol": protocol_values.get(row.quantity),
            "distribution": None if dist is None else dist["value"],
            "interval": None if dist is None else [dist["ci_low"], dist["ci_high"]],
            "held_out_range": None if dist is None else [dist["loto_min"], dist["loto_max"]],
            "verdict": verdict,
        })
    shown = {r.quantity for r in rows}
    others = [{"quantity": q, "distribution": d["value"], "interval": [d["ci_low"], d["ci_high"]],
               "held_out_range": [d["loto_min"], d["loto_max"]]} for q, d in by_quantity.items() if q not in shown]
    # A role is checked where this model's rows name its head (H7.7's rows are TinyStories-8M's, not GPT-2 small's).
    named = " ".join(row.quantity for row in rows)
    roles = [r for r in result.roles if all(f"{h}_" in named for h in r["claim_head"].split("+"))]
    return {"verdict": claim_verdict([r["verdict"] for r in per_row]), "rows": per_row, "without_row": others,
            "roles": roles, "distribution": cfg.describe(), "n_prompts": result.n_prompts,
            "n_templates": result.n_templates}


# --- running a claim's collect over the distribution ---------------------------------------------


def collect_over_prompts(model, tokenizer, collect: Collect, prompts) -> PerPrompt:
    """`collect` on each length group (one batch each), rows put back in prompt order."""
    prompts = list(prompts)
    parts: dict[str, list] = {}
    order = []
    with progress.stage("distribution", total=len(prompts), unit="prompts") as stage:
        for group in batches_by_length(tokenizer, prompts):
            for name, values in collect(model, group.batch).items():
                parts.setdefault(name, []).append(values.detach().double().cpu())
            order.append(group.rows)
            stage.advance(len(group.rows))
    inverse = torch.argsort(torch.cat(order))
    arrays = {name: torch.cat(chunks)[inverse] for name, chunks in parts.items()}
    return PerPrompt(arrays, [p.template for p in prompts])


def distribution_per_prompt(model, tokenizer, collect: Collect, cfg: RobustnessConfig) -> PerPrompt:
    """`collect` over cfg's distribution, once per model (memoized by collect and distribution)."""
    name = f"{getattr(collect, '__module__', '')}.{getattr(collect, '__qualname__', repr(collect))}"
    key = ("distribution", name, cfg.n_prompts, cfg.seed, cfg.templates)

    def compute():
        prompts = distribution_prompts(tokenizer, cfg.n_prompts, cfg.seed, list(cfg.templates))
        return collect_over_prompts(model, tokenizer, collect, prompts)

    return memoized(model, key, compute)


@dataclass(frozen=True)
class ClaimDistribution:
    """How one claim is measured on the distribution: its collect, its statistic and its head roles."""

    collect: Collect | tuple[Collect, ...]  # several: each memoized on its own, arrays merged
    statistic: Statistic
    roles: Mapping[str, tuple[Head, RoleFinder]] = field(default_factory=dict)


def robustness_block(model, tokenizer, spec: ClaimDistribution, rows, protocol_values: Mapping[str, float],
                     cfg: RobustnessConfig, protocol_per_prompt: PerPrompt | None = None) -> dict:
    """Everything the report shows about one claim on one model beyond the protocol prompts."""
    collects = spec.collect if isinstance(spec.collect, tuple) else (spec.collect,)
    parts = [distribution_per_prompt(model, tokenizer, collect, cfg) for collect in collects]
    per_prompt = PerPrompt({name: a for part in parts for name, a in part.arrays.items()}, parts[0].groups)
    protocol_means = protocol_per_prompt.means() if protocol_per_prompt is not None else None
    result = evaluate_distribution(per_prompt, spec.statistic, cfg, spec.roles, protocol_means)
    return verdicts(rows, protocol_values, result, cfg)


def robustness_block_of(per_prompt: PerPrompt, spec: ClaimDistribution, rows, protocol_values: Mapping[str, float],
                        cfg: RobustnessConfig, describe: str | None = None) -> dict:
    """robustness_block for arrays collected some other way (E1: random-token sequences, not IOI prompts);
    `describe` replaces the distribution's description."""
    block = verdicts(rows, protocol_values, evaluate_distribution(per_prompt, spec.statistic, cfg, spec.roles), cfg)
    if describe:
        block["distribution"] = describe
    return block


def with_robustness(measured, model, tokenizer, spec: ClaimDistribution, rows, cfg: RobustnessConfig | None):
    """`measured` (claims.framework.Measured) with details["robustness"] added; cfg None or n_prompts 0: unchanged."""
    if cfg is None or cfg.n_prompts < 1:
        return measured
    measured.details["robustness"] = robustness_block(model, tokenizer, spec, rows, measured.values, cfg)
    return measured
