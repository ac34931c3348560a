"""Alpha selection rules on a hand-made WiSE-FT sweep."""

from __future__ import annotations

import math

import pytest

from wiseft_lab.evaluation.alpha_selection import (
    SELECTION_MODEL,
    best_holdout,
    compare_rules,
    default_rules,
    fixed_alpha,
    largest_within_tolerance,
    min_holdout_loss,
    one_standard_error,
    oracle,
    rules_by_name,
    selection_rows,
    smallest_within_tolerance,
    sweep_rows,
)

#  alpha  holdout  nll   photo (ref)  avg shifts
#  0.00   0.700    1.10  0.69         0.60
#  0.25   0.780    0.80  0.77         0.64   <- oracle (best avg shifts)
#  0.50   0.815    0.70  0.81         0.63   <- lowest held-out NLL
#  0.75   0.820    0.72  0.83         0.58   <- best held-out
#  1.00   0.800    0.85  0.82         0.50
TABLE = [(0.0, 0.700, 1.10, 0.69, 0.60), (0.25, 0.780, 0.80, 0.77, 0.64), (0.5, 0.815, 0.70, 0.81, 0.63),
         (0.75, 0.820, 0.72, 0.83, 0.58), (1.0, 0.800, 0.85, 0.82, 0.50)]
SWEEP = [{"model": "wiseft", "alpha": a, "holdout/top1": h, "holdout/nll": nll, "n/holdout": 400,
          "photo/top1": ref, "avg_shifts/top1": shifts} for a, h, nll, ref, shifts in reversed(TABLE)]
OTHER = [{"model": "zeroshot", "alpha": None, "holdout/top1": 0.7, "avg_shifts/top1": 0.6},
         {"model": "greedy_soup", "alpha": None, "holdout/top1": 0.9, "avg_shifts/top1": 0.7}]


def _alpha(row):
    return row["alpha"]


def test_rules_by_hand():
    rows = sweep_rows([*OTHER, *SWEEP])
    assert [r["alpha"] for r in rows] == [0.0, 0.25, 0.5, 0.75, 1.0]  # other models dropped, sorted by alpha
    assert _alpha(best_holdout(rows)) == 0.75
    assert _alpha(oracle(rows)) == 0.25
    assert _alpha(fixed_alpha(rows)) == 0.5
    assert _alpha(min_holdout_loss(rows)) == 0.5
    # Within 0.025 of 0.82, i.e. >= 0.795: alphas 0.5, 0.75, 1.0.
    assert _alpha(largest_within_tolerance(rows, 0.025)) == 1.0
    assert _alpha(smallest_within_tolerance(rows, 0.025)) == 0.5
    assert _alpha(largest_within_tolerance(rows, 0.0)) == 0.75
    # One standard error: sqrt(0.82 * 0.18 / 400) = 0.0192 -> >= 0.8008: alphas 0.5 and 0.75 (1.0 has 0.800).
    assert math.sqrt(0.82 * 0.18 / 400) == pytest.approx(0.019209, abs=1e-6)
    assert _alpha(one_standard_error(rows)) == 0.5
    # With 4000 held-out images the error is 0.0061 -> >= 0.8139: still 0.5 (0.815); with 40000, 0.0019: only 0.75.
    assert _alpha(one_standard_error([{**r, "n/holdout": 4000} for r in rows])) == 0.5
    assert _alpha(one_standard_error([{**r, "n/holdout": 40000} for r in rows])) == 0.75


def test_ties_go_to_the_smaller_alpha():
    rows = [{"alpha": a, "holdout/top1": h, "avg_shifts/top1": s} for a, h, s in
            [(0.2, 0.8, 0.6), (0.4, 0.8, 0.6), (0.6, 0.7, 0.5)]]
    assert _alpha(best_holdout(rows)) == 0.2 and _alpha(oracle(rows)) == 0.2


def test_compare_rules_reports_the_cost_against_the_oracle():
    records = {r["rule"]: r for r in compare_rules([*OTHER, *SWEEP], reference="photo")}
    assert records["oracle"]["alpha"] == 0.25 and records["oracle"]["regret/avg_shifts/top1"] == 0.0
    # best held-out (0.75): shifts 0.58 vs the oracle's 0.64 -> costs 6 points; alpha 0.5: 1 point.
    assert records["best_holdout"]["regret/avg_shifts/top1"] == pytest.approx(0.06)
    assert records["best_holdout"]["photo/top1"] == 0.83 and records["best_holdout"]["oracle_alpha"] == 0.25
    assert records["alpha_0.5"]["regret/avg_shifts/top1"] == pytest.approx(0.01)
    assert records["min_holdout_nll"]["alpha"] == 0.5
    assert records["largest_within_0.005"]["alpha"] == 0.75  # >= 0.815: 0.5 and 0.75
    assert records["smallest_within_0.005"]["alpha"] == 0.5
    assert all(r["regret/avg_shifts/top1"] >= 0 for r in records.values())


def test_rules_without_their_columns_are_skipped():
    rows = [{"model": "wiseft", "alpha": a, "holdout/top1": h, "avg_shifts/top1": s}
            for a, h, _, _, s in TABLE if a != 0.5]
    records = {r["rule"]: r for r in compare_rules(rows)}
    assert records["min_holdout_nll"]["alpha"] is None and "holdout/nll" in records["min_holdout_nll"]["skipped"]
    assert records["one_standard_error"]["alpha"] is None and "n/holdout" in records["one_standard_error"]["skipped"]
    assert records["alpha_0.5"]["alpha"] is None and "0.5" in records["alpha_0.5"]["skipped"]
    assert records["best_holdout"]["alpha"] == 0.75


def test_sweep_checks():
    with pytest.raises(ValueError, match="No wiseft rows"):
        sweep_rows(OTHER)
    with pytest.raises(ValueError, match="share an alpha"):
        sweep_rows([*SWEEP, SWEEP[0]])
    with pytest.raises(ValueError, match="non-negative"):
        largest_within_tolerance(SWEEP, -0.1)


def test_rules_by_name_and_their_result_rows():
    rules = rules_by_name(["best_holdout", "alpha_0.25", "smallest_within_0.025", "one_standard_error"])
    assert [_alpha(rule(SWEEP)) for rule in rules.values()] == [0.75, 0.25, 0.5, 0.5]
    assert list(rules_by_name("all")) == list(default_rules())
    with pytest.raises(ValueError, match="Unknown alpha-selection rule"):
        rules_by_name("best_test")
    chosen = selection_rows([*OTHER, *SWEEP], rules_by_name(["best_holdout", "min_holdout_nll"]), reference="photo")
    assert [(r["model"], r["rule"], r["alpha"]) for r in chosen] == [
        (SELECTION_MODEL, "oracle", 0.25), (SELECTION_MODEL, "best_holdout", 0.75),
        (SELECTION_MODEL, "min_holdout_nll", 0.5)]
    # the chosen sweep row's columns, and the cost on the shifts against the oracle
    assert chosen[1]["photo/top1"] == 0.83 and chosen[1]["holdout/nll"] == 0.72 and chosen[1]["n/holdout"] == 400
    assert chosen[1]["regret/avg_shifts/top1"] == pytest.approx(0.06) and chosen[1]["oracle_alpha"] == 0.25


def test_a_suite_scored_by_other_metrics_is_chosen_by_its_primary_average():
    # an iWildCam-like suite: the reference and the shifts' average are macro F1 (primary), top-1 comes after
    from wiseft_lab.reporting.tables import alpha_selection_markdown

    sweep = [{"model": "wiseft", "alpha": a, "holdout/top1": h, "n/holdout": 400, "wild_id/macro_f1": ref,
              "wild_id/top1": 0.9, "avg_shifts/macro_f1": f1} for a, h, ref, f1 in
             ((0.0, 0.70, 0.40, 0.30), (0.5, 0.80, 0.50, 0.35), (1.0, 0.82, 0.55, 0.20))]
    chosen = selection_rows(sweep, rules_by_name(["best_holdout"]), reference="wild_id")
    # oracle: alpha 0.5 (macro F1 0.35); best held-out: alpha 1 (0.82), 0.15 below the oracle's macro F1
    assert [(r["rule"], r["alpha"]) for r in chosen] == [("oracle", 0.5), ("best_holdout", 1.0)]
    assert chosen[1]["regret/avg_shifts/macro_f1"] == pytest.approx(0.15)
    text = alpha_selection_markdown(chosen, "wild_id")
    assert ("| rule | alpha | held-out | wild_id (ref) [macro_f1] | avg shifts [macro_f1] | regret (points) | note |"
            in text)
    assert "| `best_holdout` | 1 | 82.0 | 55.0 | 20.0 | 15.0 |  |" in text
