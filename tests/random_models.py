"""Small seeded models for exactness tests (DLA, logit lens): every parameter matters."""

from __future__ import annotations

import torch

# Biases and norm gains are zero / one at init; shifted, they must be accounted for by any decomposition.
_SHIFTED = ("w", "b", "b_O", "b_U", "b_in", "b_out", "b_Q", "b_K", "b_V")


def with_random_biases(model, seed: int, scale: float = 0.5):
    """Add seeded N(0, scale^2) noise to every bias and norm gain of `model` (in place); returns it."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.split(".")[-1] in _SHIFTED:
                param.add_(scale * torch.randn(param.shape, generator=generator, dtype=param.dtype))
    return model
