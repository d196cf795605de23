"""Batched activation patching (thesis section 3.4.2, figs 3.11-3.14).

Direction. Thesis section 2.5.6 defines "corrupt to clean" patching as: cache the CLEAN run, run
the CORRUPTED input, and re-run the corrupted input with chosen activations replaced by their
clean values. That is denoising, the same direction as transformer_lens.patching: the base run is
the corrupted prompt ("..., Mary gave the bag to") and the patch source is the clean prompt
("..., John gave the bag to"). The metric is always the clean answer's logit difference
logit(IO) - logit(S) at END, so it is high on the clean run and low on the corrupted run.

Normalization (`PatchingConfig.normalize`): (patched - corrupted) / (clean - corrupted), so the
unpatched corrupted run scores 0 and a patch that fully restores the clean behaviour scores 1.

Speed. transformer_lens.patching runs one full forward pass per patch. Here every patch is one
slice of a big batch (patch x prompt rows), each batch starts at the patched layer from the
corrupted run's cached residual stream (`start_at_layer`), runs only the positions from the first
one both the corruption and the patch change (the prefix's keys and values come from the corrupted
run), and reads only END: for the logit difference only its two unembedding columns (`end_metric`).

One generic routine (`patch_sites`) takes a DataFrame of sites (layer, pos, head); the named
variants build the sites and reshape the result, like transformer_lens.patching.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pandas as pd
import torch
from tqdm.auto import tqdm

from mechinterp import progress
from transformer_lens import HookedTransformer
from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache
from transformer_lens.cache.key_value_cache_entry import TransformerLensKeyValueCacheEntry
from transformer_lens.utilities import get_act_name

from mechinterp.ioi import IOIBatch, corrupt_s2_to_io, make_batch, patching_pair
from mechinterp.metrics import logit_diff

ALL = -1  # a site's pos or head of ALL patches every position / every head

# metric(logits [rows, vocab] at END, or [rows, seq, vocab]; batch of `rows` prompts) -> [rows]
PerPromptMetric = Callable[[torch.Tensor, IOIBatch], torch.Tensor]


def per_prompt_logit_diff(logits: torch.Tensor, batch: IOIBatch) -> torch.Tensor:
    return logit_diff(logits, batch, per_prompt=True)


@dataclass
class PatchingConfig:
    normalize: bool = True  # (patched - corrupted) / (clean - corrupted): unpatched 0, restored 1
    max_rows_per_forward: int = 1024  # patch x prompt rows in one forward pass; bounds memory
    progress: bool = True  # tqdm bar over the forward passes
    min_clean_corrupt_gap: float = 1e-6  # |clean - corrupted| below this cannot be normalized


class PatchingError(ValueError):
    """Bad patching input: mismatched batches, unknown activation, sites out of range, ..."""


# --- inputs -------------------------------------------------------------------------------------


def patching_pair_batches(tokenizer) -> tuple[IOIBatch, IOIBatch]:
    """The thesis's pair (section 3.4.2) as batches: clean '..., John gave', corrupted '..., Mary gave'."""
    clean_prompt, corrupt_prompt = patching_pair()
    clean = make_batch(tokenizer, [clean_prompt])
    corrupt = corrupt_s2_to_io(clean)
    expected = [tokenizer.bos_token_id] + tokenizer.encode(corrupt_prompt.text, add_special_tokens=False)
    if corrupt.tokens[0].tolist() != expected:
        raise PatchingError(f"corrupted tokens do not spell {corrupt_prompt.text!r}")
    return clean, corrupt


def dataset_batches(tokenizer, prompts) -> tuple[IOIBatch, IOIBatch]:
    """Clean batch of `prompts` and its S2 -> IO corruption (the thesis's corruption, on a dataset)."""
    clean = make_batch(tokenizer, prompts)
    return clean, corrupt_s2_to_io(clean)


def check_pair(model: HookedTransformer, clean: IOIBatch, corrupt: IOIBatch) -> None:
    if clean.tokens.shape != corrupt.tokens.shape:
        raise PatchingError(f"clean {tuple(clean.tokens.shape)} and corrupted {tuple(corrupt.tokens.shape)} token shapes differ")
    if not (torch.equal(clean.io_token, corrupt.io_token) and torch.equal(clean.s_token, corrupt.s_token)):
        raise PatchingError("clean and corrupted batches must score the same answers (IO, S)")
    if not torch.equal(clean.pos("END"), corrupt.pos("END")):
        raise PatchingError("clean and corrupted END positions differ")
    if int(clean.tokens.max()) >= model.cfg.d_vocab:
        raise PatchingError(f"token id {int(clean.tokens.max())} outside the model's vocabulary ({model.cfg.d_vocab})")


def tile_batch(batch: IOIBatch, copies: int) -> IOIBatch:
    """`copies` stacked copies of `batch` (row = copy * len(batch) + prompt); kept for callers of the
    old name, the routine is IOIBatch.tile."""
    return batch.tile(copies)


# --- the shared pieces (also used by attribution_patching and eap) -------------------------------


def _final_at_end(model: HookedTransformer, final_resid: torch.Tensor, batch: IOIBatch) -> torch.Tensor:
    """[rows, d_model]: the final residual stream [rows, seq, d_model] at END, after the final layer norm."""
    rows = torch.arange(final_resid.shape[0], device=final_resid.device)
    at_end = final_resid[rows, batch.pos("END").to(final_resid.device)][:, None, :]
    if model.cfg.normalization_type is not None:
        at_end = model.ln_final(at_end)
    return at_end[:, 0]


def _soft_cap(model: HookedTransformer, logits: torch.Tensor) -> torch.Tensor:
    if getattr(model.cfg, "output_logits_soft_cap", -1.0) > 0:
        cap = model.cfg.output_logits_soft_cap
        logits = cap * torch.tanh(logits / cap)
    return logits


def unembed_at_end(model: HookedTransformer, final_resid: torch.Tensor, batch: IOIBatch) -> torch.Tensor:
    """[rows, vocab] logits at END from the final residual stream [rows, seq, d_model].

    Hand-written because HookedTransformer.forward unembeds every position: with hundreds of patch
    rows that is a [rows, seq, 50257] tensor, most of it never read. (And W_U is read in place:
    transformer_lens's Unembed copies W_U.T into a contiguous tensor on every call, 154 MB for GPT-2.)
    """
    return _soft_cap(model, _final_at_end(model, final_resid, batch) @ model.unembed.W_U + model.unembed.b_U)


def end_metric(model: HookedTransformer, final_resid: torch.Tensor, batch: IOIBatch,
               metric: PerPromptMetric = per_prompt_logit_diff) -> torch.Tensor:
    """metric [rows] at END from the final residual stream [rows, seq, d_model]. The logit difference reads
    only its two columns (IO and S) of the unembedding: two dot products per row instead of [rows, d_vocab]
    logits (the profile of GPT-2's head patching: the full unembedding was 44% of the time). Any other metric
    gets the full END logits (unembed_at_end)."""
    if metric is not per_prompt_logit_diff:
        return metric(unembed_at_end(model, final_resid, batch), batch)
    at_end = _final_at_end(model, final_resid, batch)  # [rows, d_model]
    device = at_end.device
    answers = torch.stack([batch.io_token, batch.s_token], dim=1).to(device)  # [rows, 2]
    columns = model.unembed.W_U.T[answers]  # [rows, 2, d_model]
    logits = torch.einsum("rd,rkd->rk", at_end, columns) + model.unembed.b_U[answers]
    logits = _soft_cap(model, logits)
    return logits[:, 0] - logits[:, 1]


def run_to_final_resid(model: HookedTransformer, tokens: torch.Tensor, **kwargs):
    """(final residual stream [batch, seq, d_model], cache) of a plain run: no unembedding (end_metric reads END)."""
    return model.run_with_cache(tokens, stop_at_layer=model.cfg.n_layers, **kwargs)


@torch.no_grad()
def run_metric(model: HookedTransformer, batch: IOIBatch, metric: PerPromptMetric = per_prompt_logit_diff) -> float:
    """Mean metric of one plain forward pass."""
    resid = model(batch.tokens.to(model.cfg.device), stop_at_layer=model.cfg.n_layers)
    return float(end_metric(model, resid, batch, metric).mean())


def normalize(values: torch.Tensor, clean_value: float, corrupt_value: float, cfg: PatchingConfig) -> torch.Tensor:
    if not cfg.normalize:
        return values
    gap = clean_value - corrupt_value
    if abs(gap) < cfg.min_clean_corrupt_gap:
        raise PatchingError(
            f"clean ({clean_value:.4g}) and corrupted ({corrupt_value:.4g}) metrics are equal; "
            "the normalized effect is undefined (use normalize=False)"
        )
    return (values - corrupt_value) / gap


# --- the generic routine ------------------------------------------------------------------------


def _site_masks(sites: pd.DataFrame, n_pos: int, n_heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean [sites, pos] and [sites, heads] masks; ALL (or a missing column) selects everything."""

    def one_hot(column: str, size: int) -> torch.Tensor:
        if column not in sites:
            return torch.ones(len(sites), size, dtype=torch.bool)
        idx = torch.tensor(sites[column].to_numpy(), dtype=torch.long)
        if ((idx < ALL) | (idx >= size)).any():
            raise PatchingError(f"site {column} out of range [0, {size}) (or {ALL} for all): {idx.tolist()}")
        mask = torch.zeros(len(sites), size, dtype=torch.bool)
        mask[idx == ALL] = True
        chosen = idx != ALL
        mask[chosen.nonzero()[:, 0], idx[chosen]] = True
        return mask

    return one_hot("pos", n_pos), one_hot("head", n_heads)


def _prefix_kv_cache(corrupt_cache, n_layers: int, from_layer: int, first: int, copies: int) -> TransformerLensKeyValueCache:
    """A frozen key/value cache holding the corrupted run's keys and values before `first`,
    repeated for `copies` patch slices; layers before `from_layer` are never run and stay empty."""
    entries = [None] * n_layers
    for layer in range(from_layer, n_layers):
        keys = corrupt_cache[get_act_name("k", layer)][:, :first].repeat(copies, 1, 1, 1)
        values = corrupt_cache[get_act_name("v", layer)][:, :first].repeat(copies, 1, 1, 1)
        entries[layer] = TransformerLensKeyValueCacheEntry(keys, values, frozen=True)
    mask = torch.ones(keys.shape[0], first, dtype=torch.int, device=keys.device)
    return TransformerLensKeyValueCache(entries=entries, previous_attention_mask=mask, frozen=True)


def patch_sites(
    model: HookedTransformer,
    clean: IOIBatch,
    corrupt: IOIBatch,
    activation: str,
    sites: pd.DataFrame,
    metric: PerPromptMetric = per_prompt_logit_diff,
    cfg: PatchingConfig | None = None,
) -> torch.Tensor:
    """Patch `activation` of each site (row of `sites`: layer, pos, head) from clean into corrupted.
    Returns [len(sites)]: the mean metric over prompts of each patched run, normalized per `cfg`
    (the per-prompt values: `patch_sites_per_prompt`)."""
    cfg = cfg or PatchingConfig()
    patched, clean_values, corrupt_values = patch_sites_per_prompt(model, clean, corrupt, activation, sites, metric, cfg)
    return normalize(patched.mean(1), float(clean_values.mean()), float(corrupt_values.mean()), cfg)


def patch_sites_per_prompt(
    model: HookedTransformer,
    clean: IOIBatch,
    corrupt: IOIBatch,
    activation: str,
    sites: pd.DataFrame,
    metric: PerPromptMetric = per_prompt_logit_diff,
    cfg: PatchingConfig | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Patch `activation` of each site (row of `sites`: layer, pos, head) from clean into corrupted.

    `activation` is a per-block transformer_lens name ("resid_pre", "z", "attn_out", "mlp_out",
    ...) shaped [batch, pos, d] or [batch, pos, head, d]. Returns (patched [len(sites), prompts],
    clean [prompts], corrupted [prompts]): the metric per prompt of each patched run and of the two
    unpatched runs, not normalized (a ratio of means over prompts is normalized by the caller).

    Shared prefix: before the first position where a site writes a value the corrupted run does
    not have (S2 for the thesis's corruption; END for a residual patch at END), patching changes
    nothing, and by causal attention nothing there depends on later patches. A site writing only
    corrupted values is a no-op (the corrupted metric); the others run only the positions from
    their first such position on, reading the prefix's keys and values from the corrupted run.
    """
    cfg = cfg or PatchingConfig()
    check_pair(model, clean, corrupt)
    if "layer" not in sites:
        raise PatchingError("sites need a 'layer' column")
    layers = torch.tensor(sites["layer"].to_numpy(), dtype=torch.long)
    if len(sites) and ((layers < 0) | (layers >= model.cfg.n_layers)).any():
        raise PatchingError(f"site layers must lie in [0, {model.cfg.n_layers}): {sorted(set(layers.tolist()))}")
    device = model.cfg.device
    n_prompts, n_pos = clean.tokens.shape
    names = sorted({get_act_name(activation, int(l)) for l in layers.unique()})
    resid_names = [get_act_name("resid_pre", l) for l in range(model.cfg.n_layers)]
    kv_names = [get_act_name(kv, l) for l in range(model.cfg.n_layers) for kv in ("k", "v")]
    with torch.no_grad():
        clean_resid, clean_cache = run_to_final_resid(model, clean.tokens.to(device), names_filter=names)
        corrupt_resid, corrupt_cache = run_to_final_resid(model, corrupt.tokens.to(device), names_filter=resid_names + kv_names + names)
        clean_values = end_metric(model, clean_resid, clean, metric).float().cpu()
        corrupt_values = end_metric(model, corrupt_resid, corrupt, metric).float().cpu()
    for name in names:
        if clean_cache[name].shape[:2] != (n_prompts, n_pos):
            raise PatchingError(f"activation {name} is not shaped [batch, pos, ...]: {tuple(clean_cache[name].shape)}")

    pos_mask, head_mask = _site_masks(sites, n_pos, model.cfg.n_heads)
    results = corrupt_values[None].repeat(len(sites), 1)  # a no-op site scores the corrupted run
    # Each site runs from the first position where it writes a value the corrupted run does not have (S2 for the
    # S2 -> IO corruption; END for a residual patch at END): before it the patched run is the corrupted run, so its
    # keys and values come from the corrupted cache. A site writing only the corrupted values is a no-op.
    # Never past the earliest END, which is always run.
    changes = torch.zeros(len(sites), n_pos, dtype=torch.bool)
    for layer in layers.unique().tolist():
        name = get_act_name(activation, layer)
        differs = (clean_cache[name] != corrupt_cache[name]).any(0).cpu()  # [pos, d] or [pos, head, d_head]
        at = (layers == layer).nonzero()[:, 0]
        if differs.ndim == 3:  # per head: the site's heads
            by_head = differs.any(-1).float()  # [pos, head]
            changes[at] = pos_mask[at] & ((head_mask[at].float() @ by_head.T) > 0)
        else:
            changes[at] = pos_mask[at] & differs.any(-1)[None]
    live = changes.any(1)
    starts = torch.where(live, changes.float().argmax(1), n_pos).clamp(max=int(corrupt.pos("END").min()))
    per_forward = max(1, cfg.max_rows_per_forward // n_prompts)
    chunks = [
        idx[i : i + per_forward]
        for layer, begin in sorted({(int(l), int(b)) for l, b in zip(layers[live], starts[live])})
        for idx in [((layers == layer) & (starts == begin) & live).nonzero()[:, 0]]
        for i in range(0, len(idx), per_forward)
    ]
    bar = tqdm(chunks, desc=f"patching {activation}", disable=not cfg.progress)
    for chunk in progress.counted(bar, "patching", total=len(chunks), unit="passes", detail=activation):
        layer, begin = int(layers[chunk[0]]), int(starts[chunk[0]])
        name = get_act_name(activation, layer)
        source = clean_cache[name][:, begin:]  # [prompts, pos from `begin`, ...]
        # mask [sites, 1, pos] for [.., d] activations; [sites, 1, pos, head] for per-head ones
        mask = pos_mask[chunk][:, None, begin:]
        if source.ndim == 4:
            mask = mask[..., None] & head_mask[chunk][:, None, None, :]
        mask = mask[..., None].to(device)

        def paste_clean(act: torch.Tensor, hook, mask=mask, source=source) -> torch.Tensor:
            act = act.view(mask.shape[0], n_prompts, *act.shape[1:])
            return torch.where(mask, source[None], act).flatten(0, 1)

        start = corrupt_cache[get_act_name("resid_pre", layer)][:, begin:].repeat(len(chunk), 1, 1)
        prefix = _prefix_kv_cache(corrupt_cache, model.cfg.n_layers, layer, begin, len(chunk)) if begin else None
        rows = corrupt.tile(len(chunk))
        rows.positions = {**rows.positions, "END": rows.pos("END") - begin}
        with torch.no_grad(), model.hooks(fwd_hooks=[(name, paste_clean)]):
            resid = model(start, start_at_layer=layer, stop_at_layer=model.cfg.n_layers, past_kv_cache=prefix)
            values = end_metric(model, resid, rows, metric)
        results[chunk] = values.view(len(chunk), n_prompts).float().cpu()
    return results, clean_values, corrupt_values


# --- named variants -----------------------------------------------------------------------------


def _grid(**axes: int) -> pd.DataFrame:
    """Every combination of the axes, first axis slowest (like transformer_lens.patching)."""
    index = pd.MultiIndex.from_product([range(n) for n in axes.values()], names=list(axes))
    return index.to_frame(index=False)


def patch_resid_pre_by_pos(model, clean, corrupt, metric=per_prompt_logit_diff, cfg=None) -> torch.Tensor:
    """Residual stream before each block, one position at a time (figs 3.11, 3.12): [layer, pos]."""
    sites = _grid(layer=model.cfg.n_layers, pos=clean.tokens.shape[1])
    return patch_sites(model, clean, corrupt, "resid_pre", sites, metric, cfg).view(model.cfg.n_layers, -1)


def patch_head_out_all_pos(model, clean, corrupt, metric=per_prompt_logit_diff, cfg=None) -> torch.Tensor:
    """Each head's output (its z, all positions at once; fig 3.13, 3.14): [layer, head]."""
    sites = _grid(layer=model.cfg.n_layers, head=model.cfg.n_heads)
    return patch_sites(model, clean, corrupt, "z", sites, metric, cfg).view(model.cfg.n_layers, -1)


def patch_head_out_by_pos(model, clean, corrupt, metric=per_prompt_logit_diff, cfg=None) -> torch.Tensor:
    """Each head's output at each position: [layer, pos, head] (transformer_lens's axis order)."""
    n_pos = clean.tokens.shape[1]
    sites = _grid(layer=model.cfg.n_layers, pos=n_pos, head=model.cfg.n_heads)
    return patch_sites(model, clean, corrupt, "z", sites, metric, cfg).view(model.cfg.n_layers, n_pos, -1)



def s2_to_end_handover(resid_effects: torch.Tensor, s2: int, end: int) -> dict[str, float]:
    """Residual patching's summary (thesis figs 3.11/3.12) from a [layer, pos] effect map: S2's mean
    effect over layers 1 to n_layers / 2 - 1, END's at the last layer, and the first layer at which
    patching END restores more than patching S2 (n_layers if never).

    Layer 0 is left out of the S2 mean: its residual input is the embedding, and S2's token is the only
    one the corruption changes, so patching S2 there restores everything (effect 1) in any model. What
    the thesis's figures show is that S2 keeps the information through the early and middle layers."""
    n_layers = resid_effects.shape[0]
    s2_curve, end_curve = resid_effects[:, s2], resid_effects[:, end]
    handed_over = (end_curve > s2_curve).nonzero()
    return {
        "S2_effect_first_half": s2_curve[1 : n_layers // 2].mean().item(),
        "END_effect_last_layer": end_curve[-1].item(),
        "handover_layer": float(handed_over[0, 0]) if len(handed_over) else float(n_layers),
    }


# --- per-prompt collections for mechinterp.robustness (one length group per call) ----------------


def per_prompt_head_patching(model: HookedTransformer, clean: IOIBatch, cfg: PatchingConfig | None = None) -> dict[str, torch.Tensor]:
    """Each head's output patched from `clean` into its S2 -> IO corruption, per prompt, not normalized:
    {"head_patched": [prompts, layer, head], "clean": [prompts], "corrupted": [prompts]} (logit differences)."""
    cfg = cfg or PatchingConfig(progress=False)
    corrupt = corrupt_s2_to_io(clean)
    sites = _grid(layer=model.cfg.n_layers, head=model.cfg.n_heads)
    patched, clean_values, corrupt_values = patch_sites_per_prompt(model, clean, corrupt, "z", sites, cfg=cfg)
    return {"head_patched": patched.T.reshape(len(clean), model.cfg.n_layers, model.cfg.n_heads),
            "clean": clean_values, "corrupted": corrupt_values}


def per_prompt_resid_patching(model: HookedTransformer, clean: IOIBatch, positions: tuple[str, ...] = ("S2", "END"),
                              cfg: PatchingConfig | None = None) -> dict[str, torch.Tensor]:
    """The residual stream before each block patched at each named position (one position shared by the
    batch: mechinterp.ioi.batches_by_length groups by S2 and END), per prompt, not normalized:
    {"resid_<pos>": [prompts, layer], "clean": [prompts], "corrupted": [prompts]}."""
    cfg = cfg or PatchingConfig(progress=False)
    corrupt = corrupt_s2_to_io(clean)
    at = []
    for name in positions:
        where = clean.pos(name).unique()
        if len(where) != 1:
            raise PatchingError(f"{name} is at positions {where.tolist()} in this batch; group prompts by position first")
        at.append(int(where[0]))
    sites = pd.DataFrame([(layer, pos) for layer in range(model.cfg.n_layers) for pos in at], columns=["layer", "pos"])
    patched, clean_values, corrupt_values = patch_sites_per_prompt(model, clean, corrupt, "resid_pre", sites, cfg=cfg)
    patched = patched.view(model.cfg.n_layers, len(at), len(clean))
    out = {f"resid_{name}": patched[:, i].T for i, name in enumerate(positions)}
    return {**out, "clean": clean_values, "corrupted": corrupt_values}
