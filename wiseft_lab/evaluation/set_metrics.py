"""The metrics of sets that are not scored by top-1 alone, with the official definitions, and one entry point.

A set declares its metrics in ``TaskData.extras`` (the convention the data builders follow):

* ``extras["metrics"]``: metric names, the primary one first (default ``["top1"]``):
  ``top1``, ``top<k>`` (top-k accuracy), ``macro_f1`` (WILDS), ``worst_<grouping>_acc`` (WILDS' worst-group
  accuracy over ``extras["groups"][<grouping>]``), ``pm<k>`` (Shankar et al.'s pm-k over ``extras["pmk_sets"]``;
  ``pm0`` is the accuracy on the anchor frames).
* ``extras["groups"]``: ``{grouping: int64 array, one group index per example}``; ``-1`` puts an example in no
  group of that grouping (FMoW's "Other" region, which WILDS leaves out of the worst region).
  ``extras["group_names"]``: ``{grouping: [name of group 0, name of group 1, ...]}``.
* ``extras["pmk_sets"]``: one int array of dataset indices per anchor frame, the anchor first, then the frames
  within k of it that count (``extras["pmk_k"]`` is that k). ``extras["label_sets"]`` (optional): the labels that
  count as correct for each example (the video sets are multi-label); without it, only the example's label counts.

Why not torchmetrics: its macro F1 (``MulticlassF1Score(average="macro")``) drops only classes with
``tp + fp + fn == 0`` from the mean (``_adjust_weights_safe_divide`` in torchmetrics ``utilities/compute.py``), so
a class that is predicted but absent from the labels enters the mean with F1 = 0; WILDS averages over the labels
present in ``y_true`` only. Worst-group accuracy and pm-k have no torchmetrics counterpart. Each metric here is a
few lines of counting, tested against hand-computed values, so no dependency is added.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from wiseft_lab.data.base import TaskData, project_logits
from wiseft_lab.evaluation.metrics import top1

DEFAULT_METRICS = ("top1",)


def _check_sizes(logits: torch.Tensor, labels: torch.Tensor, what: str) -> None:
    if len(labels) == 0:
        raise ValueError(f"{what} of an empty set is undefined")
    if len(logits) != len(labels):
        raise ValueError(f"{len(logits)} rows of logits but {len(labels)} labels")


def top_k_accuracy(logits: torch.Tensor, labels: torch.Tensor, k: int = 5) -> float:
    """Fraction of rows whose label is among the ``k`` largest logits (all of them when there are fewer classes).

    Ties at the k-th place are broken by ``torch.topk``, as the PyTorch ImageNet example's ``accuracy`` does.
    """
    _check_sizes(logits, labels, f"top-{k}")
    best = logits.topk(min(k, logits.shape[-1]), dim=-1).indices.cpu()
    return float((best == labels.cpu()[:, None]).any(dim=-1).double().mean())


def macro_f1(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """WILDS' macro F1 (iWildCam's primary metric), averaged over the classes present in ``labels`` only.

    p-lambda/wilds ``wilds/common/metrics/all_metrics.py`` ``F1(average='macro')`` computes
    ``sklearn.metrics.f1_score(y_true, y_pred, average='macro', labels=torch.unique(y_true))`` on the arg-max
    predictions: per class c of ``y_true``, ``F1_c = 2 TP / (2 TP + FP + FN)`` (0 when TP = 0), and the unweighted
    mean over those classes. A predicted class that never occurs in ``labels`` is not averaged over; its false
    positives do not count against any class, while the misses they cause do (as false negatives of the true class).
    """
    _check_sizes(logits, labels, "macro F1")
    preds, labels = logits.argmax(dim=-1).cpu().long(), labels.cpu().long()
    width = int(max(preds.max(), labels.max())) + 1
    true_positives = torch.bincount(labels[preds == labels], minlength=width).double()
    predicted = torch.bincount(preds, minlength=width).double()
    actual = torch.bincount(labels, minlength=width).double()
    present = torch.unique(labels)
    # 2 TP + FP + FN = (TP + FP) + (TP + FN) = predicted + actual, which is >= 1 for a class present in labels
    scores = 2 * true_positives[present] / (predicted[present] + actual[present])
    return float(scores.mean())


def group_accuracies(logits: torch.Tensor, labels: torch.Tensor, groups: np.ndarray | torch.Tensor) -> dict[int, float]:
    """Top-1 accuracy of every group that has examples: ``{group index: accuracy}`` (``-1``: in no group)."""
    _check_sizes(logits, labels, "group accuracy")
    groups = torch.as_tensor(np.asarray(groups), dtype=torch.long)
    if len(groups) != len(labels):
        raise ValueError(f"{len(groups)} group indices for {len(labels)} examples")
    correct = (logits.argmax(dim=-1).cpu() == labels.cpu()).double()
    return {int(g): float(correct[groups == g].mean()) for g in torch.unique(groups).tolist() if g >= 0}


def worst_group_accuracy(logits: torch.Tensor, labels: torch.Tensor, groups: np.ndarray | torch.Tensor) -> float:
    """The lowest accuracy over the groups that have examples (FMoW's primary metric over ``region``).

    p-lambda/wilds ``Metric._compute_group_wise`` (``wilds/common/metrics/metric.py``) takes the minimum over the
    groups with a count > 0; ``FMoWDataset.eval`` (``wilds/datasets/fmow_dataset.py``) also skips the "Other" region,
    which the builders encode as group ``-1``. Empty groups never count as 0.
    """
    per_group = group_accuracies(logits, labels, groups)
    if not per_group:
        raise ValueError("worst-group accuracy needs at least one example in a group (all group indices are -1)")
    return min(per_group.values())


def frame_correct(logits: torch.Tensor, labels: torch.Tensor,
                  label_sets: Sequence[Sequence[int]] | None = None) -> torch.Tensor:
    """Per example: is the arg-max among the labels that count for it (``label_sets``; else its own label)?"""
    preds = logits.argmax(dim=-1).cpu()
    if label_sets is None:
        return preds == labels.cpu()
    if len(label_sets) != len(preds):
        raise ValueError(f"{len(label_sets)} label sets for {len(preds)} examples")
    return torch.tensor([p in {int(x) for x in allowed} for p, allowed in zip(preds.tolist(), label_sets, strict=True)])


def pm_k(logits: torch.Tensor, labels: torch.Tensor, pmk_sets: Sequence[Sequence[int]],
         label_sets: Sequence[Sequence[int]] | None = None) -> float:
    """Shankar et al.'s pm-k: the fraction of anchors for which the anchor *and* every frame of its set are correct.

    ``pmk_sets[a]`` = dataset indices, the anchor first. As ``score_predictions`` in
    modestyachts/imagenet-vid-robust-example ``score_predictions.py`` (= WiSE-FT's ``ImageNetVidRobust``) and
    ``create_pmk_score`` in WiSE-FT ``src/datasets/ytbb_robust.py``: a frame is correct when the arg-max is in its
    label set; the denominator is the number of anchors; an anchor without neighbours counts by itself.
    """
    if not pmk_sets:
        raise ValueError("pm-k needs at least one anchor")
    correct = frame_correct(logits, labels, label_sets)
    return float(np.mean([bool(correct[torch.as_tensor(np.asarray(s), dtype=torch.long)].all()) for s in pmk_sets]))


def anchor_accuracy(logits: torch.Tensor, labels: torch.Tensor, pmk_sets: Sequence[Sequence[int]],
                    label_sets: Sequence[Sequence[int]] | None = None) -> float:
    """pm-0 ("benign accuracy"): the accuracy on the anchor frames only (the first index of every set)."""
    if not pmk_sets:
        raise ValueError("pm-0 needs at least one anchor")
    correct = frame_correct(logits, labels, label_sets)
    return float(correct[torch.tensor([int(s[0]) for s in pmk_sets])].double().mean())


def set_metrics(data: TaskData) -> list[str]:
    """The metrics a set declares, primary first (``["top1"]`` when it declares none)."""
    return list(data.extras.get("metrics") or DEFAULT_METRICS)


def primary_metric(data: TaskData) -> str:
    """The metric a set is summarised by (for ``avg_shifts``): the first it declares."""
    return set_metrics(data)[0]


def compute_metric(name: str, logits: torch.Tensor, labels: torch.Tensor, extras: Mapping) -> float:
    """One named metric of projected ``logits`` (see the module docstring for the names and ``extras`` keys)."""
    labels = torch.as_tensor(labels)
    if name == "top1":
        return top1(logits, labels)
    if name == "macro_f1":
        return macro_f1(logits, labels)
    if match := re.fullmatch(r"top(\d+)", name):
        return top_k_accuracy(logits, labels, int(match.group(1)))
    if match := re.fullmatch(r"worst_(\w+)_acc", name):
        grouping = match.group(1)
        groups = extras.get("groups", {})
        if grouping not in groups:
            raise KeyError(f"metric {name!r} needs extras['groups'][{grouping!r}]; this set has {sorted(groups)}")
        return worst_group_accuracy(logits, labels, groups[grouping])
    if match := re.fullmatch(r"pm(\d+)", name):
        if "pmk_sets" not in extras:
            raise KeyError(f"metric {name!r} needs extras['pmk_sets']")
        k, sets, label_sets = int(match.group(1)), extras["pmk_sets"], extras.get("label_sets")
        if k == 0:
            return anchor_accuracy(logits, labels, sets, label_sets)
        if k != extras.get("pmk_k"):
            raise ValueError(f"metric {name!r}: this set's frame sets are for k={extras.get('pmk_k')}")
        return pm_k(logits, labels, sets, label_sets)
    raise ValueError(f"Unknown metric {name!r}: expected top1, top<k>, macro_f1, worst_<grouping>_acc or pm<k>")


def score_set(logits: torch.Tensor, labels: torch.Tensor, data: TaskData) -> dict[str, float]:
    """``{metric: value}`` for every metric ``data`` declares, primary first.

    ``logits`` may be the head's (e.g. 1000 ImageNet columns): they are projected onto the set's classes first
    (:func:`~wiseft_lab.data.base.project_logits`, a no-op when they already have the set's width).
    """
    projected = project_logits(logits, data)
    return {name: compute_metric(name, projected, labels, data.extras) for name in set_metrics(data)}
