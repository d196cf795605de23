"""Direct logit attribution of the logit difference at END (thesis 3.4.2, figs 3.9/3.10).

The END residual is a sum of component outputs (embedding, positional embedding, every head,
every MLP, the attention output biases). With the final LayerNorm scale frozen at its clean-run
value, the logit difference is linear in that sum, so each component gets
    centered(component) / scale . direction
and together with the constant (final-norm bias and unembedding bias, see logit_lens) they add
up to the model's logit difference exactly.
"""

from __future__ import annotations

import pandas as pd
import torch
from transformer_lens import ActivationCache, HookedTransformer

from mechinterp.ioi import IOIBatch
from mechinterp.logit_lens import end_position, logit_diff_direction

CONSTANT_LABEL = "final ln bias + unembed bias"


def _clean_cache(model: HookedTransformer, batch: IOIBatch) -> ActivationCache:
    wanted = ("hook_z", "hook_embed", "hook_pos_embed", "hook_mlp_out", "hook_resid_post", "ln_final.hook_scale")
    with torch.no_grad():
        _, cache = model.run_with_cache(batch.tokens.to(model.cfg.device), names_filter=lambda n: n.endswith(wanted))
    return cache


def component_dla(model: HookedTransformer, batch: IOIBatch, cache: ActivationCache | None = None) -> tuple[torch.Tensor, list[str]]:
    """([n_components, batch] per-prompt attributions, labels).

    Components, in transformer_lens get_full_resid_decomposition order: heads 'L{l}H{h}', MLPs
    '{l}_mlp_out', 'embed', 'pos_embed' (if the model has one), 'bias' (summed attention b_O), and
    last the constant CONSTANT_LABEL. Their sum over components is the logit difference per prompt.
    """
    cache = cache if cache is not None else _clean_cache(model, batch)
    end = end_position(batch)
    # transformer_lens computes head results at every position by broadcasting z * W_O over
    # [batch, pos, head, d_head, d_model]; restricting the cache to END first does only the work we use.
    at_end = ActivationCache({name: act[:, end : end + 1] for name, act in cache.items()}, model)
    stack, labels = at_end.get_full_resid_decomposition(expand_neurons=False, apply_ln=True, return_labels=True)
    stack = stack[:, :, 0]  # [components, batch, d_model], each centered and divided by the clean final LN scale
    direction, constant = logit_diff_direction(model, batch)
    attributions = (stack * direction).sum(-1)
    attributions = torch.cat([attributions, constant[None]], dim=0)
    return attributions.detach(), labels + [CONSTANT_LABEL]


def head_dla(model: HookedTransformer, batch: IOIBatch, cache: ActivationCache | None = None) -> torch.Tensor:
    """[n_layers, n_heads] mean direct logit attribution of each head's output."""
    attributions, _ = component_dla(model, batch, cache)
    n_heads = model.cfg.n_layers * model.cfg.n_heads  # heads come first in the decomposition
    return attributions[:n_heads].mean(-1).reshape(model.cfg.n_layers, model.cfg.n_heads)


def dla_table(model: HookedTransformer, batch: IOIBatch, cache: ActivationCache | None = None) -> pd.DataFrame:
    """One row per component: label, kind (head / mlp / embed / pos_embed / bias / constant), layer,
    head, mean and per-prompt std of its attribution."""
    attributions, labels = component_dla(model, batch, cache)
    rows = []
    for label, values in zip(labels, attributions.double()):
        layer, head, kind = -1, -1, label
        if label.startswith("L") and "H" in label:
            kind, (layer, head) = "head", map(int, label[1:].split("H"))
        elif label.endswith("_mlp_out"):
            kind, layer = "mlp", int(label.split("_")[0])
        elif label == CONSTANT_LABEL:
            kind = "constant"
        rows.append({"label": label, "kind": kind, "layer": layer, "head": head,
                     "dla": values.mean().item(), "std": values.std().item() if len(values) > 1 else 0.0})
    return pd.DataFrame(rows)
