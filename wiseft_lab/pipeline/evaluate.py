"""The evaluate stage: every candidate model on every set of the suite, one result row each.

``results.jsonl``, ``results.csv`` and ``summary.md`` are rewritten atomically after every model, so a crash keeps
every finished evaluation.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wiseft_lab.evaluation.alpha_selection import rules_by_name, selection_rows
from wiseft_lab.evaluation.calibration import N_BINS, Calibration
from wiseft_lab.evaluation.features import FeatureCache
from wiseft_lab.evaluation.holdout import score_holdout
from wiseft_lab.evaluation.set_heads import evaluate_with_set_heads
from wiseft_lab.evaluation.suite import EvalSuite
from wiseft_lab.io import atomic_write_text, write_csv, write_jsonl
from wiseft_lab.models.checkpoint import read_meta
from wiseft_lab.models.interop import is_open_clip_source
from wiseft_lab.pipeline.context import RunContext
from wiseft_lab.pipeline.finetune import head_classes
from wiseft_lab.pipeline.merge import Candidates
from wiseft_lab.reporting.tables import columns, result_row, score, summary_markdown

log = logging.getLogger(__name__)

ENDPOINTS = ("zeroshot", "finetuned")


@dataclass
class Evaluation:
    rows: list[dict[str, Any]]
    suite: EvalSuite


def check_classes(ctx: RunContext, stages: Sequence[str]) -> None:
    """Before anything runs: every eval set's classes matched by name to the head that will be evaluated (the
    training set's, a given checkpoint's, or for an open_clip file the head built for it); a pool of checkpoints is
    matched when its first one is loaded."""
    if "evaluate" not in stages:
        return
    if "finetune" in stages:
        head = ctx.task().train.classnames
    else:
        given = [Path(str(ctx.cfg.checkpoints.get(n))) for n in ENDPOINTS if ctx.cfg.checkpoints.get(n)]
        if not given:
            return
        ours = [path for path in given if not is_open_clip_source(path)]
        head = read_meta(ours[0]).classnames if ours else head_classes(ctx).classnames
    ctx.check_eval_classes(head)


def evaluate(ctx: RunContext, candidates: Candidates) -> Evaluation:
    model = ctx.models.skeleton(candidates.template)
    suite = ctx.suite(ctx.models.meta.classnames)
    rows: list[dict[str, Any]] = []
    endpoints: dict[float, dict] = {}
    features = FeatureCache()  # models sharing one image tower (lc heads, their soups) run it once per set
    calibration = Calibration(n_bins=int(ctx.cfg.eval.get("calibration_bins", N_BINS)))
    holdout = ctx.holdout_suite()  # every model is also scored on it (alpha selection, temperature scaling)
    for entry in candidates.entries:
        if entry.model == "wiseft" and entry.alpha in endpoints:
            metrics = endpoints[entry.alpha]  # alpha 0 / 1 are the endpoints bit for bit
        else:
            subject = entry.module() if entry.module is not None else ctx.models.load(model, entry.weights())
            tag = entry.tag or (entry.model if entry.model != "wiseft" else f"wiseft_{entry.alpha:g}")
            held, fitted = ({}, calibration) if holdout is None else score_holdout(
                subject, holdout, calibration, batch_size=ctx.cfg.eval.batch_size, precision=ctx.precision,
                features=features)
            metrics = evaluate_with_set_heads(
                subject, suite, head_for=ctx.models.head_builder(model) if entry.module is None else None,
                batch_size=ctx.cfg.eval.batch_size, precision=ctx.precision, features=features, calibration=fitted,
                predictions_dir=ctx.run_dir / "predictions" / tag if ctx.cfg.eval.save_predictions else None)
            metrics.update(held)
            if entry.model in ENDPOINTS:
                endpoints[entry.alpha] = metrics
        row = result_row(entry.model, entry.alpha, metrics, **entry.extra)
        rows.append(row)
        log.info("%s%s: %s", entry.model, f" alpha={entry.alpha:g}" if entry.model == "wiseft" else "",
                 "  ".join(f"{c} {100 * score(row, c):.1f}" for c in columns(suite.reference, suite.shifts)))
        write_results(ctx, rows, suite)
    if candidates.select_alpha:
        rows += selection_rows(rows, rules_by_name(candidates.select_alpha), reference=suite.reference)
        write_results(ctx, rows, suite)
    return Evaluation(rows, suite)


def write_results(ctx: RunContext, rows: list[dict[str, Any]], suite: EvalSuite) -> None:
    write_jsonl(ctx.run_dir / "results.jsonl", rows)
    write_csv(ctx.run_dir / "results.csv", rows)
    atomic_write_text(ctx.run_dir / "summary.md",
                      summary_markdown(rows, suite.reference, suite.shifts, title=ctx.cfg.task_name))
