"""One head type with one name format: Head(7, 7), written "H7.7".

Head is a NamedTuple, so it equals and hashes like the (layer, head) tuples older code passes around
and unpacks as `layer, h = head`. `Head.parse` reads every spelling found in this code base and in
transformer_lens ("H7.7", "7.7", "L7H7", (7, 7)); `str(head)` always writes "H7.7".
"""

from __future__ import annotations

import math
import re
from typing import NamedTuple

import torch

_SPELLINGS = [re.compile(r"^H?(\d+)\.(\d+)$"), re.compile(r"^L(\d+)H(\d+)$")]


class Head(NamedTuple):
    layer: int
    head: int

    def __str__(self) -> str:
        return f"H{self.layer}.{self.head}"

    @property
    def name(self) -> str:
        return str(self)

    @classmethod
    def parse(cls, value) -> "Head":
        """A Head from "H7.7", "7.7", "L7H7", (7, 7) or a Head."""
        if isinstance(value, str):
            for pattern in _SPELLINGS:
                match = pattern.match(value.strip())
                if match:
                    return cls(int(match[1]), int(match[2]))
            raise ValueError(f"{value!r} is not a head; write it as 'H7.7' (also read: '7.7', 'L7H7', (7, 7))")
        layer, head = value
        return cls(int(layer), int(head))

    def fits(self, n_layers: int, n_heads: int) -> bool:
        return 0 <= self.layer < n_layers and 0 <= self.head < n_heads

    def of(self, per_head: torch.Tensor) -> float:
        """This head's entry of a [n_layers, n_heads] tensor; NaN (fails any row) for a head the model lacks."""
        if not self.fits(per_head.shape[0], per_head.shape[1]):
            return math.nan
        return float(per_head[self.layer, self.head])


def head_at(flat_index: int, n_heads: int) -> Head:
    """The head of a row-major flat index into a [n_layers, n_heads] tensor."""
    return Head(int(flat_index) // n_heads, int(flat_index) % n_heads)


def argmax_head(per_head: torch.Tensor) -> Head:
    """The head with the largest value of a [n_layers, n_heads] tensor."""
    return head_at(int(per_head.flatten().argmax()), per_head.shape[1])


def top_heads(per_head: torch.Tensor, k: int, by_magnitude: bool = False) -> list[tuple[str, float]]:
    """The `k` heads of a [n_layers, n_heads] tensor with the largest value (or |value|, keeping its sign),
    best first, as ("H7.7", value)."""
    flat = per_head.flatten()
    if by_magnitude:
        order = flat.abs().argsort(descending=True)[:k].tolist()
    else:
        order = flat.topk(min(k, flat.numel())).indices.tolist()
    return [(str(head_at(i, per_head.shape[1])), float(flat[i])) for i in order]
