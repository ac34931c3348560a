"""Result rows and the summary table laid out like WiSE-FT's Table 1."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from wiseft_lab.evaluation.alpha_selection import SELECTION_MODEL
from wiseft_lab.evaluation.calibration import CALIBRATION_METRICS, TS_SUFFIX
from wiseft_lab.evaluation.holdout import TEMPERATURE
from wiseft_lab.evaluation.suite import AVG_SHIFTS, HOLDOUT, score_key

Row = Mapping[str, Any]
DECIMALS = 1  # every accuracy table (summary.md, soups.md) shows top-1 in % with this many decimals


def percent(value: float) -> str:
    """A fraction as a table's percentage: ``0.8384 -> "83.8"``."""
    return f"{100 * float(value):.{DECIMALS}f}"


def percent_cell(value: Any) -> str:
    return "-" if value is None else percent(value)


def result_row(model: str, alpha: float | None, metrics: Mapping[str, float], **extra: Any) -> dict[str, Any]:
    """One ``results.jsonl`` row: ``model``, ``alpha``, every ``<set>/<metric>`` in the evaluation's order (a
    set's primary metric first), ``avg_shifts/<metric>``, ``n/<set>``, then ``extra``.

    Every score column an evaluation returns is kept, so new metrics (calibration, ...) need no change here;
    the reports find a column's primary score as its first ``<column>/`` key (:func:`score_key`).
    """
    scores = {k: v for k, v in metrics.items() if not k.startswith((f"{AVG_SHIFTS}/", "n/"))}
    average = {k: v for k, v in metrics.items() if k.startswith(f"{AVG_SHIFTS}/")}
    sizes = {k: v for k, v in metrics.items() if k.startswith("n/")}
    return {"model": model, "alpha": alpha, **scores, **average, **sizes, **extra}


def scores(row: Row) -> dict[str, Any]:
    """Every ``<column>/<metric>`` of ``row`` (the averages included, the ``n/<set>`` sizes not)."""
    return {k: v for k, v in row.items() if "/" in k and not k.startswith("n/")}


def score(row: Row, column: str) -> float | None:
    """``column``'s primary score in ``row`` (top-1, macro F1, worst-region accuracy, pm-k ...), or None."""
    key = score_key(row, column)
    return None if key is None or row[key] is None else float(row[key])


def metric_name(rows: Sequence[Row], column: str) -> str | None:
    """The metric of ``column``'s primary score in the first row that has it (``top1``, ``macro_f1`` ...)."""
    key = next((k for k in (score_key(r, column) for r in rows) if k is not None), None)
    return None if key is None else key[len(column) + 1:]


def column_label(rows: Sequence[Row], column: str, reference: str) -> str:
    """A table header: ``<set> (ref)``, ``avg shifts``, and the metric in brackets where it is not top-1."""
    metric = metric_name(rows, column)
    label = "avg shifts" if column == AVG_SHIFTS else f"{column} (ref)" if column == reference else column
    return label if metric in (None, "top1") else f"{label} [{metric}]"


def calibration_columns(metrics: Mapping[str, float]) -> dict[str, float]:
    """The calibration columns of a row (``<set>/ece``, ``/nll``, ``/brier``, their ``_ts`` twins, ``temperature``)."""
    return {k: v for k, v in metrics.items()
            if k == TEMPERATURE or k.rsplit("/", 1)[-1].removesuffix(TS_SUFFIX) in CALIBRATION_METRICS}


def columns(reference: str, shifts: Sequence[str]) -> list[str]:
    return [reference, *shifts] + ([AVG_SHIFTS] if shifts else [])


def _find(rows: Sequence[Row], model: str, alpha: float | None = None) -> Row | None:
    for row in rows:
        if row["model"] == model and (alpha is None or abs(float(row["alpha"]) - alpha) < 1e-9):
            return row
    return None


def table1_rows(rows: Sequence[Row], reference: str, shifts: Sequence[str]) -> list[tuple[str, dict]]:
    """(label, {column: primary score in %}) for zero-shot, fine-tuned, WiSE-FT alpha=0.5 and optimal alpha.

    "Optimal alpha" follows the paper: every column (the average included) takes its own best alpha,
    an oracle upper bound; the alpha chosen per column is reported beside it.
    """
    cols = columns(reference, shifts)
    wiseft = [r for r in rows if r["model"] == "wiseft"]
    out: list[tuple[str, dict]] = []
    for label, row in (("zero-shot", _find(rows, "zeroshot")), ("fine-tuned", _find(rows, "finetuned")),
                       ("WiSE-FT, alpha=0.5", _find(wiseft, "wiseft", 0.5))):
        if row is not None:
            out.append((label, {c: 100 * score(row, c) for c in cols if score(row, c) is not None}))
    if wiseft:
        best: dict = {}
        for c in cols:
            top = max(wiseft, key=lambda r, c=c: -math.inf if score(r, c) is None else score(r, c))
            if score(top, c) is not None:
                best[c] = 100 * score(top, c)
                best[f"alpha:{c}"] = top["alpha"]
        out.append(("WiSE-FT, optimal alpha", best))
    return out


def markdown_table(header: Sequence[str], body: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in body]
    return "\n".join(lines) + "\n"


def summary_markdown(rows: Sequence[Row], reference: str, shifts: Sequence[str], title: str = "") -> str:
    """``summary.md``: Table-1 layout, then the full alpha sweep."""
    cols = columns(reference, shifts)
    header = ["", *[column_label(rows, c, reference) for c in cols]]
    body = []
    for label, values in table1_rows(rows, reference, shifts):
        cells = []
        for c in cols:
            if c not in values:
                cells.append("-")
            elif f"alpha:{c}" in values:
                cells.append(f"{percent(values[c] / 100)} (α={values[f'alpha:{c}']:g})")
            else:
                cells.append(percent(values[c] / 100))
        body.append([label, *cells])
    text = (f"# {title}\n\n" if title else "") + f"{score_note(rows, cols)}\n\n" + markdown_table(header, body)
    sweep = [r for r in rows if r["model"] == "wiseft"]
    if sweep:
        text += "\n## WiSE-FT sweep\n\n" + markdown_table(
            ["alpha", *[column_label(rows, c, reference) for c in cols]],
            [[f"{r['alpha']:g}", *[percent_cell(score(r, c)) for c in cols]]
             for r in sorted(sweep, key=lambda r: r["alpha"])])
    text += ("\n*Optimal alpha*: each column takes its own best alpha (an oracle, as in the paper's Table 1).\n"
             if sweep else "")
    return text + alpha_selection_markdown(rows, reference) + other_models_markdown(rows, cols)


def alpha_selection_markdown(rows: Sequence[Row], reference: str) -> str:
    """``merge.select_alpha``'s choices beside the oracle, with what each costs on the shifts."""
    chosen = [r for r in rows if r["model"] == SELECTION_MODEL]
    if not chosen:
        return ""
    # the shifts' average the oracle maximised: avg_shifts/top1, or the suite's primary average (macro F1, pm-k ...)
    regret = next((k for r in chosen for k in r if k.startswith(f"regret/{AVG_SHIFTS}/")), f"regret/{AVG_SHIFTS}/top1")

    def pct(row: Row, key: str) -> str:
        return percent_cell(row.get(key))

    body = [[f"`{r['rule']}`", "-" if r["alpha"] is None else f"{r['alpha']:g}", pct(r, f"{HOLDOUT}/top1"),
             percent_cell(score(r, reference)), percent_cell(score(r, AVG_SHIFTS)), pct(r, regret),
             r.get("skipped", "")] for r in chosen]
    header = ["rule", "alpha", "held-out", column_label(chosen, reference, reference),
              column_label(chosen, AVG_SHIFTS, reference), "regret (points)", "note"]
    return ("\n## Choosing alpha without the shifts\n\n" + markdown_table(header, body)
            + "\nThe oracle reads the shifts' test labels (the paper's optimal alpha); every other rule reads only the "
              "held-out split. Regret: the oracle's average over the shifts minus the rule's.\n")


def _row_label(row: Row) -> str:
    return f"{row['model']} `{row['ingredient']}`" if row.get("ingredient") else str(row["model"])


def other_models_markdown(rows: Sequence[Row], cols: Sequence[str]) -> str:
    """The rows that are neither an endpoint nor the WiSE-FT sweep (Model Stock, soups, ingredients, ...)."""
    others = [r for r in rows if r["model"] not in ("zeroshot", "finetuned", "wiseft", SELECTION_MODEL)]
    if not others:
        return ""
    return "\n## Other models\n\n" + markdown_table(
        ["model", *cols], [[_row_label(r), *[percent_cell(score(r, c)) for c in cols]] for r in others])


def score_note(rows: Sequence[Row], cols: Sequence[str]) -> str:
    """The sentence above a table: which metric its numbers are."""
    metrics = {metric_name(rows, c) for c in cols} - {None}
    if metrics <= {"top1"}:
        return "Top-1 accuracy (%)."
    return ("Scores (%): top-1 unless a column names its metric in brackets (each set's primary metric; "
            "avg shifts = the mean of the shifts' primary metrics).")


def summary_metrics(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """W&B summary: every endpoint's scores and the best alpha by the average over the shifts."""
    out: dict[str, Any] = {}
    for row in rows:
        if row["model"] not in ("wiseft", "ingredient"):  # per-ingredient metrics are a table (loggers.py)
            name = row["model"] if row.get("rule") is None else f"{row['model']}:{row['rule']}"
            out.update({f"{name}/{k}": v for k, v in scores(row).items()})
            if row.get("rule") is not None:
                out[f"{name}/alpha"] = row["alpha"]
    sweep = [r for r in rows if r["model"] == "wiseft" and score(r, AVG_SHIFTS) is not None]
    if sweep:
        best = max(sweep, key=lambda r: score(r, AVG_SHIFTS))
        out["wiseft_best/alpha"] = best["alpha"]
        out.update({f"wiseft_best/{k}": v for k, v in scores(best).items()})
    return out
