"""The soup report: ``soups.md`` (the model-soups paper's table), ``soups.csv`` and ``soups.png`` (its figure).

Written by the runner's report step when the run made soups (``<run>/soups/soups.json`` exists): one row per
soup and baseline with the number of ingredients, the held-out, reference and shift accuracies, and a scatter
of every ingredient (reference vs. average shift accuracy) with the soups and the ensemble marked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from wiseft_lab.evaluation.suite import AVG_SHIFTS, HOLDOUT, score_key  # noqa: E402
from wiseft_lab.io import atomic_write_text, read_json, write_csv  # noqa: E402
from wiseft_lab.merging.soups import PAIR_MODEL  # noqa: E402
from wiseft_lab.reporting.plots import axis_metric, label_alphas, save_figure  # noqa: E402
from wiseft_lab.reporting.tables import (  # noqa: E402
    column_label,
    markdown_table,
    percent_cell,
    score,
    score_note,
)
from wiseft_lab.weight_space.landscape import interpolation_advantage  # noqa: E402

HOLDOUT_TOP1 = f"{HOLDOUT}/top1"
# (results.jsonl model, table label, marker, colour, size) in the paper's order
METHODS = (
    ("zeroshot", "Zero-shot (initialization)", "h", "slategray", 110),
    ("best_individual", "Best individual model", "D", "tab:green", 90),
    ("uniform_soup", "Uniform soup", "o", "C0", 110),
    ("greedy_soup", "Greedy soup", "*", "C4", 220),
    ("learned_soup", "Learned soup", "^", "C1", 110),
    ("learned_soup_per_layer", "Learned soup (per layer)", "v", "C3", 110),
    ("fisher_soup", "Fisher merging", "P", "C5", 110),
    ("ensemble", "Ensemble (mean logits)", "X", "black", 110),
)
SHORT = {"zeroshot": "zero-shot", "best_individual": "best", "uniform_soup": "uniform", "greedy_soup": "greedy",
         "learned_soup": "learned", "learned_soup_per_layer": "learned/layer", "fisher_soup": "Fisher",
         "ensemble": "ensemble"}
LABELS = {m: label for m, label, *_ in METHODS}


def method_rows(rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, Mapping[str, Any]]]:
    """``(method key, result row)`` for each table row present, in the paper's order."""
    out = []
    for method, *_ in METHODS:
        if method == "best_individual":
            row = next((r for r in rows if r["model"] == "ingredient" and r.get("best_individual")), None)
        else:
            row = next((r for r in rows if r["model"] == method), None)
        if row is not None:
            out.append((method, row))
    return out


def soups_markdown(rows: Sequence[Mapping[str, Any]], reference: str, shifts: Sequence[str],
                   summary: Mapping[str, Any], title: str = "") -> str:
    cols = [reference, *shifts] + ([AVG_SHIFTS] if shifts else [])
    header = ["Method", "Ingredients", "Held-out",
              *[column_label(rows, c, reference) for c in cols]]
    body = [[LABELS[m], row.get("n_ingredients", "-"), percent_cell(row.get(HOLDOUT_TOP1)),
             *[percent_cell(score(row, c)) for c in cols]] for m, row in method_rows(rows)]
    pool = summary.get("ingredients", [])
    text = (f"# Model soups: {title}\n\n" if title else "# Model soups\n\n")
    text += (f"Pool: {len(pool)} ingredients from `{summary.get('pool_spec')}`"
             + (f", {len(summary['skipped'])} skipped" if summary.get("skipped") else "")
             + f". {score_note(rows, cols)} Held-out: the split carved from the training set "
             "(`data.holdout_fraction`).\n\n")
    text += markdown_table(header, body)

    greedy = summary.get("greedy")
    if greedy:
        text += (f"\n## Greedy soup\n\n{len(greedy['ingredients'])} of {len(pool)} ingredients accepted "
                 f"(rule: `{greedy['accept']}`): {', '.join(f'`{n}`' for n in greedy['ingredients'])}. "
                 f"Trace: `soups/greedy_trace.jsonl`.\n")
    learned = summary.get("learned_soup") or {}
    if "coefficients" in learned:
        text += "\n## Learned soup coefficients\n\n" + markdown_table(
            ["Ingredient", "alpha"], [[f"`{n}`", f"{a:.4f}"] for n, a in learned["coefficients"].items()])
        text += f"\nLogit temperature beta = {learned['beta']:.4f}.\n"

    by_name = {r.get("ingredient"): r for r in rows if r["model"] == "ingredient"}
    accepted = set((greedy or {}).get("ingredients", []))
    ingredient_rows = []
    for item in pool:
        row = by_name.get(item["name"], {})
        scored = (reference, AVG_SHIFTS if shifts else reference)
        ingredient_rows.append([f"`{item['name']}`", item.get("label") or "", percent_cell(item.get(HOLDOUT_TOP1)),
                                *[percent_cell(score(row, c)) for c in scored],
                                "yes" if item["name"] in accepted else ""])
    if ingredient_rows:
        text += "\n## Ingredients\n\n" + markdown_table(
            ["Ingredient", "Overrides", "Held-out", f"{reference} (ref)", "Avg shifts" if shifts else reference,
             "In greedy soup"], ingredient_rows)
    angles = angle_rows(rows, reference, shifts)
    if angles:
        gains = [k for k in angles[0] if k.startswith("gain/")]
        text += ("\n## Angles between fine-tuning deltas\n\nEvery pair of ingredients: the angle between their "
                 "deltas from the zero-shot model, and the accuracy of their average minus the mean of their "
                 "accuracies (points; model soups Fig. 3).\n\n" + markdown_table(
                     ["Pair", "Angle (deg)", *[f"Gain {k.split('/')[1]}" for k in gains]],
                     [[f"`{r['pair']}`", f"{r['angle']:.2f}", *[percent_cell(r.get(k)) for k in gains]]
                     for r in angles]))
    if summary.get("skipped"):
        text += "\n## Skipped\n\n" + "".join(f"- `{s['source']}`: {s['reason']}\n" for s in summary["skipped"])
    return text


def angle_rows(rows: Sequence[Mapping[str, Any]], reference: str, shifts: Sequence[str]) -> list[dict[str, Any]]:
    """Per evaluated pair average: the angle and ``gain/<col>/top1`` = its accuracy minus the mean of its two
    ingredients' (model soups Fig. 3's interpolation advantage), for the reference and the shifts' average."""
    by_name = {r.get("ingredient"): r for r in rows if r["model"] == "ingredient"}
    out = []
    for row in (r for r in rows if r["model"] == PAIR_MODEL):
        first, second = (by_name.get(name, {}) for name in row["pair"])
        record: dict[str, Any] = {"pair": " + ".join(row["pair"]), "angle": row["angle"]}
        for key in (f"{c}/top1" for c in [reference, *([AVG_SHIFTS] if shifts else [])]):
            if key in row and key in first and key in second:
                record[f"gain/{key}"] = interpolation_advantage(row[key], first[key], second[key])
        out.append(record)
    return out


def angles_figure(angles: Sequence[Mapping[str, Any]], path: str | Path, title: str = "") -> Path:
    """Gain of each pair's average over its endpoints against the angle between their deltas (model soups Fig. 3)."""
    fig, ax = plt.subplots(figsize=(5.5, 4.2), constrained_layout=True)
    for index, key in enumerate(k for k in angles[0] if k.startswith("gain/")):
        points = [(r["angle"], 100 * r[key]) for r in angles if key in r]
        ax.scatter(*zip(*points, strict=True), color=f"C{index}", s=50, label=key.split("/")[1], edgecolor="black",
                   linewidth=0.4)
    ax.axhline(0, color="gray", lw=0.8)
    ax.set_xlabel("angle between the fine-tuning deltas (degrees)")
    ax.set_ylabel("accuracy of the average - mean of the two (points)")
    ax.set_title(title or "Interpolation advantage vs. angle", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def soups_csv_rows(rows: Sequence[Mapping[str, Any]], reference: str, shifts: Sequence[str],
                   summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The table's rows, then every ingredient (fractions, as in results.csv)."""
    cols = [reference, *shifts] + ([AVG_SHIFTS] if shifts else [])
    labels = {i["name"]: i.get("label") or "" for i in summary.get("ingredients", [])}

    def flat(method: str, row: Mapping[str, Any], ingredient: str | None = None) -> dict[str, Any]:
        return {"method": method, "ingredient": ingredient or "", "overrides": labels.get(ingredient, ""),
                "n_ingredients": row.get("n_ingredients"), HOLDOUT_TOP1: row.get(HOLDOUT_TOP1),
                **{key: row.get(key) for key in (score_key(row, c) for c in cols) if key is not None}}

    out = [flat(m, row, row.get("ingredient") if m == "best_individual" else None) for m, row in method_rows(rows)]
    out += [flat("ingredient", r, r.get("ingredient")) for r in rows if r["model"] == "ingredient"]
    return out


def soups_figure(rows: Sequence[Mapping[str, Any]], reference: str, path: str | Path, title: str = "") -> Path:
    """Every ingredient as a point, the soups and the ensemble marked, the WiSE-FT curve of the best if any."""
    x_key, y_key = (next((score_key(r, c) for r in rows if score_key(r, c)), None) for c in (reference, AVG_SHIFTS))

    def xy(row: Mapping[str, Any]) -> tuple[float, float]:
        return 100 * row[x_key], 100 * row[y_key]

    fig, ax = plt.subplots(figsize=(8, 6), constrained_layout=True)
    ingredients = [r for r in rows if r["model"] == "ingredient" and x_key in r and y_key in r]
    if ingredients:
        xs, ys = zip(*(xy(r) for r in ingredients), strict=True)
        ax.scatter(xs, ys, marker="d", color="C2", s=45, alpha=0.6, label="Ingredients (fine-tuned models)",
                   zorder=5, edgecolor="none")
        for row, x, y in zip(ingredients, xs, ys, strict=True):
            ax.annotate(str(row.get("ingredient", "")), (x, y), textcoords="offset points", xytext=(0, -9),
                        fontsize=6, ha="center", va="top", color="tab:green")
    sweep = sorted((r for r in rows if r["model"] == "wiseft" and x_key in r), key=lambda r: r["alpha"])
    if sweep:
        xs, ys = zip(*(xy(r) for r in sweep), strict=True)
        ax.plot(xs, ys, "-o", color="tab:purple", ms=3, lw=1.2, label="WiSE-FT of the best ingredient", zorder=4)
        label_alphas(ax, sweep, xs, ys, skip={0.0, 1.0})  # alpha 0 and 1 are the zero-shot and best markers
    for method, row in method_rows(rows):
        if x_key not in row or y_key not in row:
            continue
        _, label, marker, colour, size = next(m for m in METHODS if m[0] == method)
        ax.scatter(*xy(row), marker=marker, color=colour, s=size, label=label, zorder=10, edgecolor="black",
                   linewidth=0.6, alpha=0.9)
        ax.annotate(SHORT[method], xy(row), textcoords="offset points", xytext=(8, 6), fontsize=8, color=colour,
                    zorder=11)
    ax.margins(0.1)
    ax.set_xlabel(f"{reference} ({axis_metric(x_key)}, %)", fontsize=13)
    ax.set_ylabel(f"Avg. {axis_metric(y_key)} on distribution shifts (%)", fontsize=13)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.4)
    ax.legend(fontsize=9, loc="best")
    return save_figure(fig, path)


def soup_report(rows: Sequence[Mapping[str, Any]], reference: str, shifts: Sequence[str], run_dir: str | Path,
                logger=None, title: str = "") -> dict[str, Any]:
    """Write ``soups.md``/``soups.csv``/``soups.png`` and log them; ``{}`` when the run made no soups."""
    run_dir = Path(run_dir)
    summary_path = run_dir / "soups" / "soups.json"
    if not summary_path.is_file() or not rows:
        return {}
    summary = read_json(summary_path)
    table = run_dir / "soups.md"
    atomic_write_text(table, soups_markdown(rows, reference, shifts, summary, title))
    csv_rows = soups_csv_rows(rows, reference, shifts, summary)
    write_csv(run_dir / "soups.csv", csv_rows)
    outputs: dict[str, Any] = {"summary": table, "soups_table": table, "soups_csv": run_dir / "soups.csv"}
    angles = angle_rows(rows, reference, shifts)
    if any(k.startswith("gain/") for r in angles for k in r):
        outputs["angles_plot"] = angles_figure(angles, run_dir / "soups_angles.png")
        write_csv(run_dir / "soups_angles.csv", angles)
    if shifts:
        outputs["plot"] = outputs["soups_plot"] = soups_figure(
            rows, reference, run_dir / "soups.png", title=f"Model soups: {title}" if title else "Model soups")
    if logger is not None:
        log_soups(logger, summary, csv_rows, outputs.get("soups_plot"))
    return outputs


def log_soups(logger, summary: Mapping[str, Any], table: Sequence[Mapping[str, Any]], plot: Path | None) -> None:
    """W&B: the table, the figure, the pool with each ingredient's source run, the accepted ingredients."""
    accepted = (summary.get("greedy") or {}).get("ingredients", [])
    pool = [{**{k: v for k, v in item.items() if k != "overrides"}, "overrides": " ".join(item.get("overrides", [])),
             "in_greedy_soup": item["name"] in accepted} for item in summary.get("ingredients", [])]
    logger.log_table("soups_table", table)
    logger.log_table("soups_pool_table", pool)
    if plot is not None:
        logger.log_image("soups_png", plot)
    record: dict[str, Any] = {
        "soups/pool": str(summary.get("pool_spec")),
        "soups/ingredients": [i["name"] for i in summary.get("ingredients", [])],
        "soups/skipped": [f"{s['source']}: {s['reason']}" for s in summary.get("skipped", [])],
        "soups/source_runs": [i.get("wandb_run_id") for i in summary.get("ingredients", [])],
        "soups/source_group": summary.get("wandb_group"),
        "soups/best_individual": summary.get("best_individual"),
    }
    if accepted:
        record["greedy_soup/ingredients"] = accepted
    for row in table:
        if row["method"] != "ingredient":
            record.update({f"{row['method']}/{k}": v for k, v in row.items() if "/" in k and v is not None})
            record[f"{row['method']}/n_ingredients"] = row["n_ingredients"]
    logger.summary(record)
