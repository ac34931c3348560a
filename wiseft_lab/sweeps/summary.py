"""The sweep summary: one row per job of a multirun directory, from each job's own files, and the best job.

A row: the overrides that vary across the sweep, the job's status and duration (``job.json``), the held-out
top-1 of its fine-tuned model (``checkpoints/finetuned/meta.json``), and from ``results.jsonl`` the reference and
average-shift top-1 of the fine-tuned model, of WiSE-FT at alpha 0.5 and at the best alpha (by average shift
accuracy, as the W&B summary's ``wiseft_best``). ``sweep.md`` / ``sweep.csv`` hold the table.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from wiseft_lab.evaluation.suite import AVG_SHIFTS, HOLDOUT
from wiseft_lab.io import atomic_write_text, read_jsonl, write_csv
from wiseft_lab.models.checkpoint import is_checkpoint, read_meta
from wiseft_lab.reporting.tables import markdown_table, summary_metrics
from wiseft_lab.sweeps.jobs import COMPLETED, FAILED, JOB_FILE, RUNNING, read_job

SWEEP_MD, SWEEP_CSV = "sweep.md", "sweep.csv"
HOLDOUT_KEY = f"{HOLDOUT}/top1"
NOT_COMPARED = ("resume",)   # overrides that say how a job was run, not what it is
SCORES = ("finetuned", "wiseft_0.5", "wiseft_best")
SCORE_COLUMNS = (*(f"{s}/{c}" for s in SCORES for c in ("ref", "avg_shifts")), "wiseft_best/alpha")


def differing(overrides: Sequence[Sequence[str]]) -> list[list[str]]:
    """Each list without the overrides every list shares (nor ``resume=``): what tells the jobs apart."""
    kept = [[o for o in job if o.split("=", 1)[0].lstrip("+~") not in NOT_COMPARED] for job in overrides]
    common = set.intersection(*(set(job) for job in kept)) if kept else set()
    return [[o for o in job if o not in common] for job in kept]


def job_dirs(sweep_dir: Path) -> list[Path]:
    """The job directories under a sweep directory (those with a ``job.json``), in job order."""
    found = [p.parent for p in Path(sweep_dir).rglob(JOB_FILE)
             if not any(part.startswith(".") for part in p.relative_to(sweep_dir).parts)]

    def key(path: Path) -> tuple:
        record = read_job(path) or {}
        return (record.get("job") is None, record.get("job") or 0, str(path))

    return sorted(found, key=key)


def _reference(run_dir: Path) -> str | None:
    config = run_dir / "config.yaml"
    return OmegaConf.select(OmegaConf.load(config), "eval.reference", default=None) if config.is_file() else None


def _holdout(run_dir: Path) -> float | None:
    checkpoint = run_dir / "checkpoints" / "finetuned"
    value = read_meta(checkpoint).metrics.get(HOLDOUT_KEY) if is_checkpoint(checkpoint) else None
    return None if value is None else float(value)


def scores(rows: Sequence[Mapping[str, Any]], reference: str) -> dict[str, Any]:
    """Reference and average-shift top-1 of the fine-tuned model, WiSE-FT alpha=0.5 and the best alpha."""
    out: dict[str, Any] = {}
    summary = summary_metrics(rows)
    half = next((r for r in rows if r["model"] == "wiseft" and r.get("alpha") is not None
                 and math.isclose(float(r["alpha"]), 0.5)), None)
    sources = {"finetuned": {k.split("/", 1)[1]: v for k, v in summary.items() if k.startswith("finetuned/")},
               "wiseft_0.5": half or {},
               "wiseft_best": {k.split("/", 1)[1]: v for k, v in summary.items() if k.startswith("wiseft_best/")}}
    for name, values in sources.items():
        for column, key in (("ref", f"{reference}/top1"), ("avg_shifts", f"{AVG_SHIFTS}/top1")):
            if key in values:
                out[f"{name}/{column}"] = float(values[key])
    if "wiseft_best/alpha" in summary:
        out["wiseft_best/alpha"] = summary["wiseft_best/alpha"]
    return out


def job_row(run_dir: Path) -> dict[str, Any]:
    """Everything the summary shows about one job, read from its directory."""
    record = read_job(run_dir) or {"status": RUNNING}
    reference = _reference(run_dir)
    row: dict[str, Any] = {"job": record.get("job"), "overrides": list(record.get("overrides") or []),
                           "status": record["status"], "duration_s": record.get("duration_s"),
                           "reason": record.get("reason"), "reference": reference, HOLDOUT_KEY: _holdout(run_dir)}
    row.update(dict.fromkeys(SCORE_COLUMNS))
    results = run_dir / "results.jsonl"
    if reference and results.is_file():
        row.update(scores(read_jsonl(results), reference))
    row["run_dir"] = str(run_dir)
    return row


def objective(run_dir: Path) -> float | None:
    """What ranks a job (and what an optimising sweeper maximises): the held-out top-1 of its fine-tuned model,
    else the fine-tuned model's reference top-1 (without a held-out split, the best job is chosen on test data)."""
    row = job_row(Path(run_dir))
    return _rank_value(row)


def _rank_value(row: Mapping[str, Any]) -> float | None:
    value = row.get(HOLDOUT_KEY)
    return value if value is not None else row.get("finetuned/ref")


def sweep_rows(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per job, its ``overrides`` reduced to those that vary across the sweep."""
    rows = [job_row(d) for d in job_dirs(sweep_dir)]
    for row, varying in zip(rows, differing([r["overrides"] for r in rows]), strict=True):
        row["overrides"] = " ".join(varying)
    return rows


def best_job(rows: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The completed job with the highest :func:`objective` (held-out when every ranked job has one)."""
    ranked = [r for r in rows if r["status"] == COMPLETED and _rank_value(r) is not None]
    return max(ranked, key=_rank_value) if ranked else None


def ranked_by(rows: Sequence[Mapping[str, Any]]) -> str:
    return "held-out top-1" if any(r.get(HOLDOUT_KEY) is not None for r in rows) else "fine-tuned reference top-1"


def _pct(value: Any) -> str:
    return "-" if value is None else f"{100 * float(value):.1f}"


def _duration(seconds: Any) -> str:
    if seconds is None:
        return "-"
    seconds = float(seconds)
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def job_label(row: Mapping[str, Any]) -> str:
    return f"job {row['job']}" if row.get("job") is not None else Path(row["run_dir"]).name


def failure_lines(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """``job 2 (optimizer.lr=1e+30): NonFiniteLossError: ... -> <dir>/error.log`` per failed or unfinished job."""
    lines = []
    for row in rows:
        if row["status"] == COMPLETED:
            continue
        what = row.get("reason") or "interrupted (no end recorded: killed, or still running)"
        label = job_label(row) + (f" ({row['overrides']})" if row["overrides"] else "")
        log_file = Path(row["run_dir"]) / "error.log"
        lines.append(f"{label}: {what}" + (f" -> {log_file}" if log_file.is_file() else ""))
    return lines


def sweep_markdown(rows: Sequence[Mapping[str, Any]], title: str, planned: int | None = None) -> str:
    """``sweep.md``: the table, the best job, and the jobs that failed with their reasons."""
    references = sorted({r["reference"] for r in rows if r.get("reference")})
    ref = references[0] if len(references) == 1 else "ref"
    header = ["job", "overrides", "status", "time", "held-out",
              f"fine-tuned {ref}", "fine-tuned avg shifts", f"WiSE-FT 0.5 {ref}", "WiSE-FT 0.5 avg shifts",
              "best alpha", f"best-alpha {ref}", "best-alpha avg shifts"]
    body = [[job_label(r), r["overrides"] or "-", r["status"], _duration(r.get("duration_s")), _pct(r.get(HOLDOUT_KEY)),
             *(_pct(r.get(f"{s}/{c}")) for s in SCORES[:2] for c in ("ref", "avg_shifts")),
             "-" if r.get("wiseft_best/alpha") is None else f"{float(r['wiseft_best/alpha']):g}",
             _pct(r.get("wiseft_best/ref")), _pct(r.get("wiseft_best/avg_shifts"))] for r in rows]
    done = sum(r["status"] == COMPLETED for r in rows)
    failed = sum(r["status"] == FAILED for r in rows)
    counts = f"{len(rows)} jobs" + (f" of {planned} planned" if planned and planned != len(rows) else "")
    text = (f"# Sweep {title}\n\n{counts}: {done} completed, {failed} failed, {len(rows) - done - failed} "
            "interrupted or running. Top-1 accuracy (%); best alpha = the WiSE-FT alpha with the best average "
            "shift accuracy (an oracle).\n\n" + markdown_table(header, body))
    best = best_job(rows)
    if best is not None:
        text += (f"\n**Best job**: {job_label(best)} ({best['overrides'] or 'no differing overrides'}), by "
                 f"{ranked_by(rows)} {_pct(_rank_value(best))}: {best['run_dir']}\n")
    failures = failure_lines(rows)
    if failures:
        text += "\n## Failed or unfinished\n\n" + "".join(f"- {line}\n" for line in failures)
    return text


def write_sweep_summary(sweep_dir: Path, rows: Sequence[Mapping[str, Any]], title: str,
                        planned: int | None = None) -> tuple[Path, Path]:
    md = atomic_write_text(Path(sweep_dir) / SWEEP_MD, sweep_markdown(rows, title, planned))
    csv = write_csv(Path(sweep_dir) / SWEEP_CSV, [dict(r) for r in rows])
    return md, csv
