"""The evaluate stage: every candidate model on every set of the suite, one result row each.

``results.jsonl``, ``results.csv`` and ``summary.md`` are rewritten atomically after every model, so a crash keeps
every finished evaluation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from wiseft_lab.evaluation.features import FeatureCache
from wiseft_lab.evaluation.set_heads import evaluate_with_set_heads
from wiseft_lab.evaluation.suite import EvalSuite
from wiseft_lab.io import atomic_write_text, write_csv, write_jsonl
from wiseft_lab.pipeline.context import RunContext
from wiseft_lab.pipeline.merge import Candidates
from wiseft_lab.reporting.tables import result_row, summary_markdown

log = logging.getLogger(__name__)

ENDPOINTS = ("zeroshot", "finetuned")


@dataclass
class Evaluation:
    rows: list[dict[str, Any]]
    suite: EvalSuite


def evaluate(ctx: RunContext, candidates: Candidates) -> Evaluation:
    model = ctx.models.skeleton(candidates.template)
    suite = ctx.suite()
    rows: list[dict[str, Any]] = []
    endpoints: dict[float, dict] = {}
    features = FeatureCache()  # models sharing one image tower (lc heads, their soups) run it once per set
    for entry in candidates.entries:
        if entry.model == "wiseft" and entry.alpha in endpoints:
            metrics = endpoints[entry.alpha]  # alpha 0 / 1 are the endpoints bit for bit
        else:
            subject = entry.module() if entry.module is not None else ctx.models.load(model, entry.weights())
            tag = entry.tag or (entry.model if entry.model != "wiseft" else f"wiseft_{entry.alpha:g}")
            metrics = evaluate_with_set_heads(
                subject, suite, head_for=ctx.models.head_builder(model) if entry.module is None else None,
                batch_size=ctx.cfg.eval.batch_size, precision=ctx.precision, features=features,
                predictions_dir=ctx.run_dir / "predictions" / tag if ctx.cfg.eval.save_predictions else None)
            if entry.model in ENDPOINTS:
                endpoints[entry.alpha] = metrics
        row = result_row(entry.model, entry.alpha, metrics, **entry.extra)
        rows.append(row)
        log.info("%s%s: %s", entry.model, f" alpha={entry.alpha:g}" if entry.model == "wiseft" else "",
                 "  ".join(f"{k[:-5]} {100 * v:.1f}" for k, v in row.items() if k.endswith("/top1")))
        write_results(ctx, rows, suite)
    return Evaluation(rows, suite)


def write_results(ctx: RunContext, rows: list[dict[str, Any]], suite: EvalSuite) -> None:
    write_jsonl(ctx.run_dir / "results.jsonl", rows)
    write_csv(ctx.run_dir / "results.csv", rows)
    atomic_write_text(ctx.run_dir / "summary.md",
                      summary_markdown(rows, suite.reference, suite.shifts, title=ctx.cfg.task_name))
