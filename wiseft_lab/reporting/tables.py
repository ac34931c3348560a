"""Result rows and the summary table laid out like WiSE-FT's Table 1."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from wiseft_lab.evaluation.suite import AVG_SHIFTS

Row = Mapping[str, Any]
DECIMALS = 1  # every accuracy table (summary.md, soups.md) shows top-1 in % with this many decimals


def percent(value: float) -> str:
    """A fraction as a table's percentage: ``0.8384 -> "83.8"``."""
    return f"{100 * float(value):.{DECIMALS}f}"


def percent_cell(value: Any) -> str:
    return "-" if value is None else percent(value)


def result_row(model: str, alpha: float | None, metrics: Mapping[str, float], **extra: Any) -> dict[str, Any]:
    """One ``results.jsonl`` row: ``model``, ``alpha``, then ``<set>/top1``, ``avg_shifts/top1``, ``n/<set>``."""
    ordered = {k: v for k, v in metrics.items() if k.endswith("/top1") and not k.startswith(AVG_SHIFTS)}
    if f"{AVG_SHIFTS}/top1" in metrics:
        ordered[f"{AVG_SHIFTS}/top1"] = metrics[f"{AVG_SHIFTS}/top1"]
    ordered.update({k: v for k, v in metrics.items() if k.startswith("n/")})
    return {"model": model, "alpha": alpha, **ordered, **extra}


def columns(reference: str, shifts: Sequence[str]) -> list[str]:
    return [reference, *shifts] + ([AVG_SHIFTS] if shifts else [])


def _find(rows: Sequence[Row], model: str, alpha: float | None = None) -> Row | None:
    for row in rows:
        if row["model"] == model and (alpha is None or abs(float(row["alpha"]) - alpha) < 1e-9):
            return row
    return None


def table1_rows(rows: Sequence[Row], reference: str, shifts: Sequence[str]) -> list[tuple[str, dict]]:
    """(label, {column: accuracy in %}) for zero-shot, fine-tuned, WiSE-FT alpha=0.5 and optimal alpha.

    "Optimal alpha" follows the paper: every column (the average included) takes its own best alpha,
    an oracle upper bound; the alpha chosen per column is reported beside it.
    """
    cols = columns(reference, shifts)
    wiseft = [r for r in rows if r["model"] == "wiseft"]
    out: list[tuple[str, dict]] = []
    for label, row in (("zero-shot", _find(rows, "zeroshot")), ("fine-tuned", _find(rows, "finetuned")),
                       ("WiSE-FT, alpha=0.5", _find(wiseft, "wiseft", 0.5))):
        if row is not None:
            out.append((label, {c: 100 * row[f"{c}/top1"] for c in cols if f"{c}/top1" in row}))
    if wiseft:
        best: dict = {}
        for c in cols:
            top = max(wiseft, key=lambda r, c=c: r.get(f"{c}/top1", float("-inf")))
            if f"{c}/top1" in top:
                best[c] = 100 * top[f"{c}/top1"]
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
    header = ["", *[f"{c} (ref)" if c == reference else ("avg shifts" if c == AVG_SHIFTS else c) for c in cols]]
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
    text = (f"# {title}\n\n" if title else "") + "Top-1 accuracy (%).\n\n" + markdown_table(header, body)
    sweep = [r for r in rows if r["model"] == "wiseft"]
    if sweep:
        text += "\n## WiSE-FT sweep\n\n" + markdown_table(
            ["alpha", *cols],
            [[f"{r['alpha']:g}", *[percent_cell(r.get(f"{c}/top1")) for c in cols]]
             for r in sorted(sweep, key=lambda r: r["alpha"])])
    text += ("\n*Optimal alpha*: each column takes its own best alpha (an oracle, as in the paper's Table 1).\n"
             if sweep else "")
    return text


def summary_metrics(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """W&B summary: every endpoint's metrics and the best alpha by average shift accuracy."""
    out: dict[str, Any] = {}
    for row in rows:
        if row["model"] not in ("wiseft", "ingredient"):  # per-ingredient metrics are a table (loggers.py)
            out.update({f"{row['model']}/{k}": v for k, v in row.items() if k.endswith("/top1")})
    sweep = [r for r in rows if r["model"] == "wiseft" and f"{AVG_SHIFTS}/top1" in r]
    if sweep:
        best = max(sweep, key=lambda r: r[f"{AVG_SHIFTS}/top1"])
        out["wiseft_best/alpha"] = best["alpha"]
        out.update({f"wiseft_best/{k}": v for k, v in best.items() if k.endswith("/top1")})
    return out
