"""Figures: the WiSE-FT curve (the reference's primary score vs. the average over the shifts), calibration (ECE)
against alpha."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from wiseft_lab.evaluation.calibration import TS_SUFFIX  # noqa: E402
from wiseft_lab.evaluation.suite import AVG_SHIFTS  # noqa: E402
from wiseft_lab.io import atomic_write_bytes  # noqa: E402
from wiseft_lab.reporting.tables import Row, score_key  # noqa: E402


def axis_metric(key: str | None) -> str:
    """An axis label's metric: ``top-1``, ``macro_f1`` ..., ``primary metric`` for a mixed average."""
    metric = key.split("/", 1)[1] if key else "top1"
    return {"top1": "top-1", "primary": "primary metric"}.get(metric, metric)


def save_figure(fig, path: str | Path, also: Sequence[str] = ()) -> Path:
    """``path`` as a PNG, plus the same figure in each format of ``also`` (e.g. ``["pdf"]``) beside it."""
    import io

    for fmt, target in (("png", Path(path)), *((f, Path(path).with_suffix(f".{f}")) for f in also)):
        buffer = io.BytesIO()
        fig.savefig(buffer, format=fmt, dpi=150, bbox_inches="tight")
        atomic_write_bytes(target, buffer.getvalue())
    plt.close(fig)
    return Path(path)


def wiseft_curve(rows: Sequence[Row], reference: str, path: str | Path, title: str = "WiSE-FT") -> Path:
    """One point per alpha, the endpoints marked, and the straight line between them for comparison."""
    sweep = sorted((r for r in rows if r["model"] == "wiseft"), key=lambda r: r["alpha"])
    x_key, y_key = (next((score_key(r, c) for r in rows if score_key(r, c)), None) for c in (reference, AVG_SHIFTS))
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    if sweep:
        xs = [100 * r[x_key] for r in sweep]
        ys = [100 * r[y_key] for r in sweep]
        ax.plot(xs, ys, "-o", color="tab:purple", ms=4, label="WiSE-FT (weight interpolation)", zorder=2)
        for r, x, y in zip(sweep, xs, ys, strict=True):
            ax.annotate(f"{r['alpha']:g}", (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7)
    ends = {m: next((r for r in rows if r["model"] == m), None) for m in ("zeroshot", "finetuned")}
    if all(ends.values()):
        ax.plot([100 * ends[m][x_key] for m in ends], [100 * ends[m][y_key] for m in ends], "--",
                color="gray", lw=1, label="linear interpolation of endpoints", zorder=1)
    for model, marker, color, label in (("zeroshot", "*", "tab:blue", "zero-shot"),
                                        ("finetuned", "D", "tab:orange", "fine-tuned")):
        if ends[model] is not None:
            ax.scatter([100 * ends[model][x_key]], [100 * ends[model][y_key]], marker=marker, s=140,
                       color=color, label=label, zorder=3, edgecolor="black", linewidth=0.5)
    ax.set_xlabel(f"{reference} (reference) {axis_metric(x_key)}, %")
    ax.set_ylabel(f"average {axis_metric(y_key)} over distribution shifts, %")
    ax.set_title(title)
    ax.grid(alpha=0.3)
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
