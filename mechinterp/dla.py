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
from transformer_lens import HookedTransformer

from mechinterp.ioi import IOIBatch
from mechinterp.logit_lens import end_cache, logit_diff_direction

CONSTANT_LABEL = "final ln bias + unembed bias"


def component_dla(model: HookedTransformer, batch: IOIBatch) -> tuple[torch.Tensor, list[str]]:
    """([n_components, batch] per-prompt attributions, labels).

    Components, in transformer_lens get_full_resid_decomposition order: heads 'L{l}H{h}', MLPs
    '{l}_mlp_out', 'embed', 'pos_embed' (if the model has one), 'bias' (summed attention b_O), and
    last the constant CONSTANT_LABEL. Their sum over components is the logit difference per prompt.
    """
    # END only: transformer_lens computes head results by broadcasting z * W_O over
    # [batch, pos, head, d_head, d_model], so a full-length cache would do work we never use.
    at_end = end_cache(model, batch, ("hook_z", "hook_embed", "hook_pos_embed", "hook_mlp_out"))
    stack, labels = at_end.get_full_resid_decomposition(expand_neurons=False, apply_ln=True, return_labels=True)
    stack = stack[:, :, 0]  # [components, batch, d_model], each centered and divided by the clean final LN scale
    direction, constant = logit_diff_direction(model, batch)
    attributions = (stack * direction).sum(-1)
    attributions = torch.cat([attributions, constant[None]], dim=0)
    return attributions.detach(), labels + [CONSTANT_LABEL]


def per_prompt_dla(model: HookedTransformer, batch: IOIBatch) -> dict[str, torch.Tensor]:
    """{"components": [prompts, components]} per-prompt attributions (component_dla's order, heads first)."""
    return {"components": component_dla(model, batch)[0].T}


def head_dla(model: HookedTransformer, batch: IOIBatch) -> torch.Tensor:
    """[n_layers, n_heads] mean direct logit attribution of each head's output."""
    attributions, _ = component_dla(model, batch)
    n_heads = model.cfg.n_layers * model.cfg.n_heads  # heads come first in the decomposition
    return attributions[:n_heads].mean(-1).reshape(model.cfg.n_layers, model.cfg.n_heads)


def dla_table(model: HookedTransformer, batch: IOIBatch) -> pd.DataFrame:
    """One row per component: label, kind (head / mlp / embed / pos_embed / bias / constant), layer,
    head, mean and per-prompt std of its attribution."""
    attributions, labels = component_dla(model, batch)
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
