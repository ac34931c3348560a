"""Model Stock's ratio and merge on vectors with known angles, in memory and streamed from safetensors."""

from __future__ import annotations

import json
import logging
import math

import pytest
import torch

from tests.weight_space.state_dirs import state_dirs
from wiseft_lab.weight_space.model_stock import MODEL_STOCK_EPS, model_stock, model_stock_ratio

SQRT3 = math.sqrt(3.0)


def test_ratio_by_hand():
    # k = 2 at 60 degrees: t = 2 * 0.5 / (0.5 + 1) = 2/3; k = 3 at cos 0.5: 1.5 / 2 = 3/4
    assert model_stock_ratio(0.5, 2, eps=0.0) == pytest.approx(2 / 3, abs=1e-15)
    assert model_stock_ratio(0.5, 3, eps=0.0) == pytest.approx(3 / 4, abs=1e-15)
    assert model_stock_ratio(0.5, 2) == pytest.approx(2 / 3, rel=1e-7)  # the official eps: off by ~1e-8
    assert model_stock_ratio(1.0, 2, eps=0.0) == 1.0 and model_stock_ratio(0.0, 5) == 0.0
    assert model_stock_ratio(-0.5, 2, eps=0.0) == pytest.approx(-2.0)  # not clipped
    with pytest.raises(ValueError, match="at least two"):
        model_stock_ratio(0.5, 1)


# Pre-trained w0 = (1, 1); deltas d1 = (2, 0) and d2 = (1, sqrt 3): both of length 2, 60 degrees apart (cos 1/2).
# "b": deltas (1, 0, 0) and (0, 1, 0), orthogonal: cos 0, t = 0. "steps": an integer buffer.
def _models(dtype=torch.float32):
    def state(w, b, steps):
        return {"w": torch.tensor(w, dtype=dtype), "b": torch.tensor(b, dtype=dtype), "steps": torch.tensor(steps)}
    return (state([1.0, 1.0], [5.0, 5.0, 5.0], 3), state([3.0, 1.0], [6.0, 5.0, 5.0], 7),
            state([2.0, 1.0 + SQRT3], [5.0, 6.0, 5.0], 9))


PRE, FT1, FT2 = _models()


def test_two_models_at_sixty_degrees(tmp_path):
    for sources in ([PRE, FT1, FT2], state_dirs(tmp_path, [PRE, FT1, FT2])):
        result = model_stock(sources[0], sources[1:], eps=0.0)
        # w: t = 2/3, merged = w0 + t * (d1 + d2) / 2 = (1, 1) + (3, sqrt 3) / 3 = (2, 1 + sqrt(3) / 3)
        torch.testing.assert_close(result.state["w"], torch.tensor([2.0, 1.0 + SQRT3 / 3]))
        assert result.cosines["w"] == pytest.approx(0.5) and result.ratios["w"] == pytest.approx(2 / 3)
        # b: t = 0, the pre-trained entry
        assert result.ratios["b"] == 0.0 and result.state["b"].tolist() == [5.0, 5.0, 5.0]
        assert result.state["steps"].item() == 3 and result.state["steps"].dtype == torch.int64  # pre-trained's
        assert set(result.ratios) == {"w", "b"} and result.k == 2
        assert result.state["w"].dtype == torch.float32
    record = json.loads(json.dumps(result.record()))  # layers in the source's order (a file's: sorted keys)
    assert record["k"] == 2 and [layer["key"] for layer in record["layers"]] == ["b", "w"]
    assert record["layers"][1]["ratio"] == pytest.approx(2 / 3) and record["layers"][1]["cosine"] == pytest.approx(0.5)


def test_official_eps():
    pre, ft1, ft2 = _models(torch.float64)
    result = model_stock(pre, [ft1, ft2])
    # cos = <d1, d2> / (|d1| |d2| + 1e-8) = 2 / (4 + 1e-8); t = 2 cos / (cos + 1 + 1e-8)
    cos = 2.0 / (4.0 + MODEL_STOCK_EPS)
    assert result.cosines["w"] == pytest.approx(cos, rel=1e-12)
    assert result.ratios["w"] == pytest.approx(2 * cos / (cos + 1 + MODEL_STOCK_EPS), rel=1e-12)
    # A tiny delta: d1 = d2 = (1e-4, 0), so |d1| |d2| = 1e-8 = eps and the official cosine is 1e-8 / 2e-8 = 1/2,
    # not 1: t = 1 / (1.5 + 1e-8) instead of 1.
    tiny = {"w": torch.tensor([0.0, 0.0], dtype=torch.float64)}
    moved = {"w": torch.tensor([1e-4, 0.0], dtype=torch.float64)}
    shrunk = model_stock(tiny, [moved, moved])
    assert shrunk.cosines["w"] == pytest.approx(0.5) and shrunk.ratios["w"] == pytest.approx(2 / 3)
    assert model_stock(tiny, [moved, moved], eps=0.0).ratios["w"] == 1.0


def test_identical_models_and_zero_deltas():
    same = model_stock(PRE, [FT1, FT1], eps=0.0)
    assert same.ratios["w"] == 1.0 and same.cosines["w"] == 1.0
    torch.testing.assert_close(same.state["w"], FT1["w"])
    # A zero delta (an entry nobody trained): cos is defined as 0, t = 0 -> the pre-trained entry (with or without eps)
    frozen = {**FT1, "b": PRE["b"].clone()}
    for eps in (0.0, MODEL_STOCK_EPS):
        result = model_stock(PRE, [frozen, FT2], eps=eps)
        assert result.cosines["b"] == 0.0 and result.ratios["b"] == 0.0
        assert result.state["b"].tolist() == [5.0, 5.0, 5.0]


def test_negative_cosine_extrapolates(caplog):
    # d1 = (2, 0), d2 = (-1, sqrt 3): cos -1/2, t = -1 / (1/2) = -2: w0 - 2 (d1 + d2) / 2 = (1, 1) - (1, sqrt 3)
    away = {**FT2, "w": torch.tensor([0.0, 1.0 + SQRT3])}
    with caplog.at_level(logging.WARNING):
        result = model_stock(PRE, [FT1, away], eps=0.0)
    assert result.ratios["w"] == pytest.approx(-2.0)
    torch.testing.assert_close(result.state["w"], torch.tensor([0.0, 1.0 - SQRT3]))
    assert "negative cosine" in caplog.text


def test_three_models_use_the_mean_pairwise_cosine():
    # Deltas e1, e2 and (e1 + e2): cosines 0, 1/sqrt 2, 1/sqrt 2 -> mean c = sqrt(2) / 3; t = 3c / (2c + 1)
    pre = {"w": torch.zeros(3, dtype=torch.float64)}
    pool = [{"w": torch.tensor(v, dtype=torch.float64)} for v in ([1.0, 0, 0], [0, 1.0, 0], [1.0, 1.0, 0])]
    result = model_stock(pre, pool, eps=0.0)
    c = math.sqrt(2) / 3
    t = 3 * c / (2 * c + 1)
    assert result.cosines["w"] == pytest.approx(c) and result.ratios["w"] == pytest.approx(t)
    torch.testing.assert_close(result.state["w"], torch.tensor([2 / 3, 2 / 3, 0.0], dtype=torch.float64) * t)


def test_excluded_keys_get_the_plain_mean():
    result = model_stock(PRE, [FT1, FT2], exclude=["b"])
    assert result.state["b"].tolist() == [5.5, 5.5, 5.0] and "b" not in result.ratios
    with pytest.raises(KeyError, match="not in the state dict"):
        model_stock(PRE, [FT1, FT2], exclude=["head.weight"])
    with pytest.raises(ValueError, match="at least two"):
        model_stock(PRE, [FT1])
    with pytest.raises(ValueError, match=r"Ingredient 'finetuned #1'.*'w' has shape"):
        model_stock(PRE, [FT1, {**FT2, "w": torch.zeros(3)}])
