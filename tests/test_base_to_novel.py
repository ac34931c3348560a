"""The few-shot base-to-novel protocol: class split, relabelling, k-shot sampling, per-set heads, HM, the table."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from wiseft_lab.data.base import TaskData
from wiseft_lab.data.splits import few_shot
from wiseft_lab.evaluation.metrics import harmonic_mean
from wiseft_lab.evaluation.suite import EvalSuite
from wiseft_lab.reporting.base_to_novel import markdown, summarize
from wiseft_lab.training.base_to_novel import (
    class_subset,
    evaluate_with_set_heads,
    split_classes,
    subsample_classes,
)


def test_split_37_classes_is_19_base_18_novel():
    base, novel = split_classes(37)
    assert (len(base), len(novel)) == (19, 18)
    assert base == list(range(19)) and novel == list(range(19, 37))
    assert split_classes(10) == ([0, 1, 2, 3, 4], [5, 6, 7, 8, 9]) and split_classes(2) == ([0], [1])
    with pytest.raises(ValueError):
        split_classes(1)


def labelled(num_classes: int, per_class: int) -> TaskData:
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    dataset = TensorDataset(labels.float()[:, None], labels)  # the "image" is its original label
    return TaskData(dataset, [f"class_{i}" for i in range(num_classes)], "simple", description="toy")


def test_subsets_are_relabelled_from_zero():
    data = labelled(37, 3)
    base, novel = subsample_classes(data, "base"), subsample_classes(data, "novel")
    assert base.classnames == [f"class_{i}" for i in range(19)]
    assert novel.classnames == [f"class_{i}" for i in range(19, 37)]
    assert len(base.dataset) == 57 and len(novel.dataset) == 54
    image, label = novel.dataset[0]
    assert (image.item(), label) == (19.0, 0)
    assert sorted(set(novel.dataset.targets.tolist())) == list(range(18))
    assert all(novel.dataset[i][0].item() - 19 == novel.dataset[i][1] for i in range(len(novel.dataset)))
    assert subsample_classes(data, "all") is data and subsample_classes(data, None) is data
    assert subsample_classes(data, "new").classnames == novel.classnames  # CoOp's spelling
    with pytest.raises(ValueError):
        subsample_classes(data, "half")


def test_class_subset_builder_overrides_the_split():
    seen = {}

    def source(split="train", transform=None):
        seen["split"] = split
        return labelled(10, 2)

    novel = class_subset(split="test", dataset=source, classes="novel")
    assert seen["split"] == "test" and novel.num_classes == 5
    assert novel.extras == {"b2n": "novel", "rebuild_head": True}
    assert class_subset(split="test", dataset=source, classes="base").extras == {"b2n": "base"}


def test_few_shot_sampling():
    labels = np.array([0] * 30 + [1] * 5 + [2] * 20)
    picked = few_shot(labels, 16, seed=1)
    counts = np.bincount(labels[picked])
    assert counts.tolist() == [16, 5, 16]  # all of a class that has fewer than k
    assert len(set(picked.tolist())) == len(picked)  # without replacement
    assert np.array_equal(picked, few_shot(labels, 16, seed=1))  # deterministic per seed
    assert not np.array_equal(picked, few_shot(labels, 16, seed=2))


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


def test_table_takes_hm_of_averaged_accuracies():
    records = [{"method": "clipfit", "dataset": d, "seed": s, "model": m, "base": b, "novel": n, "run": ""}
               for d, values in (("dtd", [(0.8, 0.4), (0.6, 0.6), (0.7, 0.5)]), ("eurosat", [(0.9, 0.7)] * 3))
               for s, (b, n) in zip((1, 2, 3), values, strict=True)
               for m in ("zero-shot", "fine-tuned")]
    summary = summarize(records)["clipfit"]
    dtd = summary["datasets"]["dtd"]["fine-tuned"]
    assert dtd["base"] == pytest.approx(0.7) and dtd["novel"] == pytest.approx(0.5)
    assert dtd["hm"] == pytest.approx(harmonic_mean(0.7, 0.5)) and dtd["seeds"] == [1, 2, 3]
    average = summary["average"]["fine-tuned"]
    assert average["base"] == pytest.approx(0.8) and average["novel"] == pytest.approx(0.6)
    assert average["hm"] == pytest.approx(harmonic_mean(0.8, 0.6))
    assert list(summary["datasets"]) == ["dtd", "eurosat"]
    text = markdown(summarize(records))
    assert "| dtd | 1,2,3 | 70.00 | 50.00 | 58.33 |" in text
    assert "| **average** (2) |  | 80.00 | 60.00 | 68.57 |" in text
