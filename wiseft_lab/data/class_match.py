"""Eval sets matched to the head's classes *by name*, so a set can never be scored with the wrong labels.

A folder set's labels are its sorted folder order; nothing ties them to the head's classes but the names. So
before any training every eval set's class names are compared with the head's (case, ``_`` and spaces aside):

* the same names in the same order: the set is used as it is;
* the same names in another order: the labels are renumbered into the head's order;
* a subset of the head's classes: an error, unless the set is listed in ``eval.partial_classes`` (or its short
  form says ``partial_classes: true``); it is then scored on the logits of its own classes only (the
  ImageNet-R way: the other columns are dropped, nothing is renormalised);
* names the head does not have: an error listing them (and the missing ones), with the fix: map the folders
  with ``classnames: {folder: class name}``.

Sets that already define how a head's logits map onto them (a ``projection``: ImageNet-R/-A, ObjectNet, the
video sets) and sets scored by a head of their own (base-to-novel's novel classes) are left as they are.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import numpy as np
from torch.utils.data import Dataset

from wiseft_lab.data.base import SelectColumns, TaskData
from wiseft_lab.data.class_subsets import REBUILD_HEAD
from wiseft_lab.data.splits import labels_of
from wiseft_lab.errors import UserFacingError

PARTIAL_OPTION = "partial_classes"


class ClassMatchError(UserFacingError, ValueError):
    """An eval set's class names do not match the head's; the message lists the names and the fix."""


def name_key(name: str) -> str:
    """What two class names must share to be the same class: case, ``_`` and surrounding spaces aside."""
    return " ".join(name.replace("_", " ").lower().split())


class RelabeledDataset(Dataset):
    """``dataset`` with every label ``y`` replaced by ``mapping[y]``; keeps ``targets``."""

    def __init__(self, dataset: Dataset, mapping: Sequence[int]):
        self.dataset = dataset
        self.mapping = np.asarray(mapping, dtype=np.int64)

    @functools.cached_property
    def targets(self) -> np.ndarray:
        return self.mapping[labels_of(self.dataset)]

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        image, label = self.dataset[index]
        return image, int(self.mapping[label])


def _listing(names: Sequence[str]) -> str:
    return ", ".join(sorted(names))


def match_classes(data: TaskData, head: Sequence[str], *, name: str, partial: bool = False) -> TaskData:
    """``data`` with its labels in the head's class order (see the module docstring); raises ClassMatchError."""
    if data.extras.get(REBUILD_HEAD) or data.projection is not None:
        return data
    keys, head_keys = [name_key(c) for c in data.classnames], [name_key(c) for c in head]
    if keys == head_keys:
        return data
    repeated = sorted({c for c in data.classnames if keys.count(name_key(c)) > 1})
    if repeated:
        raise ClassMatchError(f"Eval set {name!r} names several classes alike: {_listing(repeated)}")
    position = {k: i for i, k in enumerate(head_keys)}
    extra = [c for c, k in zip(data.classnames, keys, strict=True) if k not in position]
    missing = [c for c, k in zip(head, head_keys, strict=True) if k not in set(keys)]
    fix = (f"If its folders are named otherwise, map them to the head's classes with the set's `classnames` option, "
           f"{{<folder>: <class>}} (eval.shifts.{name}.classnames=..., or eval.datasets.{name}.classnames=... for a "
           "folder set)")
    if extra:
        raise ClassMatchError(
            f"Eval set {name!r} has classes the model's head does not know: {_listing(extra)}."
            + (f" The head's classes it lacks: {_listing(missing)}." if missing else "")
            + (f" The head's classes: {_listing(head)}." if len(missing) < len(head) else "") + f" {fix}.")
    columns = [position[k] for k in keys]
    if missing:
        if not partial:
            raise ClassMatchError(
                f"Eval set {name!r} lacks classes of the model's head: {_listing(missing)} (it has "
                f"{_listing(data.classnames)}). If it is meant to hold only some classes, list it in "
                f"eval.{PARTIAL_OPTION}=[{name}] (short form: {PARTIAL_OPTION}: true): it is then scored on the "
                f"logits of its own classes only.")
        return dataclasses.replace(data, projection=SelectColumns(columns),
                                   description=f"{data.description} (scored on {len(columns)} of the head's "
                                               f"{len(head)} classes)")
    return dataclasses.replace(data, dataset=RelabeledDataset(data.dataset, columns), classnames=list(head),
                               description=f"{data.description} (labels renumbered to the head's class order)")
