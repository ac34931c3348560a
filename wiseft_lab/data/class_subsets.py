"""Base and novel classes: the class split of the CoOp/CoCoOp/CLIPFit base-to-novel protocol.

* Classes: the label ids sorted, base = the first ``ceil(n / 2)``, novel = the rest; each subset is relabelled
  from 0 in that order (CoOp's ``subsample_classes``).
* Training: k shots per class of the base classes (``data.shots``, :func:`wiseft_lab.data.splits.few_shot`).
* Evaluation: the test split's base classes with the model's own head, and its novel classes with a head built
  from the novel class names through the model's (tuned) text tower (:mod:`wiseft_lab.evaluation.set_heads`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from torch.utils.data import Dataset

from wiseft_lab.data.base import TaskData
from wiseft_lab.data.splits import labels_of

SUBSETS = ("all", "base", "novel")
REBUILD_HEAD = "rebuild_head"  # TaskData.extras flag: score this set with a head built from its own class names


def split_classes(num_classes: int) -> tuple[list[int], list[int]]:
    """``(base, novel)`` label ids: the first ``ceil(n / 2)`` sorted ids, and the rest (n=37: 19 / 18)."""
    if num_classes < 2:
        raise ValueError(f"A base/novel split needs at least 2 classes, got {num_classes}")
    middle = math.ceil(num_classes / 2)
    return list(range(middle)), list(range(middle, num_classes))


def subset_classes(which: str | None, num_classes: int) -> list[int] | None:
    """The label ids of ``which`` (``all``/``base``/``novel``; CoOp's ``new`` means ``novel``); None for all."""
    which = "novel" if which == "new" else (which or "all")
    if which not in SUBSETS:
        raise ValueError(f"data.classes must be one of {SUBSETS}, not {which!r}")
    if which == "all":
        return None
    base, novel = split_classes(num_classes)
    return base if which == "base" else novel


class ClassSubset(Dataset):
    """The examples of some classes, relabelled ``0..k-1`` in the order of ``classes``; keeps ``targets``."""

    def __init__(self, dataset: Dataset, classes: Sequence[int]):
        self.dataset = dataset
        self.classes = [int(c) for c in classes]
        labels = labels_of(dataset)
        relabel = {c: i for i, c in enumerate(self.classes)}
        self.indices = np.flatnonzero(np.isin(labels, self.classes)).astype(np.int64)
        self.targets = np.asarray([relabel[int(y)] for y in labels[self.indices]], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int):
        image, _ = self.dataset[int(self.indices[index])]
        return image, int(self.targets[index])


def subsample_classes(data: TaskData, which: str | None) -> TaskData:
    """``data`` restricted to its base or novel classes (relabelled from 0), or unchanged for ``all``."""
    classes = subset_classes(which, data.num_classes)
    if classes is None:
        return data
    which = "novel" if which == "new" else which
    return TaskData(ClassSubset(data.dataset, classes), [data.classnames[c] for c in classes], data.templates,
                    None, None, f"{data.description} [{which} classes: {len(classes)}/{data.num_classes}]",
                    {**data.extras, "b2n": which})


def class_subset(split: str | None = None, transform: Callable | None = None, *, dataset: Callable[..., TaskData],
                 classes: str = "base") -> TaskData:
    """Eval-set builder for configs: ``dataset`` (a partial data source) on ``split``, restricted to ``classes``.

    Novel sets are flagged (``extras["rebuild_head"]``) so that they are scored with a head built from their own
    class names through the evaluated model's text tower.
    """
    data = dataset(transform=transform, **({"split": split} if split else {}))
    subset = subsample_classes(data, classes)
    if subset.extras.get("b2n") == "novel":
        subset.extras[REBUILD_HEAD] = True
    return subset
