"""mechinterp/attribution_patching.py: shapes and normalization match patching.py, exactness where
the metric is linear in the patched activation, and side-effect freedom."""

from __future__ import annotations

import pytest
import torch

from mechinterp import attribution_patching as attribution
from mechinterp import patching
from tests.test_patching import NORMALIZED, RAW, assert_no_hooks_left, protocol_pair, small_model

VARIANTS = [
    (patching.patch_resid_pre_by_pos, attribution.attribute_resid_pre_by_pos),
    (patching.patch_head_out_all_pos, attribution.attribute_head_out_all_pos),
    (patching.patch_head_out_by_pos, attribution.attribute_head_out_by_pos),
]


@pytest.mark.parametrize("exact, estimate", VARIANTS, ids=["resid_pre", "head_all_pos", "head_by_pos"])
def test_same_shape_as_patching_and_zero_before_s2(exact, estimate):
    model = small_model("ln")
    clean, corrupt = protocol_pair()
    ours = estimate(model, clean, corrupt, cfg=NORMALIZED)
    assert ours.shape == exact(model, clean, corrupt, cfg=NORMALIZED).shape
    if ours.ndim >= 2 and ours.shape[1] == clean.tokens.shape[1]:  # has a position axis
        assert ours[:, : int(clean.pos("S2")[0])].abs().max() == 0  # clean == corrupted there
    assert_no_hooks_left(model)
    assert all(p.grad is None for p in model.parameters())


def test_exact_where_the_metric_is_linear_in_the_activation():
    """Attention-only, no LayerNorm: the last layer's head outputs reach the logits linearly, so the
    first-order estimate is the patching effect itself."""
    model = small_model("attn-only")
    clean, corrupt = protocol_pair()
    last = model.cfg.n_layers - 1
    for exact, estimate in VARIANTS[1:]:
        torch.testing.assert_close(
            estimate(model, clean, corrupt, cfg=RAW)[last], exact(model, clean, corrupt, cfg=RAW)[last],
            atol=1e-5, rtol=1e-4,
        )


def test_normalization_matches_patching():
    """Raw values are estimated patched metrics: normalized = (raw - corrupted) / (clean - corrupted)."""
    model = small_model("ln")
    clean, corrupt = protocol_pair()
    gap = patching.run_metric(model, clean) - patching.run_metric(model, corrupt)
    raw = attribution.attribute_head_out_all_pos(model, clean, corrupt, cfg=RAW)
    normalized = attribution.attribute_head_out_all_pos(model, clean, corrupt, cfg=NORMALIZED)
    torch.testing.assert_close(normalized, (raw - patching.run_metric(model, corrupt)) / gap, atol=1e-5, rtol=1e-4)


def test_correlation():
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert attribution.correlation(x, 2 * x + 1) == pytest.approx(1.0)
    assert attribution.correlation(x, -x) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="shapes differ"):
        attribution.correlation(x, x.flatten())


def test_cannot_keep_an_axis_the_activation_lacks():
    clean, corrupt = protocol_pair()
    with pytest.raises(ValueError, match="cannot keep"):
        attribution.attribute(small_model("ln"), clean, corrupt, "resid_pre", "lh", cfg=RAW)
