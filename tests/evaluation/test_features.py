"""Reused image features: models sharing one tower run it once per set and score exactly as a full pass does."""

from __future__ import annotations

import copy

import torch
from safetensors.torch import load_file

from wiseft_lab import EvalSuite, evaluate
from wiseft_lab.data.sources import synthetic_styles
from wiseft_lab.evaluation.features import FeatureCache
from wiseft_lab.models.classifier import ImageClassifier
from wiseft_lab.models.zeroshot import build_zeroshot_head
from wiseft_lab.weight_space.interpolate import interpolate


def _lc_endpoints(tiny_bundle):
    """A zero-shot classifier and an 'lc' fine-tune of it: the same tower, another head."""
    clip = copy.deepcopy(tiny_bundle.model)
    photo = synthetic_styles("test", tiny_bundle.preprocess_val, style="photo", n_per_class=2)
    zeroshot = ImageClassifier(clip, build_zeroshot_head(clip, tiny_bundle.tokenizer, photo.classnames, "simple"))
    finetuned = copy.deepcopy(zeroshot)
    with torch.no_grad():
        finetuned.head.weight.add_(torch.randn_like(finetuned.head.weight))
        finetuned.head.bias.add_(torch.randn_like(finetuned.head.bias))
    return zeroshot, finetuned


def _suite(tiny_bundle) -> EvalSuite:
    transform = tiny_bundle.preprocess_val
    return EvalSuite.from_datasets("photo", {
        style: synthetic_styles("test", transform, style=style, n_per_class=2) for style in ("photo", "sketch")})


def test_lc_sweep_runs_the_tower_once_per_set_with_identical_logits(tiny_bundle, tmp_path):
    zeroshot, finetuned = _lc_endpoints(tiny_bundle)
    suite = _suite(tiny_bundle)
    features = FeatureCache()
    model = copy.deepcopy(zeroshot)
    for alpha in (0.0, 0.3, 0.5, 1.0):
        model.load_state_dict(interpolate(zeroshot.state_dict(), finetuned.state_dict(), alpha))
        plain = evaluate(model, suite, batch_size=7, progress=False, predictions_dir=tmp_path / f"plain{alpha}")
        reused = evaluate(model, suite, batch_size=7, progress=False, predictions_dir=tmp_path / f"reused{alpha}",
                          features=features)
        assert reused == plain
        for name in suite.sets:
            a, b = (load_file(tmp_path / f"{kind}{alpha}" / f"{name}.safetensors") for kind in ("plain", "reused"))
            assert torch.equal(a["raw_logits"], b["raw_logits"]) and torch.equal(a["labels"], b["labels"])
    assert features.passes == len(suite.sets)  # one tower pass per set for the whole sweep


def test_a_changed_tower_is_never_scored_on_stale_features(tiny_bundle):
    zeroshot, _ = _lc_endpoints(tiny_bundle)
    suite = _suite(tiny_bundle)
    features = FeatureCache()
    evaluate(zeroshot, suite, batch_size=7, progress=False, features=features)
    other = copy.deepcopy(zeroshot)
    with torch.no_grad():
        next(other.clip.visual.parameters()).mul_(1.5)  # an e2e fine-tune: the tower differs
    plain = evaluate(other, suite, batch_size=7, progress=False)
    assert evaluate(other, suite, batch_size=7, progress=False, features=features) == plain
    assert features.passes == 2 * len(suite.sets)
