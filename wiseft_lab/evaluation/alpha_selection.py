"""Choosing WiSE-FT's mixing coefficient alpha from in-distribution data only, reported beside the oracle.

WiSE-FT (Wortsman et al., CVPR 2022, arXiv:2109.01903v3, Sec. 4 and App. B) recommends alpha = 0.5 "when no domain
knowledge is available" and leaves "finding the optimal value of the mixing coefficient for any distribution" to
future work; its "optimal alpha" picks, per column, the alpha that maximises that column: an oracle that looks at
the shifted test sets. The rules here read only the held-out (in-distribution) columns of a sweep's result rows:

* :func:`fixed_alpha` (0.5): the paper's recommendation.
* :func:`best_holdout`: the alpha of highest held-out accuracy, i.e. model selection on a validation split of the
  training distribution ("training-domain validation", Gulrajani & Lopez-Paz, ICLR 2021).
* :func:`largest_within_tolerance` / :func:`smallest_within_tolerance`: the largest (smallest) alpha whose held-out
  accuracy is within ``tol`` of the best. The smallest one leans towards the zero-shot model, which the WiSE-FT
  curves show to be the robust side.
* :func:`one_standard_error`: :func:`smallest_within_tolerance` with ``tol`` the binomial standard error
  ``sqrt(p (1 - p) / n)`` of the best held-out accuracy: the one-standard-error rule (Breiman et al. 1984; Hastie,
  Tibshirani & Friedman, *Elements of Statistical Learning*, 2nd ed., Sec. 7.10), taking the least fine-tuned model as
  the most parsimonious one.
* :func:`min_holdout_loss`: the alpha of lowest held-out NLL; for two models this is a learned soup's objective (the
  held-out cross-entropy over the mixing coefficients, model soups Sec. 3 / ``learned_bylayer.py``) restricted to the
  sweep's grid (and without the learned soup's temperature).

Rows are a sweep's result rows, e.g. ``{"model": "wiseft", "alpha": 0.3, "holdout/top1": 0.81, "n/holdout": 500,
"photo/top1": ..., "avg_shifts/top1": ...}``; accuracies (and ``tol``) in the rows' units. Ties (equal scores) go
to the smaller alpha, the zero-shot side.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

from wiseft_lab.evaluation.suite import AVG_SHIFTS, HOLDOUT, score_key

Row = Mapping[str, Any]
Rule = Callable[[Sequence[Row]], Row]

HOLDOUT_TOP1 = f"{HOLDOUT}/top1"
HOLDOUT_NLL = f"{HOLDOUT}/nll"
HOLDOUT_SIZE = f"n/{HOLDOUT}"
SHIFTS_TOP1 = f"{AVG_SHIFTS}/top1"


class NotApplicable(ValueError):
    """A rule cannot be applied to these rows: a column (or the alpha it fixes) is missing."""


def sweep_rows(rows: Sequence[Row], model: str | None = "wiseft") -> list[Row]:
    """The rows of one sweep (``model``; None: every row with an alpha), by increasing alpha; one row per alpha."""
    selected = sorted((r for r in rows if r.get("alpha") is not None and (model is None or r.get("model") == model)),
                      key=lambda r: float(r["alpha"]))
    if not selected:
        raise ValueError(f"No {model or 'alpha'} rows in the sweep")
    alphas = [float(r["alpha"]) for r in selected]
    if len(set(alphas)) != len(alphas):
        raise ValueError(f"Several rows share an alpha: {alphas}")
    return selected


def _column(rows: Sequence[Row], metric: str) -> list[float]:
    missing = [r["alpha"] for r in rows if r.get(metric) is None]
    if missing:
        raise NotApplicable(f"{metric!r} is missing for alpha {missing[:4]}")
    return [float(r[metric]) for r in rows]


def _argbest(rows: Sequence[Row], metric: str, *, lower: bool = False) -> Row:
    """The row with the best ``metric`` (highest, or lowest when ``lower``); ties: the smallest alpha."""
    ordered = sweep_rows(rows, model=None)
    values = _column(ordered, metric)
    best = min(values) if lower else max(values)
    return ordered[values.index(best)]


def fixed_alpha(rows: Sequence[Row], alpha: float = 0.5) -> Row:
    """WiSE-FT's default: the row at ``alpha`` (0.5), which must be in the sweep."""
    for row in sweep_rows(rows, model=None):
        if math.isclose(float(row["alpha"]), alpha, abs_tol=1e-9):
            return row
    raise NotApplicable(f"alpha={alpha} is not in the sweep")


def best_holdout(rows: Sequence[Row], metric: str = HOLDOUT_TOP1) -> Row:
    return _argbest(rows, metric)


def min_holdout_loss(rows: Sequence[Row], metric: str = HOLDOUT_NLL) -> Row:
    return _argbest(rows, metric, lower=True)


def _within_tolerance(rows: Sequence[Row], tol: float, metric: str, largest: bool) -> Row:
    if tol < 0:
        raise ValueError(f"The tolerance must be non-negative, got {tol}")
    ordered = sweep_rows(rows, model=None)
    values = _column(ordered, metric)
    close = [row for row, value in zip(ordered, values, strict=True) if value >= max(values) - tol]
    return close[-1] if largest else close[0]


def largest_within_tolerance(rows: Sequence[Row], tol: float, metric: str = HOLDOUT_TOP1) -> Row:
    """The largest alpha whose held-out accuracy is at least ``best - tol``."""
    return _within_tolerance(rows, tol, metric, largest=True)


def smallest_within_tolerance(rows: Sequence[Row], tol: float, metric: str = HOLDOUT_TOP1) -> Row:
    """The smallest alpha (nearest the zero-shot model) whose held-out accuracy is at least ``best - tol``."""
    return _within_tolerance(rows, tol, metric, largest=False)


def one_standard_error(rows: Sequence[Row], metric: str = HOLDOUT_TOP1, size: str = HOLDOUT_SIZE) -> Row:
    """:func:`smallest_within_tolerance` with ``tol = sqrt(p (1 - p) / n)``, p the best accuracy (a fraction in
    [0, 1]) and n the held-out size (``size`` column of the best row)."""
    best = best_holdout(rows, metric)
    if best.get(size) is None:
        raise NotApplicable(f"{size!r} (the held-out size) is missing")
    p, n = float(best[metric]), int(best[size])
    return smallest_within_tolerance(rows, math.sqrt(p * (1.0 - p) / n), metric)


def oracle(rows: Sequence[Row], metric: str = SHIFTS_TOP1) -> Row:
    """The alpha that maximises the shifts' average: what WiSE-FT's "optimal alpha" reports (it reads the tests)."""
    return _argbest(rows, metric)


def default_rules(tolerance: float = 0.005) -> dict[str, Rule]:
    """The in-distribution rules, by name (``tolerance`` in accuracy units: 0.005 is half a point)."""
    return {"alpha_0.5": fixed_alpha, "best_holdout": best_holdout,
            f"largest_within_{tolerance:g}": partial(largest_within_tolerance, tol=tolerance),
            f"smallest_within_{tolerance:g}": partial(smallest_within_tolerance, tol=tolerance),
            "one_standard_error": one_standard_error, "min_holdout_nll": min_holdout_loss}


def compare_rules(rows: Sequence[Row], rules: Mapping[str, Rule] | None = None, *, model: str | None = "wiseft",
                  reference: str | None = None, metric: str | None = None) -> list[dict[str, Any]]:
    """One record per rule: the alpha it picks, that row's held-out / reference / shift scores, and its cost on
    the shifts against the oracle (``regret = oracle - chosen``, >= 0). The oracle's own record comes first. A rule
    whose columns the rows lack is reported with ``alpha: None`` and the reason.

    ``metric``: the shifts' average the oracle maximises; default: the sweep's ``avg_shifts/<metric>`` key
    (``avg_shifts/top1``, or e.g. ``avg_shifts/macro_f1`` for a suite scored by other metrics). The reference
    column is the reference set's primary score."""
    sweep = sweep_rows(rows, model)
    metric = metric or score_key(sweep[0], AVG_SHIFTS) or SHIFTS_TOP1
    best = oracle(sweep, metric)
    reference_key = (score_key(sweep[0], reference) or f"{reference}/top1") if reference else None
    columns = [HOLDOUT_TOP1, *([reference_key] if reference_key else []), metric]

    def record(name: str, row: Row) -> dict[str, Any]:
        return {"rule": name, "alpha": float(row["alpha"]), **{c: row.get(c) for c in columns},
                "oracle_alpha": float(best["alpha"]), f"regret/{metric}": float(best[metric]) - float(row[metric])}

    records = [record("oracle", best)]
    for name, rule in (rules if rules is not None else default_rules()).items():
        try:
            records.append(record(name, rule(sweep)))
        except NotApplicable as reason:
            records.append({"rule": name, "alpha": None, "skipped": str(reason)})
    return records


SELECTION_MODEL = "alpha_selection"  # the model of the rows :func:`selection_rows` adds to results.jsonl
_TOLERANCE_RULES = {"largest_within_": largest_within_tolerance, "smallest_within_": smallest_within_tolerance}


def rule_by_name(name: str) -> Rule:
    """A rule from its name (``merge.select_alpha``): ``best_holdout``, ``min_holdout_nll``, ``one_standard_error``,
    ``alpha_<a>`` (a fixed alpha, e.g. ``alpha_0.5``), ``largest_within_<tol>`` / ``smallest_within_<tol>``."""
    fixed = {"best_holdout": best_holdout, "min_holdout_nll": min_holdout_loss,
             "one_standard_error": one_standard_error}
    if name in fixed:
        return fixed[name]
    if name.startswith("alpha_"):
        return partial(fixed_alpha, alpha=float(name[len("alpha_"):]))
    for prefix, rule in _TOLERANCE_RULES.items():
        if name.startswith(prefix):
            return partial(rule, tol=float(name[len(prefix):]))
    raise ValueError(f"Unknown alpha-selection rule {name!r}: choose from best_holdout, min_holdout_nll, "
                     "one_standard_error, alpha_<a>, largest_within_<tol>, smallest_within_<tol>, or all")


def rules_by_name(names: str | Sequence[str]) -> dict[str, Rule]:
    """``merge.select_alpha`` (a name, a list of names, or ``all``: :func:`default_rules`) as named rules."""
    names = [names] if isinstance(names, str) else list(names)
    if names == ["all"]:
        return default_rules()
    return {name: rule_by_name(name) for name in names}


def selection_rows(rows: Sequence[Row], rules: Mapping[str, Rule], *, reference: str | None = None,
                   metric: str | None = None) -> list[dict[str, Any]]:
    """Result rows of the choices: per rule (the oracle first) the chosen sweep row's metrics, relabelled
    ``model=alpha_selection`` with its ``rule``, ``oracle_alpha`` and ``regret/<metric>``; a rule that cannot be
    applied gets a row with ``alpha: None`` and the reason (``skipped``)."""
    by_alpha = {float(r["alpha"]): r for r in sweep_rows(rows)}
    out = []
    for record in compare_rules(rows, rules, reference=reference, metric=metric):
        chosen = by_alpha.get(record["alpha"], {}) if record["alpha"] is not None else {}
        extra = {k: v for k, v in record.items() if k not in chosen and k not in ("rule", "alpha")}
        out.append({**chosen, "model": SELECTION_MODEL, "alpha": record["alpha"], "rule": record["rule"], **extra})
    return out
