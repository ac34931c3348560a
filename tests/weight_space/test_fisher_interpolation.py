"""WiSE-FT's Fisher-weighted two-model interpolation (``--fisher``) against hand-computed values."""

from __future__ import annotations

import pytest
import torch

from wiseft_lab.weight_space.fisher import fisher_interpolate, fisher_merge
from wiseft_lab.weight_space.interpolate import interpolate

THETA_0 = {"w": torch.tensor([1.0, 2.0, 4.0]), "b": torch.tensor([0.0]), "h": torch.tensor([1.5]).half(),
           "n": torch.tensor(3)}
THETA_1 = {"w": torch.tensor([3.0, 6.0, 0.0]), "b": torch.tensor([4.0]), "h": torch.tensor([2.5]).half(),
           "n": torch.tensor(8)}
FISHER_0 = {"w": torch.tensor([1.0, 0.0, 2.0])}  # zero-shot model's Fisher; "b", "h", "n": none (F = 1)
FISHER_1 = {"w": torch.tensor([3.0, 1.0, 0.0])}  # fine-tuned model's


def test_endpoints_are_exact_copies():
    for alpha, theta in ((0.0, THETA_0), (1.0, THETA_1)):
        merged = fisher_interpolate(THETA_0, THETA_1, alpha, (FISHER_0, FISHER_1))
        for key in theta:
            assert merged[key].dtype == theta[key].dtype and torch.equal(merged[key], theta[key]), (alpha, key)


def test_mid_alpha_by_hand():
    merged = fisher_interpolate(THETA_0, THETA_1, 0.25, (FISHER_0, FISHER_1), floor=1e-8)
    # c_0 = 0.75 max(F_0, 1e-8), c_1 = 0.25 max(F_1, 1e-8); theta = (c_0 theta_0 + c_1 theta_1) / (c_0 + c_1)
    #   w[0]: c = (0.75, 0.75)        -> (0.75 * 1 + 0.75 * 3) / 1.5 = 2
    #   w[1]: c = (0.75e-8, 0.25)     -> (0.75e-8 * 2 + 0.25 * 6) / (0.25 + 0.75e-8) = 6 (1 + 1e-8) / (1 + 3e-8)
    #   w[2]: c = (1.5, 0.25e-8)      -> (1.5 * 4 + 0) / (1.5 + 0.25e-8) = 4 / (1 + 1e-8 / 6)
    expected_w = torch.tensor([2.0, 6 * (1 + 1e-8) / (1 + 3e-8), 4 / (1 + 1e-8 / 6)])
    torch.testing.assert_close(merged["w"], expected_w)
    assert merged["b"].tolist() == [1.0]  # no Fisher: plain interpolation 0.75 * 0 + 0.25 * 4
    assert merged["h"].dtype == torch.float16 and merged["h"].item() == 1.75  # 0.75 * 1.5 + 0.25 * 2.5
    assert merged["n"].item() == 3  # integer buffer: the endpoint with the larger weight
    assert fisher_interpolate(THETA_0, THETA_1, 0.75, (FISHER_0, FISHER_1))["n"].item() == 8


def test_the_floor_decides_where_a_fisher_is_zero():
    # F_0 = 0 and F_1 = 1 at w[1]: already at alpha = 0.01 the floored zero-shot weight, 0.99e-8, loses to 0.01.
    merged = fisher_interpolate(THETA_0, THETA_1, 0.01, (FISHER_0, {"w": torch.tensor([3.0, 1.0, 0.0])}))
    assert merged["w"][1].item() == pytest.approx((0.99e-8 * 2 + 0.01 * 6) / (0.01 + 0.99e-8))
    assert merged["w"][1].item() == pytest.approx(6.0, rel=1e-5)
    # A larger floor gives the zero-shot side back some weight: (0.99 * 0.01 * 2 + 0.01 * 6) / (0.99 * 0.01 + 0.01)
    floored = fisher_interpolate(THETA_0, THETA_1, 0.01, (FISHER_0, FISHER_1), floor=0.01)
    assert floored["w"][1].item() == pytest.approx((0.0099 * 2 + 0.01 * 6) / 0.0199)


def test_agrees_with_plain_interpolation_and_with_the_pool_merge():
    g = torch.Generator().manual_seed(0)
    theta_0 = {"w": torch.randn(4, 3, generator=g), "b": torch.randn(3, generator=g)}
    theta_1 = {"w": torch.randn(4, 3, generator=g), "b": torch.randn(3, generator=g)}
    same = {"w": torch.rand(4, 3, generator=g) + 0.1}
    for alpha in (0.1, 0.5, 0.9):
        # Equal Fishers cancel: the WiSE-FT line itself.
        for key, value in interpolate(theta_0, theta_1, alpha).items():
            torch.testing.assert_close(fisher_interpolate(theta_0, theta_1, alpha, (same, same))[key], value)
        # Two ingredients with weights (1 - alpha, alpha) in the pool merge: the same formula.
        fishers = [{"w": torch.rand(4, 3, generator=g)}, {"w": torch.rand(4, 3, generator=g)}]
        pooled = fisher_merge([theta_0, theta_1], lambda i, state, f=fishers: f[i], weights=[1 - alpha, alpha])
        merged = fisher_interpolate(theta_0, theta_1, alpha, (fishers[0], fishers[1]))
        for key in pooled:
            torch.testing.assert_close(merged[key], pooled[key])


def test_checks():
    with pytest.raises(ValueError, match="only one endpoint"):
        fisher_interpolate(THETA_0, THETA_1, 0.5, (FISHER_0, {}))
    with pytest.raises(ValueError, match=r"alpha in \[0, 1\]"):
        fisher_interpolate(THETA_0, THETA_1, 1.5, (FISHER_0, FISHER_1))
    with pytest.raises(ValueError, match="keys only in"):
        fisher_interpolate(THETA_0, {"w": THETA_1["w"]}, 0.5, (FISHER_0, FISHER_1))
