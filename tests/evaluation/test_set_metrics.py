"""Per-set metrics against hand-computed values, including the edge cases of the official definitions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wiseft_lab.data.base import SelectColumns, TaskData
from wiseft_lab.evaluation.set_metrics import (
    anchor_accuracy,
    group_accuracies,
    macro_f1,
    pm_k,
    primary_metric,
    score_set,
    top_k_accuracy,
    worst_group_accuracy,
)


def one_hot_logits(preds, width: int) -> torch.Tensor:
    """Logits whose arg-max is ``preds`` (5 on the predicted class, 0 elsewhere)."""
    logits = torch.zeros(len(preds), width)
    logits[torch.arange(len(preds)), torch.tensor(preds)] = 5.0
    return logits


def test_top_k_accuracy():
    logits = torch.tensor([[0.1, 0.5, 0.3, 0.0],    # ranking 1, 2, 0, 3
                           [0.9, 0.8, 0.0, 0.7],    # ranking 0, 1, 3, 2
                           [0.0, 0.1, 0.2, 0.3]])   # ranking 3, 2, 1, 0
    labels = torch.tensor([2, 3, 1])
    # top-1: none right; top-2: row 0 (2 is second); top-3: rows 0, 1 (3 is third), 2 (1 is third)
    assert top_k_accuracy(logits, labels, 1) == 0.0
    assert top_k_accuracy(logits, labels, 2) == pytest.approx(1 / 3)
    assert top_k_accuracy(logits, labels, 3) == 1.0
    assert top_k_accuracy(logits, labels, 10) == 1.0   # more than the classes: all of them
    with pytest.raises(ValueError, match="empty"):
        top_k_accuracy(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))


def test_macro_f1_averages_over_the_classes_present_in_the_labels():
    # labels 0 0 1 1 2, predictions 0 1 1 1 3: class 3 is predicted but absent, class 2 is never predicted
    #   class 0: TP 1, FP 0, FN 1 -> 2*1 / (2 + 0 + 1) = 2/3
    #   class 1: TP 2, FP 1, FN 0 -> 4 / 5
    #   class 2: TP 0, FN 1      -> 0
    #   class 3 is not averaged over (WILDS: labels=unique(y_true)) -> (2/3 + 4/5 + 0) / 3 = 22/45
    # (torchmetrics' macro F1 would add class 3 with F1 = 0: 22/60)
    labels = torch.tensor([0, 0, 1, 1, 2])
    assert macro_f1(one_hot_logits([0, 1, 1, 1, 3], 4), labels) == pytest.approx(22 / 45)
    # a perfect prediction scores 1 whatever classes the head has beyond the labels'
    assert macro_f1(one_hot_logits([0, 0, 1, 1, 2], 7), labels) == pytest.approx(1.0)
    # labels 0 0 0 1, all predicted 0: class 0 TP 3, FP 1 -> 6/7; class 1 TP 0 -> 0; mean 3/7
    assert macro_f1(one_hot_logits([0, 0, 0, 0], 2), torch.tensor([0, 0, 0, 1])) == pytest.approx(3 / 7)
    with pytest.raises(ValueError, match="empty"):
        macro_f1(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))


def test_worst_group_accuracy_skips_empty_groups_and_examples_in_no_group():
    labels = torch.tensor([0, 1, 0, 1, 0, 1])
    logits = one_hot_logits([0, 1, 1, 1, 1, 0], 2)   # right: rows 0, 1, 3
    groups = np.array([0, 0, 1, 1, -1, -1])          # group 2 exists (e.g. a named region) but has no example
    # group 0: rows 0, 1 -> 1.0; group 1: rows 2 (wrong), 3 (right) -> 0.5; rows 4, 5 (both wrong) are in no group
    assert group_accuracies(logits, labels, groups) == {0: 1.0, 1: 0.5}
    assert worst_group_accuracy(logits, labels, groups) == 0.5   # not 0.0: neither the -1 rows nor empty group 2
    with pytest.raises(ValueError, match="at least one example"):
        worst_group_accuracy(logits, labels, np.full(6, -1))
    with pytest.raises(ValueError, match="group indices"):
        worst_group_accuracy(logits, labels, np.zeros(5, dtype=np.int64))


def test_pm_k_needs_the_anchor_and_every_neighbour_right():
    # anchor A = 0 with neighbours 1, 2; anchor B = 3 with neighbour 4; anchor C = 5 alone
    pmk_sets = [np.array([0, 1, 2]), np.array([3, 4]), np.array([5])]
    label_sets = [[2], [2], [2, 5], [1], [1], [0]]   # frame 2 has two labels, either counts
    labels = torch.tensor([2, 2, 2, 1, 1, 0])
    logits = one_hot_logits([2, 2, 5, 1, 3, 0], 6)   # frame 2 predicts its second label; B's neighbour is wrong
    # A: 0, 1, 2 right; B: anchor right, neighbour wrong; C: right on its own -> pm-k 2/3, anchors 3/3
    assert pm_k(logits, labels, pmk_sets, label_sets) == pytest.approx(2 / 3)
    assert anchor_accuracy(logits, labels, pmk_sets, label_sets) == 1.0
    # without the label sets frame 2 (label 2, predicted 5) is wrong too: only C survives
    assert pm_k(logits, labels, pmk_sets) == pytest.approx(1 / 3)
    # B's anchor wrong, its neighbour right: B fails pm-k and pm-0
    logits = one_hot_logits([2, 2, 5, 0, 1, 0], 6)
    assert pm_k(logits, labels, pmk_sets, label_sets) == pytest.approx(2 / 3)
    assert anchor_accuracy(logits, labels, pmk_sets, label_sets) == pytest.approx(2 / 3)


def _task(extras: dict, classes: int = 3, projection=None) -> TaskData:
    return TaskData(dataset=[], classnames=[f"c{i}" for i in range(classes)], projection=projection, extras=extras)


def test_score_set_projects_then_reports_the_declared_metrics_primary_first():
    # a 6-way head scored on columns 0, 2, 4 (as a 1000-way head on ImageNet-R's 200)
    data = _task({"metrics": ["macro_f1", "top1", "top2"]}, projection=SelectColumns([0, 2, 4]))
    logits = torch.zeros(4, 6)
    logits[0, 0], logits[1, 4], logits[2, 2], logits[3, 1] = 3, 3, 3, 9   # column 1 is not a set class
    logits[3, 4], logits[3, 0] = 1, 0.5                                     # so row 3 predicts 4 -> class 2
    labels = torch.tensor([0, 2, 1, 1])
    # projected predictions 0, 2, 1, 2: class 0: F1 1; class 1: TP 1, FN 1 -> 2/3; class 2: TP 1, FP 1 -> 2/3
    result = score_set(logits, labels, data)
    assert list(result) == ["macro_f1", "top1", "top2"] and primary_metric(data) == "macro_f1"
    assert result["macro_f1"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    assert result["top1"] == 0.75
    # top-2 of row 3: projected (0.5, 0, 1) -> classes 2 and 0: label 1 missed; the others are their top-1
    assert result["top2"] == 0.75
    assert score_set(torch.eye(3), torch.tensor([0, 1, 1]), _task({})) == {"top1": pytest.approx(2 / 3)}


def test_score_set_reads_groups_and_frame_sets_from_extras():
    groups = {"region": np.array([0, 0, 1, -1])}
    data = _task({"metrics": ["worst_region_acc", "top1"], "groups": groups, "group_names": {"region": ["a", "b"]}})
    logits, labels = one_hot_logits([0, 1, 2, 0], 3), torch.tensor([0, 0, 2, 1])
    # region a: 1/2, region b: 1/1 -> worst 0.5; top-1 2/4
    assert score_set(logits, labels, data) == {"worst_region_acc": 0.5, "top1": 0.5}
    video = _task({"metrics": ["pm2", "pm0"], "pmk_sets": [np.array([0, 1]), np.array([2, 3])], "pmk_k": 2})
    # set 0: anchor right, neighbour wrong; set 1: anchor right, neighbour wrong
    assert score_set(logits, labels, video) == {"pm2": 0.0, "pm0": 1.0}


def test_score_set_refuses_what_it_cannot_compute():
    logits, labels = torch.eye(2), torch.tensor([0, 1])
    with pytest.raises(KeyError, match="region"):
        score_set(logits, labels, _task({"metrics": ["worst_region_acc"]}, classes=2))
    with pytest.raises(ValueError, match="k=10"):
        score_set(logits, labels, _task({"metrics": ["pm5"], "pmk_sets": [[0]], "pmk_k": 10}, classes=2))
    with pytest.raises(ValueError, match="Unknown metric"):
        score_set(logits, labels, _task({"metrics": ["auroc"]}, classes=2))
