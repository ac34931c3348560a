"""The W&B summary of a run: endpoint metrics and the sweep's best alpha by average shift accuracy."""

from __future__ import annotations

from wiseft_lab.reporting.tables import summary_metrics


def test_summary_keeps_endpoints_and_picks_the_best_alpha_by_shift_average():
    rows = [
        {"model": "zeroshot", "alpha": 0.0, "photo/top1": 60.0, "avg_shifts/top1": 80.0, "n/photo": 10},
        {"model": "finetuned", "alpha": 1.0, "photo/top1": 90.0, "avg_shifts/top1": 60.0},
        {"model": "wiseft", "alpha": 0.0, "photo/top1": 60.0, "avg_shifts/top1": 80.0},
        {"model": "wiseft", "alpha": 0.3, "photo/top1": 75.0, "avg_shifts/top1": 82.0},
        {"model": "wiseft", "alpha": 1.0, "photo/top1": 90.0, "avg_shifts/top1": 60.0},
    ]
    assert summary_metrics(rows) == {
        "zeroshot/photo/top1": 60.0, "zeroshot/avg_shifts/top1": 80.0,
        "finetuned/photo/top1": 90.0, "finetuned/avg_shifts/top1": 60.0,
        "wiseft_best/alpha": 0.3, "wiseft_best/photo/top1": 75.0, "wiseft_best/avg_shifts/top1": 82.0,
    }


def test_without_a_sweep_only_the_endpoints_are_summarised():
    assert summary_metrics([{"model": "finetuned", "alpha": 1.0, "photo/top1": 90.0}]) == {"finetuned/photo/top1": 90.0}
