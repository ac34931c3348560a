"""The report's figure: the WiSE-FT curve against the published points, the soups scatter, or base-to-novel bars.

Our points are filled, the paper's are hollow markers of the same shape and colour. The x axis is the reference
(ImageNet) accuracy, the y axis the average over the shifts; where our runs lack one of the paper's shifts the
figure falls back to the mean over the shifts they have, and its axis label says so (the table never does).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from statistics import mean, stdev
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from wiseft_lab.reporting.paper.build import sweep_means  # noqa: E402
from wiseft_lab.reporting.paper.cells import Report  # noqa: E402
from wiseft_lab.reporting.plots import save_figure  # noqa: E402

COLOURS = ("tab:purple", "tab:orange", "tab:green", "tab:red", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")
MARKERS = ("*", "D", "o", "s", "^", "v", "P", "X")


def _axes(report: Report) -> tuple[str, str, list[str], str | None]:
    cols = report.spec.columns
    ref = next(c for c in cols if c.get("role") == "reference")
    avg = next((c for c in cols if c.get("role") == "average"), None)
    shifts = [c["key"] for c in cols if c.get("role") == "shift"]
    return ref["key"], ref["label"], shifts, avg["key"] if avg else None


def _y(values: Mapping[str, float], shifts: Sequence[str], avg: str | None) -> tuple[float | None, bool]:
    """The average over the shifts, or (fallback) over the shifts present; ``True`` when it is the fallback."""
    if avg and avg in values:
        return values[avg], False
    present = [values[s] for s in shifts if s in values]
    return (mean(present), True) if present else (None, False)


def render_figure(report: Report, path: str | Path) -> Path | None:
    kind = report.spec.view.get("figure")
    if kind == "wiseft_curve":
        return wiseft_figure(report, path)
    if kind == "soups_scatter":
        return soups_figure(report, path)
    if kind == "b2n_bars":
        return b2n_figure(report, path)
    return None


def _published_points(report: Report, ax, ref: str, avg: str | None, style: Mapping[str, tuple[str, str]]) -> int:
    count = 0
    for line in report.lines:
        values = line.published
        if line.spec.get("optimal") or ref not in values or not avg or values.get(avg) is None:
            continue
        marker, colour = style[line.spec["key"]]
        ax.scatter([values[ref]], [values[avg]], marker=marker, s=150, facecolors="none", edgecolors=colour,
                   linewidths=1.6, zorder=6, label=f"paper: {line.spec['label']}")
        count += 1
    return count


def wiseft_figure(report: Report, path: str | Path) -> Path | None:
    ref, ref_label, shifts, avg = _axes(report)
    prepared = report.points.get("prepared", [])
    fig, ax = plt.subplots(figsize=(7, 5.5), constrained_layout=True)
    fallback = False
    plotted = 0
    methods = sorted(report.spec.methods) or [None]
    for index, method in enumerate(methods):
        sweep = sweep_means(report.spec, prepared, method)
        points = []
        for alpha, cols in sorted(sweep.items()):
            values = {c: mean(v) for c, v in cols.items()}
            y, fell_back = _y(values, shifts, avg)
            if ref in values and y is not None:
                fallback |= fell_back
                spread = stdev(cols[avg]) if avg in cols and len(cols[avg]) > 1 else 0.0
                points.append((alpha, values[ref], y, spread))
        if points:
            xs, ys = [p[1] for p in points], [p[2] for p in points]
            ax.errorbar(xs, ys, yerr=[p[3] for p in points], fmt="-o", ms=3.5, lw=1.2, capsize=2,
                        color=COLOURS[index % len(COLOURS)], zorder=4,
                        label=f"ours: WiSE-FT sweep{f' ({method.upper()})' if method else ''}")
            for alpha, x, y, _ in points:
                ax.annotate(f"{alpha:g}", (x, y), textcoords="offset points", xytext=(4, 3), fontsize=6)
            plotted += len(points)
    style = {line.spec["key"]: (MARKERS[i % len(MARKERS)], COLOURS[(i + 2) % len(COLOURS)])
             for i, line in enumerate(report.lines)}
    for line in report.lines:
        if line.spec.get("optimal"):
            continue
        x_cell = line.cells.get(ref)
        values = {k: c.mean for k, c in line.cells.items() if c.mean is not None}
        y, fell_back = _y(values, shifts, avg)
        if x_cell is None or x_cell.mean is None or y is None:
            continue
        fallback |= fell_back
        marker, colour = style[line.spec["key"]]
        ax.scatter([x_cell.mean], [y], marker=marker, s=150, color=colour, edgecolor="black", linewidth=0.5,
                   zorder=7, label=f"ours: {line.spec['label']}")
        plotted += 1
    plotted += _published_points(report, ax, ref, avg, style)
    return _finish(fig, ax, report, plotted, f"{ref_label} top-1 (%)", "Avg top-1 over the shifts (%)", fallback, path)


def soups_figure(report: Report, path: str | Path) -> Path | None:
    from wiseft_lab.reporting.soup_report import METHODS

    ref, ref_label, shifts, avg = _axes(report)
    style = {m: (marker, colour, size) for m, _, marker, colour, size in METHODS}
    fig, ax = plt.subplots(figsize=(7.5, 6), constrained_layout=True)
    fallback = False
    plotted = 0
    ingredients = []
    for item in report.points.get("prepared", []):
        for row, values in item.rows:
            if row.get("model") == "ingredient":
                y, fell_back = _y(values, shifts, avg)
                if ref in values and y is not None:
                    ingredients.append((values[ref], y))
                    fallback |= fell_back
    if ingredients:
        ax.scatter(*zip(*ingredients, strict=True), marker="d", color="C2", s=50, alpha=0.6, zorder=3,
                   label="ours: ingredients")
        plotted += len(ingredients)
    for index, line in enumerate(report.lines):
        marker, colour, size = style.get(line.spec["key"], (MARKERS[index % len(MARKERS)],
                                                            COLOURS[index % len(COLOURS)], 150))
        x_cell = line.cells.get(ref)
        values = {k: c.mean for k, c in line.cells.items() if c.mean is not None}
        y, fell_back = _y(values, shifts, avg)
        if x_cell is not None and x_cell.mean is not None and y is not None:
            fallback |= fell_back
            ax.scatter([x_cell.mean], [y], marker=marker, color=colour, s=size, edgecolor="black", linewidth=0.6,
                       zorder=8, label=f"ours: {line.spec['label']}")
            plotted += 1
        published = line.published
        if published.get(ref) is not None and avg and published.get(avg) is not None:
            ax.scatter([published[ref]], [published[avg]], marker=marker, s=size, facecolors="none",
                       edgecolors=colour, linewidths=1.5, zorder=7, label=f"paper: {line.spec['label']}")
            plotted += 1
    return _finish(fig, ax, report, plotted, f"{ref_label} top-1 (%)", "Avg top-1 over five shifts (%)", fallback, path,
                   legend_columns=2)


def _finish(fig, ax, report: Report, plotted: int, xlabel: str, ylabel: str, fallback: bool, path: str | Path,
            legend_columns: int = 1) -> Path | None:
    """Label and save a scatter figure; ``None`` (and no file) when nothing could be plotted."""
    if not plotted:
        plt.close(fig)
        return None
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel + (" — ours: over the shifts evaluated" if fallback else ""))
    ax.set_title(report.spec.title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best", ncol=legend_columns)
    return save_figure(fig, path)


def b2n_figure(report: Report, path: str | Path) -> Path | None:
    """Harmonic mean per data set: ours (filled) and the paper's (hatched), per model."""
    models: Sequence[Mapping[str, Any]] = report.spec.data["models"]
    labels = [line.spec["label"] for line in report.lines]
    fig, ax = plt.subplots(figsize=(max(6, 0.8 * len(labels) * len(models)), 4.5), constrained_layout=True)
    width = 0.8 / (2 * len(models))
    plotted = 0
    for m_index, model in enumerate(models):
        key = f"{model['key']}/hm"
        ours = [line.cells[key].mean if key in line.cells else 0.0 for line in report.lines]
        theirs = [line.published.get(key) or 0.0 for line in report.lines]
        offset = (2 * m_index) * width - 0.4 + width / 2
        positions = [i + offset for i in range(len(labels))]
        colour = COLOURS[m_index % len(COLOURS)]
        ax.bar(positions, ours, width, color=colour, label=f"ours: {model['label']}")
        ax.bar([p + width for p in positions], theirs, width, color="white", edgecolor=colour, hatch="//",
               label=f"paper: {model['label']}")
        plotted += sum(1 for v in ours + theirs if v)
    if not plotted:
        plt.close(fig)
        return None
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("HM of base and novel top-1 (%)")
    ax.set_title(report.spec.title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    return save_figure(fig, path)
