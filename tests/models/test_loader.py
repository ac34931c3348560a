"""Loads into the run's one classifier copy only what changed: a linear-classifier path loads the head alone."""

from __future__ import annotations

import copy

import pytest
import torch

from wiseft_lab.models.classifier import ImageClassifier
from wiseft_lab.models.loader import CopiedEntries
from wiseft_lab.models.zeroshot import ClassificationHead
from wiseft_lab.weight_space.interpolate import interpolation_path


def _lc_pair(tiny_bundle) -> tuple[ImageClassifier, dict, dict]:
    dim = tiny_bundle.model.visual.output_dim
    torch.manual_seed(0)
    model = ImageClassifier(copy.deepcopy(tiny_bundle.model), ClassificationHead(torch.randn(5, dim), torch.randn(5)))
    theta_0 = {k: v.clone() for k, v in model.state_dict().items()}
    theta_1 = {k: v.clone() for k, v in theta_0.items()}
    theta_1["head.weight"] = theta_1["head.weight"] + 1.0
    return model, theta_0, theta_1


def _equal(model: torch.nn.Module, state: dict) -> bool:
    return all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_along_a_linear_classifier_path_only_the_head_is_copied(tiny_bundle):
    model, theta_0, theta_1 = _lc_pair(tiny_bundle)
    path, loads = interpolation_path(theta_0, theta_1), CopiedEntries()
    everything = len(theta_0)
    assert loads.load(model, path(0.0)) == everything
    tower = next(model.clip.visual.parameters())
    version = tower._version
    for alpha in (0.3, 0.6, 1.0):
        state = path(alpha)
        assert loads.load(model, state) == 1  # head.weight: the bias and the tower are theta_0's tensors
        assert _equal(model, state)
    assert tower._version == version  # the tower was never written: a feature cache recognises it for free


def test_a_tensor_modified_since_or_a_new_one_is_copied_again(tiny_bundle):
    model, theta_0, theta_1 = _lc_pair(tiny_bundle)
    loads = CopiedEntries()
    loads.load(model, theta_0)
    with torch.no_grad():
        next(model.clip.visual.parameters()).mul_(2.0)  # the model changed in place (e.g. a Fisher pass loaded it)
    assert loads.load(model, theta_0) == 1 and _equal(model, theta_0)
    theta_0["head.bias"].add_(1.0)  # the source changed in place
    assert loads.load(model, theta_0) == 1 and _equal(model, theta_0)
    fresh = {k: v.clone() for k, v in theta_1.items()}  # equal values, other tensors: copied
    assert loads.load(model, fresh) == len(fresh) and _equal(model, fresh)


def test_keys_are_checked_as_strictly_as_load_state_dict(tiny_bundle):
    model, theta_0, _ = _lc_pair(tiny_bundle)
    with pytest.raises(RuntimeError, match="Missing key"):
        CopiedEntries().load(model, {k: v for k, v in theta_0.items() if k != "head.bias"})
    with pytest.raises(RuntimeError, match="size mismatch"):
        CopiedEntries().load(model, {**theta_0, "head.bias": torch.zeros(7)})
