"""Sets with classes of their own (base-to-novel's novel set) are scored with a head built for them; HM."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from wiseft_lab.data.base import TaskData
from wiseft_lab.evaluation.metrics import harmonic_mean
from wiseft_lab.evaluation.set_heads import evaluate_with_set_heads
from wiseft_lab.evaluation.suite import EvalSuite


def test_harmonic_mean():
    assert harmonic_mean(0.8, 0.6) == pytest.approx(2 * 0.8 * 0.6 / 1.4)
    assert harmonic_mean(0.0, 0.0) == 0.0


class FeatureModel(nn.Module):
    """A classifier on 2-d 'images' (already features): ``head(x)``."""

    def __init__(self, head: nn.Module):
        super().__init__()
        self.head = head

    def forward(self, x):
        return self.head(x)


def fixed_head(weight) -> nn.Linear:
    head = nn.Linear(2, len(weight), bias=False)
    head.weight.data = torch.tensor(weight, dtype=torch.float32)
    return head


def test_novel_sets_are_scored_with_their_own_head():
    points = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    base = TaskData(TensorDataset(points, torch.tensor([0, 1, 0, 1])), ["a", "b"], extras={"b2n": "base"})
    novel = TaskData(TensorDataset(points, torch.tensor([1, 0, 1, 1])), ["c", "d"],
                     extras={"b2n": "novel", "rebuild_head": True})
    suite = EvalSuite.from_datasets("base", {"base": base, "novel": novel})
    model = FeatureModel(fixed_head([[1, 0], [0, 1]]))
    original = model.head
    asked = []

    def head_for(classnames):
        asked.append(list(classnames))
        return fixed_head([[0, 1], [1, 0]])  # swaps the two columns

    metrics = evaluate_with_set_heads(model, suite, head_for=head_for, progress=False)
    assert asked == [["c", "d"]] and model.head is original
    assert metrics["base/top1"] == 1.0 and metrics["novel/top1"] == 0.75
    assert metrics["avg_shifts/top1"] == 0.75 and metrics["n/novel"] == 4
    assert metrics["hm/top1"] == pytest.approx(harmonic_mean(1.0, 0.75))
    assert list(metrics)[:2] == ["base/top1", "novel/top1"]
    with pytest.raises(ValueError, match="head"):
        evaluate_with_set_heads(model, suite, progress=False)
