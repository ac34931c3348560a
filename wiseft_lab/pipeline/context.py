"""The run context: built once per job from the composed config, then passed down to every stage.

It holds the config, the run directory, the device and the *resolved* precision, the logger, the typed method
and merge strategy (instantiated, so a bad option fails before any model is built), the model loader, and the
task data: the training set and its held-out split are built once (untransformed; each consumer sees them
through its own transform), the evaluation suites on first use.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

import wiseft_lab.merging  # noqa: F401  (registers the merge strategies)
import wiseft_lab.training.methods  # noqa: F401  (registers the fine-tuning methods)
from wiseft_lab.config import ConfigError, instantiate_checked
from wiseft_lab.data.base import TaskData
from wiseft_lab.data.class_match import match_classes
from wiseft_lab.data.class_subsets import subsample_classes
from wiseft_lab.data.datasets import readable_subset, with_transform
from wiseft_lab.data.eval_sets import EvalSets, eval_sets
from wiseft_lab.data.splits import LabeledSubset, hash_order, train_and_holdout
from wiseft_lab.evaluation.suite import HOLDOUT, EvalSuite
from wiseft_lab.merging.registry import MergeStrategy
from wiseft_lab.models.loader import ModelLoader
from wiseft_lab.pipeline.guards import ResumePlan
from wiseft_lab.reporting.run_info import update_run_info
from wiseft_lab.reporting.wandb_names import group_name
from wiseft_lab.training.job import FinetuneMethod

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
TRAIN_SUBSET = "train"


def digest(*parts: Any) -> str:
    return hashlib.sha1("\n".join(map(str, parts)).encode()).hexdigest()[:16]


def weights_identity(path: str | None) -> str:
    """Tag, or path + size + mtime for local files (a changed file invalidates cached features)."""
    if path and Path(path).exists():
        stat = Path(path).stat()
        return f"{path}:{stat.st_size}:{stat.st_mtime_ns}"
    return str(path)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def available_cores() -> int:
    """The cores this process may run on (a Slurm or cgroup limit, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def resolve_workers(value: int | str, key: str) -> int:
    """DataLoader workers: ``auto`` leaves one core to the main process and caps at 8 (one core: none).

    Why: more workers than cores only costs start-up time (4 workers on 2 cores doubled the first step) and makes
    torch warn on every run; decoding rarely needs more than 8 processes per GPU.
    """
    if value == "auto":
        return min(8, available_cores() - 1)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{key}={value!r}: give a number of DataLoader workers >= 0, or auto")
    return value


def apply_threads(value: int | None) -> int:
    """Cap torch's CPU threads at ``value`` (None: keep torch's choice) and return the count the job runs with.

    Why: torch starts as many threads as there are cores in every process; jobs that share a machine without a cap
    (submitit's local executor starts them all at once) oversubscribe the cores: a 2-job sweep on 2 cores took 89 s,
    41 s with one thread each (``experiments/bench_launchers.py``).
    """
    if value is not None:
        torch.set_num_threads(value)
    return torch.get_num_threads()


def hydra_choice(group: str) -> str | None:
    """The option chosen for a config group (``data``: ``dtd``), when running under Hydra."""
    return HydraConfig.get().runtime.choices.get(group) if HydraConfig.initialized() else None


def task_overrides() -> list[str]:
    """The command line's overrides of this job (``data.holdout_fraction=0.1``; none outside Hydra)."""
    return [str(o) for o in HydraConfig.get().overrides.task] if HydraConfig.initialized() else []


def sweep_group() -> str | None:
    """Jobs of one multirun share a W&B group named after the sweep (None outside a multirun)."""
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return group_name(HydraConfig.get().sweep.dir)
    return None


@dataclass
class TaskSplits:
    """The fine-tuning set and its held-out split, untransformed (consumers use ``data.datasets.with_transform``)."""

    train: TaskData
    holdout: TaskData | None


@dataclass
class RunContext:
    cfg: DictConfig
    run_dir: Path
    logger: Any
    device: torch.device
    precision: str              # resolved: bf16 | fp32
    method: FinetuneMethod      # the finetune config, typed
    strategy: MergeStrategy     # the merge config, typed
    models: ModelLoader
    data_workers: int = 0       # resolved DataLoader workers (``data.num_workers``, ``eval.num_workers``)
    eval_workers: int = 0
    resume: ResumePlan | None = None  # the checked plan of what training continues (pipeline/guards.py)
    _task: TaskSplits | None = field(default=None, repr=False)
    _eval_sets: EvalSets | None = field(default=None, repr=False)
    _suite: EvalSuite | None = field(default=None, repr=False)
    _holdout: EvalSuite | None = field(default=None, repr=False)

    @classmethod
    def build(cls, cfg: DictConfig, run_dir: Path, logger: Any, device: torch.device, precision: str,
              workers: tuple[int, int] = (0, 0), resume: ResumePlan | None = None) -> RunContext:
        """``precision`` and ``workers`` (data, eval) are resolved (:func:`wiseft_lab.precision.resolve_precision`,
        :func:`resolve_workers`); ``resume`` is the checked plan of :func:`wiseft_lab.pipeline.guards.preflight`."""
        model = cfg.model
        return cls(cfg=cfg, run_dir=run_dir, logger=logger, device=device, precision=precision, resume=resume,
                   method=instantiate_checked(cfg.finetune, "finetune"),
                   strategy=instantiate_checked(cfg.merge, "merge"),
                   models=ModelLoader(model.arch, model.pretrained, device, model.get("cache_dir"),
                                      model.get("tokenizer")),
                   data_workers=workers[0], eval_workers=workers[1])

    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / CHECKPOINTS

    @property
    def seed(self) -> int:
        return int(self.cfg.seed)

    def task(self) -> TaskSplits:
        """The data config minus the held-out split, optionally k-shot: built once."""
        if self._task is None:
            data = self.cfg.data
            full = subsample_classes(instantiate(data.dataset)(transform=None), data.get("classes"))
            if data.get("skip_corrupt"):
                full, skipped = readable_subset(full)
                if skipped:
                    log.warning("data.skip_corrupt=true: skipped %d unreadable images, e.g. %s", len(skipped),
                                skipped[0])
                update_run_info(self.run_dir, {"skipped_images": {"count": len(skipped), "files": skipped[:1000]}})
            train, held = train_and_holdout(full, float(data.get("holdout_fraction") or 0.0), data.get("shots"),
                                            seed=self.seed, holdout_seed=int(data.get("holdout_seed", 0)),
                                            holdout_file=data.get("holdout_file"),
                                            strict_shots=data.get("short_classes", "error") == "error")
            self._task = TaskSplits(train, held)
        return self._task

    def holdout_suite(self) -> EvalSuite | None:
        """The held-out split as a one-set suite (decoded once, cached across a multirun's jobs), or None."""
        if self._holdout is None:
            held = self.task().holdout
            if held is None:
                return None
            transform = self.models.bundle().preprocess_val
            # the split depends on data.holdout_seed, not on the training seed: a sweep's jobs share one cache entry
            key = digest(HOLDOUT, OmegaConf.to_yaml(self.cfg.data, resolve=True),
                         self.cfg.data.get("holdout_seed", 0), repr(transform))
            self._holdout = EvalSuite.build(
                HOLDOUT, {HOLDOUT: lambda transform: with_transform(held, transform)}, transform,
                cache_keys={HOLDOUT: key}, max_cache_bytes=float(self.cfg.eval.cache_max_gb) * 1e9,
                num_workers=self.eval_workers, device=self.device,
                cache_device=self.cfg.eval.cache_device)
        return self._holdout

    def eval_sets(self) -> EvalSets:
        """The sets of ``eval`` (datasets, short-form shifts, corruption groups) as builders: built once."""
        if self._eval_sets is None:
            self._eval_sets = eval_sets(self.cfg.eval)
        return self._eval_sets

    def check_eval_classes(self, head: Sequence[str]) -> None:
        """Match every eval set's class names to ``head``'s (building the sets untransformed: no image is read);
        raises :class:`~wiseft_lab.data.class_match.ClassMatchError` listing the names."""
        sets = self.eval_sets()
        for name, builder in sets.builders.items():
            match_classes(builder(transform=None), head, name=name, partial=name in sets.partial)

    def train_subset_suite(self, n_examples: int, seed: int = 0) -> EvalSuite:
        """A fixed subset of the fine-tuning split (``n_examples``, chosen by ``seed`` alone) as a one-set suite
        ``train``, seen through the eval transform: what the error landscape's training loss is measured on."""
        train = self.task().train
        order = hash_order(np.arange(len(train.dataset)), seed, "train_subset")[:n_examples]
        subset = dataclasses.replace(train, dataset=LabeledSubset(train.dataset, np.sort(order)))
        transform = self.models.bundle().preprocess_val
        return EvalSuite.build(TRAIN_SUBSET, {TRAIN_SUBSET: lambda transform: with_transform(subset, transform)},
                               transform, max_cache_bytes=float(self.cfg.eval.cache_max_gb) * 1e9,
                               num_workers=self.eval_workers)

    def suite(self, head: Sequence[str]) -> EvalSuite:
        """The evaluation suite of ``eval``, every set matched by class name to ``head`` (the evaluated head's
        class names) and decoded once per process when it fits the budget."""
        if self._suite is None:
            ev, sets = self.cfg.eval, self.eval_sets()
            transform = self.models.bundle().preprocess_val
            builders = {name: functools.partial(_matched, builder, head=tuple(head), name=name,
                                                partial=name in sets.partial)
                        for name, builder in sets.builders.items()}
            keys = ({name: digest(identity, repr(transform), *head) for name, identity in sets.identities.items()}
                    if ev.cache else None)
            self._suite = EvalSuite.build(ev.reference, builders, transform, cache_keys=keys,
                                          max_cache_bytes=float(ev.cache_max_gb) * 1e9,
                                          num_workers=self.eval_workers, device=self.device,
                                          cache_device=ev.cache_device, groups=sets.groups)
        return self._suite


def _matched(builder, *, transform, head: Sequence[str], name: str, partial: bool) -> TaskData:
    return match_classes(builder(transform=transform), head, name=name, partial=partial)
