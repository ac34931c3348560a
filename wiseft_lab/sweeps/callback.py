"""The multirun's voice (a Hydra callback, ``hydra.callbacks.sweep`` in ``conf/hydra/default.yaml``).

- start: ``sweep.json`` in the sweep directory (jobs planned, start time), read by every job wherever it runs;
- each job: ``job k/N``, how many are done and failed, and an ETA from the jobs finished so far;
- end: ``sweep.md`` / ``sweep.csv`` (:mod:`wiseft_lab.sweeps.summary`), the table as a W&B run of the sweep's
  group, the failed jobs with one-line reasons as the last lines, and a non-zero exit when any job failed.

Everything is read from the jobs' own records (``job.json``), so it is the same with every launcher.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from wiseft_lab.io import read_json, write_json
from wiseft_lab.sweeps.jobs import COMPLETED, FAILED, read_job
from wiseft_lab.sweeps.summary import best_job, failure_lines, job_dirs, ranked_by, sweep_rows, write_sweep_summary

log = logging.getLogger(__name__)

SWEEP_FILE = "sweep.json"


def planned_jobs(config: DictConfig) -> int | None:
    """How many jobs the sweeper will launch: the basic sweeper's grid (its own expansion of the overrides and
    ``hydra.sweeper.params``), an optimising sweeper's ``n_trials``; None when it cannot be known here."""
    sweeper = config.hydra.sweeper
    if "n_trials" in sweeper:
        return int(sweeper.n_trials)
    if not str(sweeper.get("_target_", "")).endswith("BasicSweeper"):
        return None
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    params = [f"{k}={v}" for k, v in (sweeper.get("params") or {}).items()]
    try:
        overrides = OverridesParser.create().parse_overrides([*params, *config.hydra.overrides.task])
        return sum(len(batch) for batch in BasicSweeper.split_arguments(overrides, None))
    except Exception:  # noqa: BLE001 - e.g. glob() needs the config loader: the count is only for display
        return None


def eta_seconds(planned: int, finished: int, finished_here: int, elapsed: float) -> float | None:
    """Seconds left at the pace of this invocation (jobs finished here per second, parallel launchers included);
    None before the first job finishes. ``finished`` counts earlier invocations' jobs too (resume)."""
    if finished_here <= 0 or elapsed <= 0:
        return None
    return max(planned - finished, 0) * elapsed / finished_here


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else (f"{minutes}m{secs:02d}s" if minutes else f"{secs}s")


def progress_line(job: int, planned: int | None, records: list[dict[str, Any]], started: float,
                  now: float) -> str:
    """``job 3/12: 2 done (1 failed), ETA 4m10s`` for the job that starts now."""
    ended = [r for r in records if r.get("status") in (COMPLETED, FAILED)]
    failed = sum(r["status"] == FAILED for r in ended)
    here = sum((r.get("finished") or 0) >= started for r in ended)
    line = f"job {job + 1}/{planned if planned else '?'}: {len(ended)} done" + (f" ({failed} failed)" if failed else "")
    eta = eta_seconds(planned, len(ended), here, now - started) if planned else None
    return line + (f", ETA {_clock(eta)}" if eta is not None else "")


class SweepCallback(Callback):
    def __init__(self, wandb: bool = True):
        self.wandb = wandb

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        write_json(sweep_dir / SWEEP_FILE, {"planned": planned_jobs(config), "started": time.time()})

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.hydra.mode != RunMode.MULTIRUN:
            return
        sweep_dir = Path(config.hydra.sweep.dir)
        info = read_json(sweep_dir / SWEEP_FILE) if (sweep_dir / SWEEP_FILE).is_file() else {}
        # this job's own record (a resumed sweep's failed or interrupted job, about to run again) is not "done"
        own = Path(config.hydra.runtime.output_dir).resolve()
        records = [r for r in (read_job(d) for d in job_dirs(sweep_dir) if d.resolve() != own) if r is not None]
        log.info(progress_line(int(config.hydra.job.num), info.get("planned"), records,
                               info.get("started", time.time()), time.time()))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        info = read_json(sweep_dir / SWEEP_FILE) if (sweep_dir / SWEEP_FILE).is_file() else {}
        rows = sweep_rows(sweep_dir)
        md, csv = write_sweep_summary(sweep_dir, rows, f"{config.task_name}: {sweep_dir}", info.get("planned"))
        if self.wandb:
            self._log(config, sweep_dir, rows)
        print("\n" + md.read_text() + f"\nSweep summary: {md} ({csv.name})")
        failures = failure_lines(rows)
        if failures:
            print(f"{len(failures)} of {len(rows)} jobs did not finish:\n" + "\n".join(f"  {f}" for f in failures))
            raise SystemExit(1)

    @staticmethod
    def _log(config: DictConfig, sweep_dir: Path, rows: list[dict[str, Any]]) -> None:
        """The table as one W&B run in the sweep's group (job type ``sweep``), beside the jobs' own runs: the group
        its jobs log to (:func:`~wiseft_lab.reporting.wandb_names.group_name`), not the bare directory name."""
        from wiseft_lab.reporting.loggers import create_logger
        from wiseft_lab.reporting.wandb_names import group_name

        record = {"sweep_dir": str(sweep_dir), "overrides": OmegaConf.to_container(config.hydra.overrides.task)}
        logger = create_logger(config.get("logger"), sweep_dir, record, group=group_name(sweep_dir),
                               name=f"{config.task_name}-{sweep_dir.name}-sweep", job_type="sweep")
        try:
            logger.log_table("sweep", rows)
            best = best_job(rows)
            logger.summary({"jobs": len(rows), "completed": sum(r["status"] == COMPLETED for r in rows),
                            "failed": sum(r["status"] == FAILED for r in rows),
                            **({"best_job": best["job"], "best_job/overrides": best["overrides"],
                                "best_job/ranked_by": ranked_by(rows)} if best else {})})
        finally:
            logger.close()
