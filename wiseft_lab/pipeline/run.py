"""One job: the run directory, its record, the logger, the stages in order, and failure handling apart from them.

``run(cfg)`` is what ``wiseft-lab`` calls for every job (a multirun's jobs share a process): it writes
``config.yaml`` and ``run_info.json``, builds the :class:`~wiseft_lab.pipeline.context.RunContext` once, runs
``finetune -> merge -> evaluate -> report`` (each stage a function of the context that returns what the next
one takes), and on any failure writes the traceback to ``error.log`` and closes the W&B run as failed.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from wiseft_lab import distributed
from wiseft_lab.config import ConfigError, check_targets
from wiseft_lab.console import is_verbose, lift_quiet_console
from wiseft_lab.data.eval_sets import check_data_layouts
from wiseft_lab.errors import console_message
from wiseft_lab.io import atomic_write_text, create_exclusive, writes_here
from wiseft_lab.merging.pool import adopt_pool_split, pool_group
from wiseft_lab.models.checkpoint import verification
from wiseft_lab.pipeline.context import (
    CHECKPOINTS,
    RunContext,
    apply_threads,
    available_cores,
    hydra_choice,
    resolve_device,
    resolve_workers,
    sweep_group,
    task_overrides,
)
from wiseft_lab.pipeline.deprecations import apply_deprecations
from wiseft_lab.pipeline.evaluate import check_classes, evaluate
from wiseft_lab.pipeline.finetune import TRAINABLE_REPORT, describe, endpoints, finetune
from wiseft_lab.pipeline.guards import preflight, refuse_finished_in_place
from wiseft_lab.pipeline.merge import merge
from wiseft_lab.pipeline.ranks import stage_done, start_rank
from wiseft_lab.pipeline.report import report
from wiseft_lab.precision import resolve_precision
from wiseft_lab.reporting.loggers import create_logger
from wiseft_lab.reporting.run_info import write_run_info
from wiseft_lab.reporting.wandb_names import job_type, read_sweep, run_name, run_tags, varying_overrides
from wiseft_lab.runlock import RunLock, RunLockedError
from wiseft_lab.sweeps.jobs import (
    PREEMPTED,
    exit_code,
    failure_reason,
    finish_job,
    finished_before,
    read_job,
    resumed_wandb_id,
    start_job,
)
from wiseft_lab.training.loop import Preempted, request_stop
from wiseft_lab.validation import validate

log = logging.getLogger(__name__)

STAGES = ("finetune", "merge", "evaluate")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def run_dir_from_hydra(cfg: DictConfig) -> Path:
    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path(cfg.paths.output_dir)


def logger_fields(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """The W&B group, name, job type and tags of this job (:mod:`wiseft_lab.reporting.wandb_names`)."""
    multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    keys = read_sweep(HydraConfig.get().sweep.dir)[1] if multirun else []
    varying = varying_overrides(HydraConfig.get().overrides.task if HydraConfig.initialized() else [], keys)
    logger = cfg.get("logger") or {}
    kind = logger.get("job_type") or job_type(list(cfg.stages), (cfg.get("merge") or {}).get("kind"))
    choices = {group: hydra_choice(group) for group in ("experiment", "model", "finetune", "merge")}
    return {"group": sweep_group() or pool_group(cfg), "name": run_name(cfg.task_name, kind, varying, run_dir.name),
            "job_type": kind, "tags": run_tags(varying, choices, logger.get("tags") or [])}


def run_stages(ctx: RunContext) -> dict[str, Any]:
    stages = list(ctx.cfg.stages)
    if not stages:
        describe(ctx)
        log.info("stages=[]: dry run, wrote %s", ctx.run_dir / TRAINABLE_REPORT)
        return {"trainable": ctx.run_dir / TRAINABLE_REPORT}
    check_data_layouts(ctx.cfg, stages)  # missing or misplaced data fails here, before any training
    check_classes(ctx, stages)           # and so does an eval set whose class names are not the head's
    if "finetune" in stages:
        ctx.task()  # the training split (and its shots check) before any model is built
    ends = finetune(ctx) if "finetune" in stages else endpoints(ctx)
    stage_done()  # the other ranks read rank 0's checkpoints from here on
    if "merge" not in stages and "evaluate" not in stages:
        return {}
    candidates = merge(ctx, ends, run_strategy="merge" in stages)
    stage_done()
    if "evaluate" not in stages:
        return {}
    return report(ctx, evaluate(ctx, candidates))


class Terminated(SystemExit):
    """SIGTERM: the job is being stopped from outside (a multirun does not go on past it)."""


class Requeued(Terminated):
    """Pre-empted under submitit, checkpointed, and handed back to submitit, which requeues the job."""


def preemption_signal() -> signal.Signals | None:
    """The signal submitit sends a task before a pre-emption or its time limit (``SUBMITIT_PREEMPT_SIGNAL``, USR2 by
    default), when this process is a submitit task; else None."""
    if "SUBMITIT_EXECUTOR" not in os.environ:
        return None
    return signal.Signals[f"SIG{os.environ.get('SUBMITIT_PREEMPT_SIGNAL', 'USR2')}"]


class StopSignals:
    """SIGTERM (a scheduler's pre-emption, ``kill``) and submitit's pre-emption signal, for the length of a job.

    In training, either checkpoints at the next step and stops (:func:`~wiseft_lab.training.loop.request_stop`);
    outside training SIGTERM stops the job at once. Submitit's signal then goes to submitit's own handler, which
    re-submits the job and exits (:meth:`hand_over`); the requeued job continues the checkpoint (``run``). Either
    way the job writes its error.log and finishes its W&B run first.
    """

    def __init__(self) -> None:
        self.previous: dict[int, Any] = {}
        self.pending: tuple[int, Any] | None = None  # submitit's signal, received during training

    def install(self) -> StopSignals:
        try:
            self.previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, self._terminate)
            preempt = preemption_signal()
            if preempt is not None:
                self.previous[preempt] = signal.signal(preempt, self._preempt)
        except ValueError:  # not the main thread: leave signals alone
            pass
        return self

    def restore(self) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    def _terminate(self, signum, frame) -> None:
        if not request_stop():
            raise Terminated(128 + signum)

    def _preempt(self, signum, frame) -> None:
        if request_stop():
            self.pending = (signum, frame)  # handed over once the step's checkpoint is written
        else:
            self._requeue(signum, frame)

    def _requeue(self, signum, frame) -> None:
        handler = self.previous.get(signum)
        if not callable(handler):
            raise Terminated(128 + signum)
        try:
            handler(signum, frame)  # submitit: pickles the submission again, requeues it, exits
        except SystemExit as err:
            raise Requeued(err.code) from None

    def hand_over(self) -> None:
        """After training stopped for submitit's signal: let submitit requeue the job (raises :class:`Requeued`)."""
        if self.pending is not None:
            self._requeue(*self.pending)


ERROR_LOG = "error.log"


def record_failure(run_dir: Path, err: BaseException, started: float) -> str | None:
    """Write the traceback to the run's ``error.log``, once per job; None, or the reason of the rank that failed first.

    In a data-parallel job one rank's failure brings the others down after it (a closed connection in a collective,
    torchrun's SIGTERM): the first rank to fail writes the record, headed by its rank, and the later failures only
    point to it. An ``error.log`` older than this job (an earlier attempt's, the run resumed since) is replaced.
    """
    world = distributed.current()
    header = (f"rank {world.rank} of {world.size}: " if world.distributed else "") + failure_reason(err)
    text = f"{header}\n\n{''.join(traceback.format_exception(err))}"
    path = run_dir / ERROR_LOG
    if create_exclusive(path, text):
        return None
    if path.stat().st_mtime < started:
        atomic_write_text(path, text, every_rank=True)
        return None
    return path.read_text(errors="replace").splitlines()[0]


def forget_earlier_failure(run_dir: Path, started: float) -> None:
    """A job that completed removes the ``error.log`` of an earlier attempt (pre-empted, resumed since): its run
    log keeps that story, and a completed run with an error record would read as failed."""
    path = run_dir / ERROR_LOG
    if writes_here() and path.is_file() and path.stat().st_mtime < started:
        path.unlink()


def report_failure(run_dir: Path, err: BaseException, logger: Any, job: dict[str, Any]) -> None:
    """Save the traceback and the job's record, say on the console that the run failed, close the logger as failed:
    each even when the one before it cannot (a full disk fails the first and must not silence the others)."""
    first = None
    try:
        first = record_failure(run_dir, err, job["started"])
        where = f"full traceback: {run_dir / ERROR_LOG}"
    except OSError as write_err:
        where = f"the traceback could not be saved: {write_err}"
    try:
        finish_job(run_dir, job, err, reason=first, status=PREEMPTED if isinstance(err, Preempted) else None)
    except OSError as write_err:
        log.error("Could not record the job's end: %s", write_err)
    reason = f"terminated (exit code {err.code})" if isinstance(err, SystemExit) else console_message(err)
    if first is not None:
        reason = f"{first} (rank {distributed.current().rank} stopped after it)"
    log.error("Run failed: %s\n(%s)", reason, where)
    if logger is not None:
        try:
            logger.close(exit_code=exit_code(err))
        except Exception as close_err:  # noqa: BLE001 - reported, the run's own error is what propagates
            log.error("Could not close the experiment logger: %s", close_err)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run one job: lock the run dir, check the config, set up the logger, run the stages, always close the logger."""
    run_dir = run_dir_from_hydra(cfg)
    done = finished_before(cfg.get("resume"), run_dir)
    if done is not None:
        log.info("Job %s finished before (%s): skipped, nothing re-run or re-logged", run_dir, run_dir / "job.json")
        return {"run_dir": run_dir, "skipped": True, "wandb": None, "wandb_url": None}
    lock = RunLock(run_dir)
    rank0 = distributed.world_from_env().is_main  # the other ranks of a job share rank 0's dir (and its lock)
    earlier = None
    try:
        if rank0:
            lock.acquire()  # a second job into this dir stops here, before it writes anything into it
            earlier = read_job(run_dir)  # before start_job replaces it: a requeued job continues
            refuse_finished_in_place(cfg, run_dir, earlier)  # so does a resume in place of a finished run
    except (RunLockedError, ConfigError) as err:
        lock.release()
        log.error("Run refused: %s", err)
        raise
    job = start_job(run_dir) if rank0 else {"started": time.time()}
    seed_everything(int(cfg.seed))
    verbose = is_verbose(cfg)
    if verbose:
        lift_quiet_console()
    logger = source_lock = None
    signals = StopSignals().install()
    try:
        cfg = adopt_pool_split(apply_deprecations(cfg), task_overrides())  # a soup scores on its pool's split
        check_targets(cfg)  # a misspelt option anywhere fails here, before anything is built
        validate(cfg)       # and a value out of its range
        unknown = set(cfg.stages) - set(STAGES)
        if unknown:
            raise ConfigError(f"stages={list(cfg.stages)}: unknown stages {sorted(unknown)}; "
                              f"choose from {list(STAGES)}")
        world = distributed.init(resolve_device(cfg.device))
        device = distributed.rank_device(resolve_device(cfg.device), world)
        run_dir, world_info = start_rank(world, device, run_dir)
        if distributed.broadcast_object(earlier is not None and earlier.get("status") == PREEMPTED) \
                and cfg.get("resume") in (None, False, "false"):
            log.info("%s was pre-empted (job.json): continuing it, as with resume=true", run_dir)
            cfg = OmegaConf.merge(cfg, {"resume": True})
        precision = resolve_precision(cfg.precision, device)
        workers = (resolve_workers(cfg.data.num_workers, "data.num_workers"),
                   resolve_workers(cfg.eval.num_workers, "eval.num_workers"))
        threads = apply_threads(cfg.get("threads"))
        log.info("Device %s, precision %s (precision=%s), DataLoader workers: data %d, eval %d, torch threads %d "
                 "(of %d cores)", device, precision, cfg.precision, *workers, threads, available_cores())
        resume, source_lock = preflight(cfg, run_dir, precision, multirun=sweep_group() is not None,
                                        lock=world.is_main)
        info = write_run_info(run_dir, OmegaConf.to_yaml(cfg, resolve=True), int(cfg.seed),
                              {"run_dir": str(run_dir), "stages": list(cfg.stages), "device": str(device),
                               "precision": precision, "workers": {"data": workers[0], "eval": workers[1]},
                               "threads": threads, **world_info})
        config = {**OmegaConf.to_container(cfg, resolve=True), "resolved_precision": precision,
                  "resolved_workers": {"data": workers[0], "eval": workers[1]}, "resolved_threads": threads,
                  "versions": info["versions"]}
        logger = create_logger(cfg.get("logger") if world.is_main else None, run_dir, config, verbose=verbose,
                               run_id=resumed_wandb_id(cfg.resume, run_dir), **logger_fields(cfg, run_dir))
        with verification(cfg.checkpoints.get("verify", True)):
            outputs = run_stages(RunContext.build(cfg, run_dir, logger, device, precision, workers, resume))
        logger.log_checkpoints(run_dir / CHECKPOINTS)
        logger.close(exit_code=0)
        finish_job(run_dir, job)
        forget_earlier_failure(run_dir, job["started"])
    except BaseException as err:
        report_failure(run_dir, err, logger, job)
        if isinstance(err, Preempted):
            signals.hand_over()  # under submitit: requeued, to continue from the checkpoint just written
        raise
    finally:
        signals.restore()
        if source_lock is not None:
            source_lock.release()
        if rank0:
            lock.release()
    outputs["run_dir"] = run_dir
    outputs["rank"] = distributed.current().rank
    outputs["wandb"] = logger.directory
    outputs["wandb_url"] = logger.url
    return outputs
