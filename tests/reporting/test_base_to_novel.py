"""The base-to-novel table: HM of the seed- and data-set-averaged accuracies, as the papers compute it."""

from __future__ import annotations

import pytest

from wiseft_lab.evaluation.metrics import harmonic_mean
from wiseft_lab.reporting.base_to_novel import markdown, summarize


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
