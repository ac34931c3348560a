"""The report step: the WiSE-FT curve, the soup report and the W&B records of an evaluation."""

from __future__ import annotations

from typing import Any

from wiseft_lab.pipeline.context import RunContext
from wiseft_lab.pipeline.evaluate import Evaluation
from wiseft_lab.reporting.plots import calibration_curve, wiseft_curve
from wiseft_lab.reporting.soup_report import soup_report
from wiseft_lab.reporting.tables import summary_metrics


def report(ctx: RunContext, evaluation: Evaluation) -> dict[str, Any]:
    rows, suite = evaluation.rows, evaluation.suite
    if not rows:
        return {}
    reference, shifts = suite.reference, suite.shifts
    outputs: dict[str, Any] = {"summary": ctx.run_dir / "summary.md", "results": ctx.run_dir / "results.jsonl"}
    if shifts and any(r["model"] == "wiseft" for r in rows):
        outputs["plot"] = wiseft_curve(rows, reference, ctx.run_dir / "wiseft_curve.png",
                                       title=f"WiSE-FT: {ctx.cfg.task_name}")
        ctx.logger.log_image("wiseft_curve_png", outputs["plot"])
    if any(r["model"] == "wiseft" and f"{reference}/ece" in r for r in rows):
        outputs["calibration_plot"] = calibration_curve(rows, [reference, *shifts], ctx.run_dir / "ece_alpha.png",
                                                        title=f"ECE along the WiSE-FT path: {ctx.cfg.task_name}")
        ctx.logger.log_image("ece_alpha_png", outputs["calibration_plot"])
    ctx.logger.log_results(rows, reference)
    ctx.logger.summary(summary_metrics(rows))
    outputs.update(soup_report(rows, reference, shifts, ctx.run_dir, ctx.logger, title=ctx.cfg.task_name))
    return outputs
