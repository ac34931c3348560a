"""The error landscape's figures: one contour plot per quantity over the plane, the three models marked
(model soups Fig. 2), as PNG and PDF."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from wiseft_lab.reporting.plots import save_figure  # noqa: E402

MARKERS = ("o", "s", "^")


def grid_values(rows: Sequence[Mapping[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(xs, ys, Z)`` with ``Z[j, i]`` the value at ``(xs[i], ys[j])`` (the grid's rows, any order)."""
    xs, ys = sorted({float(r["x"]) for r in rows}), sorted({float(r["y"]) for r in rows})
    z = np.full((len(ys), len(xs)), np.nan)
    for row in rows:
        z[ys.index(float(row["y"])), xs.index(float(row["x"]))] = float(row[key])
    return np.asarray(xs), np.asarray(ys), z


def contour_figure(rows: Sequence[Mapping[str, Any]], key: str, models: Sequence[tuple[str, tuple[float, float]]],
                   path: str | Path, title: str = "") -> Path:
    """Filled contours of ``key`` over the grid with each ``(name, (x, y))`` of ``models`` marked."""
    xs, ys, z = grid_values(rows, key)
    fig, ax = plt.subplots(figsize=(5.8, 4.8), constrained_layout=True)
    filled = ax.contourf(xs, ys, z, levels=20, cmap="viridis_r")
    ax.contour(xs, ys, z, levels=10, colors="white", linewidths=0.4, alpha=0.6)
    fig.colorbar(filled, ax=ax, label=key)
    for (name, (x, y)), marker in zip(models, MARKERS, strict=False):
        ax.scatter([x], [y], marker=marker, s=110, color="white", edgecolor="black", zorder=5)
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(7, 6), fontsize=8, color="black",
                    bbox={"boxstyle": "round,pad=0.2", "fc": "white", "alpha": 0.7, "lw": 0})
    ax.set_xlabel("x (along the first fine-tuning direction)")
    ax.set_ylabel("y (orthogonal, towards the second)")
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_title(title or key, fontsize=10)
    return save_figure(fig, path)
