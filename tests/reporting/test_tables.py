"""The W&B summary of a run: endpoint metrics and the sweep's best alpha by average shift accuracy."""

from __future__ import annotations

from wiseft_lab.evaluation.suite import score_key
from wiseft_lab.reporting.tables import result_row, score, summary_markdown, summary_metrics


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


def test_rows_keep_every_metric_and_tables_use_each_columns_primary_one():
    metrics = {"photo/top1": 0.5, "wild/macro_f1": 0.25, "wild/top1": 0.75, "n/photo": 4, "n/wild": 8,
               "avg_shifts/macro_f1": 0.25}
    row = result_row("wiseft", 0.5, metrics, tag="x")
    assert list(row) == ["model", "alpha", "photo/top1", "wild/macro_f1", "wild/top1", "avg_shifts/macro_f1",
                         "n/photo", "n/wild", "tag"]
    assert score_key(row, "wild") == "wild/macro_f1" and score(row, "wild") == 0.25 and score(row, "nope") is None
    text = summary_markdown([row], "photo", ["wild"])
    assert "| alpha | photo (ref) | wild [macro_f1] | avg shifts [macro_f1] |" in text
    assert "| 0.5 | 50.0 | 25.0 | 25.0 |" in text and "Top-1 accuracy" not in text
    assert "Top-1 accuracy (%)." in summary_markdown([result_row("zeroshot", 0.0, {"photo/top1": 0.5})], "photo", [])
