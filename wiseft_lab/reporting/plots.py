"""Figures: the WiSE-FT curve (the reference's primary score vs. the average over the shifts), calibration (ECE)
against alpha."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from wiseft_lab.evaluation.calibration import TS_SUFFIX  # noqa: E402
from wiseft_lab.evaluation.suite import AVG_SHIFTS, score_key  # noqa: E402
from wiseft_lab.io import atomic_write_bytes  # noqa: E402
from wiseft_lab.reporting.tables import Row  # noqa: E402

FIGURE_FORMATS = ("png", "pdf")  # PNG to look at, PDF (vector) for papers
PNG_DPI = 200
LABEL_OFFSET_PT = 9.0  # alpha labels sit this far from their point, beside the curve, clear of the markers


def axis_metric(key: str | None) -> str:
    """An axis label's metric: ``top-1``, ``macro_f1`` ..., ``primary metric`` for a mixed average."""
    metric = key.split("/", 1)[1] if key else "top1"
    return {"top1": "top-1", "primary": "primary metric"}.get(metric, metric)


def save_figure(fig, path: str | Path) -> Path:
    """Write ``path`` (PNG) and the same figure as PDF beside it, each atomically; returns the PNG path."""
    import io

    path = Path(path)
    for fmt in FIGURE_FORMATS:
        buffer = io.BytesIO()
        fig.savefig(buffer, format=fmt, dpi=PNG_DPI, bbox_inches="tight")
        atomic_write_bytes(path.with_suffix(f".{fmt}"), buffer.getvalue())
    plt.close(fig)
    return path


def label_offsets(xs: Sequence[float], ys: Sequence[float], distance: float = LABEL_OFFSET_PT,
                  ) -> list[tuple[float, float]]:
    """Offsets (in points) that put each point's label outside the curve, perpendicular to it.

    Directions are computed on the axis-normalised curve (x and y scaled by their ranges), so a label moves away
    from the line whatever the units; "outside" is away from the points' centroid (WiSE-FT's curve bulges away
    from the straight line between its endpoints), and on a straight line the upper side.
    """
    span_x = (max(xs) - min(xs)) or 1.0
    span_y = (max(ys) - min(ys)) or 1.0
    points = [(x / span_x, y / span_y) for x, y in zip(xs, ys, strict=True)]
    cx, cy = sum(p[0] for p in points) / len(points), sum(p[1] for p in points) / len(points)
    offsets = []
    for i, (px, py) in enumerate(points):
        before, after = points[max(i - 1, 0)], points[min(i + 1, len(points) - 1)]
        tx, ty = after[0] - before[0], after[1] - before[1]
        norm = (tx * tx + ty * ty) ** 0.5
        nx, ny = (-ty / norm, tx / norm) if norm else (0.0, 1.0)
        outward = nx * (px - cx) + ny * (py - cy)
        if outward < -1e-9 or (abs(outward) <= 1e-9 and (ny < 0 or (ny == 0 and nx > 0))):
            nx, ny = -nx, -ny
        offsets.append((distance * nx, distance * ny))
    return offsets


def label_alphas(ax, sweep: Sequence[Row], xs: Sequence[float], ys: Sequence[float], skip: set[float]) -> None:
    """Alpha labels beside the curve; the alphas in ``skip`` are drawn as markers of their own (the endpoints)."""
    for row, x, y, (dx, dy) in zip(sweep, xs, ys, label_offsets(xs, ys), strict=True):
        if row["alpha"] in skip:
            continue
        ax.annotate(f"{row['alpha']:g}", (x, y), textcoords="offset points", xytext=(dx, dy), fontsize=7,
                    ha="center", va="center", color="tab:purple")


def wiseft_curve(rows: Sequence[Row], reference: str, path: str | Path, title: str = "WiSE-FT") -> Path:
    """One point per alpha, the endpoints marked, and the straight line between them for comparison."""
    sweep = sorted((r for r in rows if r["model"] == "wiseft"), key=lambda r: r["alpha"])
    x_key, y_key = (next((score_key(r, c) for r in rows if score_key(r, c)), None) for c in (reference, AVG_SHIFTS))
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    ends = {m: next((r for r in rows if r["model"] == m), None) for m in ("zeroshot", "finetuned")}
    if sweep:
        xs = [100 * r[x_key] for r in sweep]
        ys = [100 * r[y_key] for r in sweep]
        ax.plot(xs, ys, "-o", color="tab:purple", ms=4, label="WiSE-FT (weight interpolation)", zorder=2)
        marked = {alpha for alpha, model in ((0.0, "zeroshot"), (1.0, "finetuned")) if ends[model] is not None}
        label_alphas(ax, sweep, xs, ys, skip=marked)
    if all(ends.values()):
        ax.plot([100 * ends[m][x_key] for m in ends], [100 * ends[m][y_key] for m in ends], "--",
                color="gray", lw=1, label="linear interpolation of endpoints", zorder=1)
    for model, marker, color, label in (("zeroshot", "*", "tab:blue", "zero-shot (alpha=0)"),
                                        ("finetuned", "D", "tab:orange", "fine-tuned (alpha=1)")):
        if ends[model] is not None:
            ax.scatter([100 * ends[model][x_key]], [100 * ends[model][y_key]], marker=marker, s=140,
                       color=color, label=label, zorder=3, edgecolor="black", linewidth=0.5)
    ax.set_xlabel(f"{reference} (reference) {axis_metric(x_key)}, %")
    ax.set_ylabel(f"average {axis_metric(y_key)} over distribution shifts, %")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.margins(0.08)  # room for the labels at the ends
    ax.legend(fontsize=8, loc="best")
    return save_figure(fig, path)


def calibration_curve(rows: Sequence[Row], sets: Sequence[str], path: str | Path, metric: str = "ece",
                      title: str = "Calibration along the WiSE-FT path") -> Path:
    """``<set>/<metric>`` against alpha for every set; a second panel after temperature scaling when measured."""
    sweep = sorted((r for r in rows if r["model"] == "wiseft"), key=lambda r: r["alpha"])
    panels = [("", "as evaluated")] + ([(TS_SUFFIX, "after temperature scaling (held-out T)")]
                                       if any(f"{s}/{metric}{TS_SUFFIX}" in r for r in sweep for s in sets) else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), sharey=True, squeeze=False)
    for ax, (suffix, label) in zip(axes[0], panels, strict=True):
        for index, name in enumerate(sets):
            points = [(r["alpha"], 100 * r[f"{name}/{metric}{suffix}"]) for r in sweep
                      if f"{name}/{metric}{suffix}" in r]
            if points:
                ax.plot(*zip(*points, strict=True), "-o", ms=3, color=f"C{index}", label=name,
                        lw=2.2 if index == 0 else 1.2)
        ax.set_xlabel("alpha (0 = zero-shot, 1 = fine-tuned)")
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"{metric.upper()} (%, equal-mass bins)" if metric == "ece" else metric)
    axes[0][0].legend(fontsize=8, loc="best")
    fig.suptitle(title)
    return save_figure(fig, path)
