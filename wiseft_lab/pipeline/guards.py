"""Checks a job makes before it computes anything: what it resumes, whether that run's math matches, whose
checkpoints fit.

A resume never surprises:

* ``resume=<run dir>`` or ``resume=true`` continues a run's last finished epoch. Another run is never written to:
  its epoch checkpoint is linked (or copied) into this run's ``checkpoints/`` and training goes on here; only a run
  dir re-used as is (``hydra.run.dir``, a multirun's job dir) continues in place, and a finished one (its job
  completed) is refused before the job writes into it (:func:`refuse_finished_in_place`). A job stopped after its
  fine-tuning (pre-empted or failed while evaluating) is not finished: it continues in place.
* The saved config of the run being resumed is compared with the requested one: a change to what alters the math
  (:data:`MATH_KEYS`) is refused with a short diff unless ``resume_allow`` lists the key (or a group above it); the
  allowed new values then take effect (the loop re-applies the configured optimiser hyperparameters and
  recomputes the schedule for the new epochs).
* The resumed run is locked for the job (:mod:`wiseft_lab.runlock`): of two jobs resuming it, one does.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from wiseft_lab.config import ConfigError
from wiseft_lab.io import read_json, writes_here
from wiseft_lab.models.checkpoint import META_FILE, check_architecture, read_meta
from wiseft_lab.models.interop import is_open_clip_source
from wiseft_lab.runlock import RunLock
from wiseft_lab.sweeps.jobs import COMPLETED
from wiseft_lab.training.loop import find_interrupted_run, latest_checkpoint_dir, record_resumed_from

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
# What a resumed run must share with its original: a difference here changes the numbers it produces.
MATH_KEYS = ("model", "data", "finetune", "optimizer", "scheduler", "seed", "precision", "resolved_precision")
# ... except these, which change where or how fast, not what, or guards that either change nothing or fail loudly
# (a run saved before a guard existed lacks its key).
NEUTRAL_KEYS = ("model.cache_dir", "data.num_workers", "data.short_classes", "data.skip_corrupt",
                "finetune.keep_checkpoints")
MAX_DIFF_LINES = 12


@dataclass(frozen=True)
class ResumePlan:
    """Continue ``epoch_dir`` (the newest finished epoch of ``source``'s checkpoints); ``in_place``: source is this
    run's own dir."""

    source: Path
    epoch_dir: Path
    in_place: bool


def _finished(run_dir: Path, job: Mapping[str, Any] | None) -> bool:
    """Whether the run completed: its ``job.json`` (``job``, read before this job replaced it) says so; a run
    without one (older versions) when its fine-tuned checkpoint is there."""
    if job is not None:
        return job.get("status") == COMPLETED
    return (run_dir / CHECKPOINTS / "finetuned" / META_FILE).is_file()


def continues_in_place(cfg: DictConfig, run_dir: Path) -> bool:
    """Whether ``resume`` would continue this run dir's own checkpoints (what :func:`plan_resume` plans in place)."""
    resume = cfg.get("resume")
    if resume in (None, False, "false"):
        return False
    if resume in (True, "true"):
        return latest_checkpoint_dir(run_dir / CHECKPOINTS) is not None
    source = Path(str(resume))
    source = source.parent if source.name == CHECKPOINTS else source
    return source.resolve() == run_dir.resolve()


def refuse_finished_in_place(cfg: DictConfig, run_dir: Path, job: Mapping[str, Any] | None) -> None:
    """Refuse to continue a finished run in its own dir; called before the job writes anything there (its
    ``job.json`` and ``error.log`` included), with ``job`` the record the run left."""
    if continues_in_place(cfg, run_dir) and _finished(run_dir, job):
        raise ConfigError(f"resume: {run_dir} holds a finished run, which is never modified. Continue it in a "
                          f"new run dir: resume={run_dir} (e.g. more epochs, with resume_allow=[finetune.epochs]).")


def plan_resume(cfg: DictConfig, run_dir: Path, multirun: bool) -> ResumePlan | None:
    """Which run's last epoch to continue (see module doc), or None to train from scratch."""
    resume = cfg.get("resume")
    if resume in (None, False, "false"):
        return None
    if resume in (True, "true"):
        own = latest_checkpoint_dir(run_dir / CHECKPOINTS)
        if own is not None or multirun:
            return _in_place(run_dir, own) if own is not None else None
        source = find_interrupted_run(run_dir.parent, exclude=run_dir)
        if source is None:
            log.warning("resume=true but no interrupted run of task %r found: training from scratch", cfg.task_name)
            return None
        log.info("resume=true: continuing the interrupted run %s", source)
    else:
        source = Path(str(resume))
        if source.name == CHECKPOINTS:  # resume=<run>/checkpoints works too
            source = source.parent
    epoch_dir = latest_checkpoint_dir(source / CHECKPOINTS)
    if epoch_dir is None:
        raise ConfigError(f"resume={resume}: no finished epoch checkpoint under {source / CHECKPOINTS}")
    if source.resolve() == run_dir.resolve():
        return _in_place(run_dir, epoch_dir)
    return ResumePlan(source, epoch_dir, in_place=False)


def _in_place(run_dir: Path, epoch_dir: Path) -> ResumePlan:
    """Continue this run dir's own epoch (a finished run was refused before the job started: run.py)."""
    return ResumePlan(run_dir, epoch_dir, in_place=True)


def flatten(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(dotted key, leaf)`` of a nested mapping; lists are leaves."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            yield from flatten(value, f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix, node


def _covered(key: str, prefixes: Sequence[str]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def math_diff(saved: Mapping[str, Any], requested: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """``(key, saved, requested)`` for every math-altering leaf that differs (absent: None)."""
    old, new = dict(flatten(saved)), dict(flatten(requested))
    keys = [k for k in dict.fromkeys([*old, *new]) if _covered(k, MATH_KEYS) and not _covered(k, NEUTRAL_KEYS)]
    return [(k, old.get(k), new.get(k)) for k in keys if old.get(k) != new.get(k)]


def saved_config(run_dir: Path) -> dict[str, Any] | None:
    """The resolved config a run saved, with the precision it resolved to (None for a run without one)."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        return None
    config = yaml.safe_load(path.read_text()) or {}
    info = run_dir / "run_info.json"
    if info.is_file():
        config["resolved_precision"] = read_json(info).get("precision")
    return config


def check_resume_config(plan: ResumePlan, cfg: DictConfig, precision: str) -> list[tuple[str, Any, Any]]:
    """Refuse a resume whose math-altering config differs from the saved one, unless ``resume_allow`` lists it;
    returns the allowed differences (they take effect)."""
    saved = saved_config(plan.source)
    if saved is None:
        log.warning("resume: %s has no config.yaml to compare with; continuing unchecked", plan.source)
        return []
    requested = {**OmegaConf.to_container(cfg, resolve=True), "resolved_precision": precision}
    allowed = [str(k) for k in cfg.get("resume_allow") or []]
    diff = math_diff(saved, requested)
    refused = [d for d in diff if not _covered(d[0], allowed)]
    if refused:
        lines = [f"  {key}: {old!r} -> {new!r}" for key, old, new in refused[:MAX_DIFF_LINES]]
        if len(refused) > MAX_DIFF_LINES:
            lines.append(f"  ... and {len(refused) - MAX_DIFF_LINES} more")
        keys = ",".join(key for key, _, _ in refused)
        raise ConfigError(f"resume: this config changes what {plan.source} was trained with (saved -> requested):\n"
                          + "\n".join(lines) + f"\nUse the saved values, or allow the change: resume_allow=[{keys}]")
    for key, old, new in diff:
        log.warning("resume: %s changes from %r to %r (allowed by resume_allow)", key, old, new)
    return diff


def adopt(plan: ResumePlan, checkpoint_dir: Path) -> None:
    """Bring the epoch to continue into this run's checkpoints (hard links, or copies across file systems); the
    source run is only read. Every later write replaces files (atomic rename), so the links never alter it."""
    if plan.in_place or not writes_here():
        return
    target = checkpoint_dir / plan.epoch_dir.name
    target.mkdir(parents=True, exist_ok=True)
    for item in sorted(plan.epoch_dir.iterdir()):
        if item.is_file() and not (target / item.name).exists():
            try:
                os.link(item, target / item.name)
            except OSError:
                shutil.copy2(item, target / item.name)
    record_resumed_from(checkpoint_dir, plan.source, plan.epoch_dir)


def training_dir(plan: ResumePlan | None, checkpoint_dir: Path) -> Path:
    """Where the trainer finds the checkpoint to resume: this run's (where :func:`adopt` put it); a rank above 0,
    which writes nothing and may look before rank 0 has linked it, reads the source run's directly."""
    if plan is None or plan.in_place or writes_here():
        return checkpoint_dir
    return plan.epoch_dir.parent


def check_input_architectures(cfg: DictConfig, stages: Sequence[str], resume: ResumePlan | None) -> None:
    """Every checkpoint the job will load is of the architecture it builds, checked before any stage runs: with a
    finetune stage, ``model.arch`` (and the resumed epoch); without, the given checkpoints share the first one's."""
    if "finetune" in stages:
        inputs = {"resume": resume.epoch_dir} if resume is not None else {}
        expected = str(cfg.model.arch)
    else:
        # open_clip files are imported as model.arch when their stage needs them (models/interop.py)
        inputs = {f"checkpoints.{name}": Path(str(path)) for name in ("zeroshot", "finetuned")
                  if (path := cfg.checkpoints.get(name)) and not is_open_clip_source(Path(str(path)))}
        if not inputs:
            return
        expected = read_meta(next(iter(inputs.values()))).arch
    check_architecture(expected, inputs)


def preflight(cfg: DictConfig, run_dir: Path, precision: str, multirun: bool,
              lock: bool = True) -> tuple[ResumePlan | None, RunLock | None]:
    """What the job resumes (config checked, the source run locked while it is read) and whose checkpoints fit;
    the caller releases the returned lock when the job ends. ``lock=False`` on the ranks above 0 of a
    data-parallel job: rank 0 holds the lock for them all."""
    plan = plan_resume(cfg, run_dir, multirun)
    if plan is not None:
        check_resume_config(plan, cfg, precision)
    check_input_architectures(cfg, list(cfg.stages), plan)
    if plan is None or plan.in_place or not lock:
        return plan, None
    return plan, RunLock(plan.source, purpose=f"resumed by {run_dir}").acquire()
