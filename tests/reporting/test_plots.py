"""Figures for papers: PNG + PDF, alpha labels beside the curve and off the endpoint markers; one decimal rule."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import pytest

from wiseft_lab.reporting.plots import LABEL_OFFSET_PT, label_alphas, label_offsets, wiseft_curve
from wiseft_lab.reporting.soup_report import soups_markdown
from wiseft_lab.reporting.tables import summary_markdown


def test_labels_sit_outside_the_curve_perpendicular_to_it():
    d = LABEL_OFFSET_PT
    assert label_offsets([0, 1, 2], [5, 5, 5]) == [(0.0, d), (0.0, d), (0.0, d)]  # flat: straight up
    rising = label_offsets([0, 1, 2], [0, 10, 20])  # along the diagonal once both axes are normalised
    assert rising[1] == pytest.approx((-d / math.sqrt(2), d / math.sqrt(2)))
    falling = label_offsets([0, 1, 2], [20, 10, 0])
    assert falling[1] == pytest.approx((d / math.sqrt(2), d / math.sqrt(2)))
    assert all(math.hypot(*o) == pytest.approx(d) for o in rising + falling)
    corner = label_offsets([0, 1, 1], [1, 1, 0])  # a bulge: labels away from the centroid (2/3, 2/3)
    assert corner[1] == pytest.approx((d / math.sqrt(2), d / math.sqrt(2)))
    assert corner[0] == pytest.approx((0.0, d)) and corner[2] == pytest.approx((d, 0.0))


def test_the_endpoints_alphas_are_not_written_over_their_markers():
    fig, ax = plt.subplots()
    sweep = [{"alpha": a} for a in (0.0, 0.5, 1.0)]
    label_alphas(ax, sweep, [0, 1, 2], [0, 2, 1], skip={0.0, 1.0})
    assert [t.get_text() for t in ax.texts] == ["0.5"]
    plt.close(fig)


def rows():
    def row(model, alpha, ref, shift):
        return {"model": model, "alpha": alpha, "photo/top1": ref, "sketch/top1": shift, "avg_shifts/top1": shift}
    return [row("zeroshot", 0.0, 0.6, 0.9), row("finetuned", 1.0, 0.84, 0.66),
            *[row("wiseft", a, 0.6 + 0.24 * a, 0.9 - 0.2 * a * a) for a in (0.0, 0.5, 1.0)]]


def test_the_curve_is_written_as_png_and_pdf(tmp_path):
    png = wiseft_curve(rows(), "photo", tmp_path / "wiseft_curve.png")
    assert png.read_bytes()[:4] == b"\x89PNG" and (tmp_path / "wiseft_curve.pdf").read_bytes()[:4] == b"%PDF"


def test_summary_and_soups_tables_show_the_same_decimals():
    summary = summary_markdown(rows(), "photo", ["sketch"])
    soups = soups_markdown([{"model": "uniform_soup", "alpha": None, "photo/top1": 0.8384, "sketch/top1": 0.66,
                             "avg_shifts/top1": 0.66, "n_ingredients": 3}], "photo", ["sketch"], {"ingredients": []})
    assert "| fine-tuned | 84.0 | 66.0 | 66.0 |" in summary
    assert "| Uniform soup | 3 | - | 83.8 | 66.0 | 66.0 |" in soups
