"""Attribution patching (thesis section 2.5.7): the first-order Taylor estimate of patching.py.

Same direction as patching.py (clean activations into the corrupted run): the effect of patching
activation a is estimated as (a_clean - a_corrupt) . dM/da, with the gradient taken on the
corrupted run. One clean forward pass (cache) and one corrupted forward + backward pass give every
site at once. Output shapes and normalization match patching.py's named variants, so the two can
be compared element by element.
"""

from __future__ import annotations

import torch
from transformer_lens import HookedTransformer
from transformer_lens.utilities import get_act_name

from mechinterp.ioi import IOIBatch
from mechinterp.patching import PatchingConfig, PerPromptMetric, check_pair, normalize, per_prompt_logit_diff


def activation_deltas_and_grads(
    model: HookedTransformer,
    clean: IOIBatch,
    corrupt: IOIBatch,
    activation: str,
    metric: PerPromptMetric = per_prompt_logit_diff,
) -> tuple[torch.Tensor, torch.Tensor, float, float]:
    """Per layer (stacked on dim 0): clean - corrupted activation, and the gradient of the mean
    metric on the corrupted run; plus the clean and corrupted mean metrics."""
    check_pair(model, clean, corrupt)
    device = model.cfg.device
    names = [get_act_name(activation, layer) for layer in range(model.cfg.n_layers)]
    with torch.no_grad():
        clean_logits, clean_cache = model.run_with_cache(clean.tokens.to(device), names_filter=names)
    clean_value = float(metric(clean_logits, clean).mean())

    saved: dict[str, torch.Tensor] = {}

    def keep(act: torch.Tensor, hook) -> None:
        saved[hook.name] = act

    # Gradients only w.r.t. the hooked activations (torch.autograd.grad): no parameter .grad is touched.
    with torch.enable_grad(), model.hooks(fwd_hooks=[(name, keep) for name in names]):
        corrupt_logits = model(corrupt.tokens.to(device))
        corrupt_metric = metric(corrupt_logits, corrupt).mean()
        grads = torch.autograd.grad(corrupt_metric, [saved[n] for n in names], allow_unused=True)
    grads = [torch.zeros_like(saved[n]) if g is None else g for n, g in zip(names, grads)]
    deltas = torch.stack([clean_cache[n] - saved[n].detach() for n in names])
    return deltas, torch.stack(grads).detach(), clean_value, float(corrupt_metric.detach())


def attribute(
    model: HookedTransformer,
    clean: IOIBatch,
    corrupt: IOIBatch,
    activation: str,
    keep_dims: str,
    metric: PerPromptMetric = per_prompt_logit_diff,
    cfg: PatchingConfig | None = None,
) -> torch.Tensor:
    """Estimated patched metric for `activation`, the estimate summed over every axis not in
    `keep_dims`, normalized like patching.py (corrupted 0, clean 1) unless cfg.normalize is off.

    `keep_dims` names the kept axes among l (layer), p (pos), h (head), e.g. "lp" for resid_pre
    by position, "lh" for a head's output over all positions, "lph" for heads by position.
    """
    cfg = cfg or PatchingConfig()
    deltas, grads, clean_value, corrupt_value = activation_deltas_and_grads(model, clean, corrupt, activation, metric)
    # deltas/grads: [layer, batch, pos, (head,) d]; the batch axis is summed (metric is a mean)
    axes = "lbphd" if deltas.ndim == 5 else "lbpd"
    if set(keep_dims) - set(axes):
        raise ValueError(f"cannot keep {keep_dims!r} for activation {activation!r} with axes {axes!r}")
    effect = torch.einsum(f"{axes},{axes}->{keep_dims}", deltas, grads)
    # the estimated patched metric, so that raw and normalized values mean what patching.py's do
    estimated_metric = corrupt_value + effect.double().cpu()
    return normalize(estimated_metric, clean_value, corrupt_value, cfg).float()


def attribute_resid_pre_by_pos(model, clean, corrupt, metric=per_prompt_logit_diff, cfg=None) -> torch.Tensor:
    """Estimate of patching.patch_resid_pre_by_pos: [layer, pos]."""
    return attribute(model, clean, corrupt, "resid_pre", "lp", metric, cfg)


def attribute_head_out_all_pos(model, clean, corrupt, metric=per_prompt_logit_diff, cfg=None) -> torch.Tensor:
    """Estimate of patching.patch_head_out_all_pos: [layer, head]."""
    return attribute(model, clean, corrupt, "z", "lh", metric, cfg)


def attribute_head_out_by_pos(model, clean, corrupt, metric=per_prompt_logit_diff, cfg=None) -> torch.Tensor:
    """Estimate of patching.patch_head_out_by_pos: [layer, pos, head]."""
    return attribute(model, clean, corrupt, "z", "lph", metric, cfg)


def correlation(estimate: torch.Tensor, exact: torch.Tensor) -> float:
    """Pearson correlation of two same-shaped effect tensors (float64)."""
    if estimate.shape != exact.shape:
        raise ValueError(f"shapes differ: {tuple(estimate.shape)} vs {tuple(exact.shape)}")
    x, y = estimate.flatten().double(), exact.flatten().double()
    return float(torch.corrcoef(torch.stack([x, y]))[0, 1])
