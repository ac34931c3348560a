"""WiSE-FT interpolation: endpoints bit for bit, linearity, mismatch errors, LC == output ensemble."""

from __future__ import annotations

import copy

import pytest
import torch

from wiseft_lab import interpolate
from wiseft_lab.models.classifier import ImageClassifier
from wiseft_lab.models.zeroshot import ClassificationHead
from wiseft_lab.weight_space.interpolate import interpolation_path


def _pair():
    g = torch.Generator().manual_seed(0)
    a = {"w": torch.randn(3, 4, generator=g), "b": torch.tensor([-0.0, 1.0, 2.0]),
         "steps": torch.tensor(3), "flag": torch.tensor([True, False])}
    b = {"w": torch.randn(3, 4, generator=g), "b": torch.tensor([0.0, -1.0, 4.0]),
         "steps": torch.tensor(7), "flag": torch.tensor([False, False])}
    return a, b


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.int32) if t.dtype == torch.float32 else t


def test_endpoints_bit_for_bit():
    a, b = _pair()
    for alpha, expected in ((0.0, a), (1.0, b)):
        out = interpolate(a, b, alpha)
        for key in a:
            assert torch.equal(_bits(out[key]), _bits(expected[key])), key
    assert interpolate(a, b, 0.0)["w"] is not a["w"]  # a new state dict, not the input


def test_matches_formula_and_is_linear():
    a, b = _pair()
    out = interpolate(a, b, 0.25)
    torch.testing.assert_close(out["w"], 0.75 * a["w"] + 0.25 * b["w"])
    torch.testing.assert_close(out["b"], torch.tensor([0.0, 0.5, 2.5]))
    # Integer and bool buffers are copied from the endpoint with the larger weight.
    assert out["steps"].item() == 3 and interpolate(a, b, 0.75)["steps"].item() == 7
    assert torch.equal(interpolate(a, b, 0.75)["flag"], b["flag"])
    # Linearity: the midpoint of two interpolants is the interpolant at the mid alpha.
    mid = interpolate(interpolate(a, b, 0.2), interpolate(a, b, 0.6), 0.5)
    torch.testing.assert_close(mid["w"], interpolate(a, b, 0.4)["w"])


def test_preserves_dtype():
    a = {"w": torch.tensor([1.0, 3.0], dtype=torch.float16)}
    b = {"w": torch.tensor([3.0, 5.0], dtype=torch.float16)}
    out = interpolate(a, b, 0.5)
    assert out["w"].dtype == torch.float16 and out["w"].tolist() == [2.0, 4.0]


def test_refuses_mismatched_keys_and_shapes():
    a, b = _pair()
    with pytest.raises(ValueError, match=r"keys only in the zero-shot.*: flag"):
        interpolate(a, {k: v for k, v in b.items() if k != "flag"}, 0.5)
    with pytest.raises(ValueError, match=r"keys only in the fine-tuned.*: extra"):
        interpolate(a, {**b, "extra": torch.zeros(1)}, 0.5)
    with pytest.raises(ValueError, match=r"shape mismatch: w \(3, 4\) vs \(4, 3\)"):
        interpolate(a, {**b, "w": torch.zeros(4, 3)}, 0.5)


def test_linear_classifier_interpolation_equals_output_ensemble(tiny_bundle):
    """For LC fine-tuning only the head differs, so weight interpolation = logit interpolation."""
    torch.manual_seed(0)
    dim = tiny_bundle.model.visual.output_dim
    heads = [ClassificationHead(torch.randn(5, dim), torch.randn(5)) for _ in range(2)]
    models = [ImageClassifier(copy.deepcopy(tiny_bundle.model), h).eval() for h in heads]
    models[1].clip.load_state_dict(models[0].clip.state_dict())
    images = torch.randn(4, 3, 32, 32)
    alpha = 0.3
    merged = copy.deepcopy(models[0])
    merged.load_state_dict(interpolate(models[0].state_dict(), models[1].state_dict(), alpha))
    with torch.no_grad():
        ensemble = (1 - alpha) * models[0](images) + alpha * models[1](images)
        torch.testing.assert_close(merged(images), ensemble, rtol=1e-5, atol=1e-5)


def test_a_path_mixes_what_differs_and_shares_what_is_equal():
    a, b = _pair()
    a["tower"], b["tower"] = torch.arange(6.0), torch.arange(6.0)  # the same values, two tensors
    path = interpolation_path(a, b)
    for alpha in (0.0, 0.25, 1.0):
        out = path(alpha)
        assert out["tower"] is a["tower"]  # the very tensor at every alpha: a loader can skip it
        assert out["w"] is not a["w"] and out["w"] is not b["w"]
        expected = interpolate({k: v for k, v in a.items() if k != "tower"},
                               {k: v for k, v in b.items() if k != "tower"}, alpha)
        for key, value in expected.items():
            assert torch.equal(_bits(out[key]), _bits(value)), (alpha, key)
    torch.testing.assert_close(path(0.25)["w"], 0.75 * a["w"] + 0.25 * b["w"])
    with pytest.raises(ValueError, match=r"shape mismatch"):
        interpolation_path(a, {**b, "w": torch.zeros(4, 3)})
