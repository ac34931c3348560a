"""Base and novel classes of the base-to-novel protocol: class split, relabelling, the eval-set builder, k-shot."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from wiseft_lab.data.base import TaskData
from wiseft_lab.data.class_subsets import class_subset, split_classes, subsample_classes
from wiseft_lab.data.splits import few_shot


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
