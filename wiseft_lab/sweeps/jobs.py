"""A job's own record, ``job.json`` in its run directory: running, completed or failed, when, and why it failed.

Written by the job itself (:func:`wiseft_lab.pipeline.run.run`) when it starts and when it ends, so the record
lives with the job's files wherever the launcher ran it (another process, another node). A multirun reads these
records, never the launcher's return values: the sweep summary, ``job k/N`` and the ETA, and ``resume=true``'s
skipping of finished jobs all come from them. A job killed without a chance to finish (SIGKILL, out of memory,
a lost node) stays ``running``: interrupted.
"""

from __future__ import annotations

import math
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from wiseft_lab.io import read_json, write_json
from wiseft_lab.reporting.loggers import wandb_run_id

JOB_FILE = "job.json"
RUNNING, COMPLETED, FAILED = "running", "completed", "failed"
PREEMPTED = "preempted"  # stopped at a checkpoint from outside: the same job started again continues it
REASON_CHARS = 300


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def failure_reason(err: BaseException) -> str:
    """One line that says why a job failed: the exception's type and the first line of its message."""
    if isinstance(err, SystemExit):
        return f"SystemExit({err.code})"
    message = next((line.strip() for line in str(err).splitlines() if line.strip()), "")
    reason = f"{type(err).__name__}: {message}" if message else type(err).__name__
    return reason if len(reason) <= REASON_CHARS else reason[: REASON_CHARS - 3] + "..."


def exit_code(err: BaseException | None) -> int:
    if err is None:
        return 0
    if isinstance(err, SystemExit) and isinstance(err.code, int):
        return err.code
    return 1


def _hydra_job() -> dict[str, Any]:
    if not HydraConfig.initialized():
        return {"job": None, "overrides": []}
    hydra = HydraConfig.get()
    num = hydra.job.get("num") if hydra.mode == RunMode.MULTIRUN else None
    return {"job": None if num is None else int(num), "overrides": [str(o) for o in hydra.overrides.task]}


def start_job(run_dir: Path) -> dict[str, Any]:
    """Record that the job runs (``job.json``: running); returns the record :func:`finish_job` completes."""
    record = {"status": RUNNING, **_hydra_job(), "started": time.time(), "finished": None, "duration_s": None,
              "exit_code": None, "reason": None, "host": socket.gethostname(), "pid": os.getpid()}
    write_json(Path(run_dir) / JOB_FILE, record)
    return record


def finish_job(run_dir: Path, record: dict[str, Any], err: BaseException | None = None,
               reason: str | None = None, status: str | None = None) -> dict[str, Any]:
    """Record how the job ended: completed, or failed (``status`` may say pre-empted) with its exit code and one-line
    reason (``err``'s, unless ``reason`` says otherwise: another rank's failure that brought this one down)."""
    finished = time.time()
    status = status or (FAILED if err is not None else COMPLETED)
    record = {**record, "status": status, "finished": finished,
              "duration_s": round(finished - record["started"], 3), "exit_code": exit_code(err),
              "reason": reason or failure_reason(err) if err is not None else None}
    write_json(Path(run_dir) / JOB_FILE, record)
    return record


def read_job(run_dir: Path) -> dict[str, Any] | None:
    path = Path(run_dir) / JOB_FILE
    try:
        return read_json(path)
    except (FileNotFoundError, ValueError):  # never started, or not a job of this version
        return None


@dataclass
class JobOutcome:
    """What a multirun job returns to Hydra instead of raising, so one failure never ends the sweep.

    ``float(outcome)`` is the job's objective, what a sweeper that optimises (Optuna) reads from a job's return
    value. For a failed job it raises ValueError: the Optuna sweeper then marks the trial failed (a NaN would make
    optuna 2.10's ``tell`` raise) and goes on while failures stay under its ``max_failure_rate``.
    """

    status: str
    run_dir: str | None = None
    reason: str | None = None
    objective: float | None = None

    def __float__(self) -> float:
        if self.status == FAILED:
            raise ValueError(f"the job failed: {self.reason}")
        return math.nan if self.objective is None else float(self.objective)


def finished_before(resume: Any, run_dir: Path) -> dict[str, Any] | None:
    """``resume=true`` in a multirun: the record of this job dir if it already completed (the job is then skipped:
    no re-evaluation, no second W&B run), else None (never started, interrupted or failed: it runs)."""
    if resume not in (True, "true") or not in_multirun():
        return None
    record = read_job(run_dir)
    return record if record is not None and record.get("status") == COMPLETED else None


def resumed_wandb_id(resume: Any, run_dir: Path) -> str | None:
    """``resume=true`` in a multirun: the W&B run an interrupted (or failed) job started, to be continued by id."""
    return wandb_run_id(run_dir) if resume in (True, "true") and in_multirun() else None
