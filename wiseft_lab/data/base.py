"""What every data source returns, and the logit projections used by shifted test sets."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch.utils.data import Dataset

Projection = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class TaskData:
    """A labelled image dataset plus what is needed to classify it zero-shot and to score it.

    ``dataset[i]`` is ``(image, label)`` with labels in ``0..len(classnames)-1``. ``projection`` maps the
    logits of a head over the *reference* classes onto this set's classes (ImageNet-R's 200 columns,
    ObjectNet's max over groups, ...); it is applied only when the head's width differs from
    ``len(classnames)``, so a head built for this set's own classes is scored directly.
    """

    dataset: Dataset
    classnames: Sequence[str]
    templates: str | Sequence[str] = "simple"
    projection: Projection | None = None
    expected_size: int | None = None
    description: str = ""
    extras: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classnames)


def project_logits(logits: torch.Tensor, data: TaskData) -> torch.Tensor:
    """Apply the dataset's projection when the head was built for other classes; refuse silent mismatches."""
    if logits.shape[-1] == data.num_classes:
        return logits
    if data.projection is None:
        raise ValueError(
            f"The head has {logits.shape[-1]} classes but {data.description or 'this dataset'} has "
            f"{data.num_classes} and defines no logit projection between them."
        )
    projected = data.projection(logits)
    if projected.shape[-1] != data.num_classes:
        raise ValueError(f"Projection produced {projected.shape[-1]} columns, expected {data.num_classes}.")
    return projected


class SelectColumns:
    """Keep the logits of a subset of the head's classes (ImageNet-R/-A: 200 of 1000), no renormalisation."""

    def __init__(self, indices: Sequence[int]):
        self.indices = torch.as_tensor(list(indices), dtype=torch.long)

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.index_select(-1, self.indices.to(logits.device))


class MaxOverGroups:
    """One output per group of head classes: the max of their logits (ObjectNet -> ImageNet)."""

    def __init__(self, groups: Sequence[Sequence[int]]):
        self.groups = [torch.as_tensor(list(g), dtype=torch.long) for g in groups]
        if any(len(g) == 0 for g in self.groups):
            raise ValueError("Every group of a MaxOverGroups projection needs at least one class.")

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        cols = [logits.index_select(-1, g.to(logits.device)).amax(dim=-1) for g in self.groups]
        return torch.stack(cols, dim=-1)
