"""What a W&B run is called and filed under: job type, name, group and tags, from the stages and the overrides.

W&B users sort runs by ``job_type`` and filter by tags; a sweep's runs share a group. So a run's job type says what
it did (``finetune``, ``merge``, ``evaluate``, ``soup``; ``sweep`` is reserved for a run that summarises a sweep),
its name and tags are the overrides that vary across its sweep (``seed=1 optimizer.lr=0.0003``), and the group names
the task, the swept keys and the sweep directory (``soups: optimizer.lr x seed (2026-01-01_12-00-00)``). The soup
run of a sweep computes the same group from the sweep directory's ``multirun.yaml`` (Hydra writes it when the sweep
starts), so it lands beside its ingredients.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

JOB_TYPES = ("finetune", "merge", "evaluate", "soup", "sweep")
SOUP_KIND = "soups"
MULTIRUN_FILE = "multirun.yaml"
MAX_GROUP = 128  # W&B's limit on a group name
MAX_TAG = 64  # W&B's limit on a tag


def job_type(stages: Sequence[str], merge_kind: str | None) -> str:
    """The first stage that makes something: fine-tuning, else merging (soups apart), else evaluating."""
    if "finetune" in stages or not stages:  # stages=[] describes the fine-tuning it would do
        return "finetune"
    if "merge" in stages:
        return "soup" if merge_kind == SOUP_KIND else "merge"
    return "evaluate"


def swept_keys(overrides: Iterable[str], sweeper_params: Mapping[str, Any] | None = None) -> list[str]:
    """The keys a multirun sweeps over: its sweep overrides (``seed=0,1``, ``range(3)``) and hydra.sweeper.params."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(overrides))
    keys = [o.key_or_group for o in parsed if o.is_sweep_override()]
    return keys + [k for k in (sweeper_params or {}) if k not in keys]


def read_sweep(sweep_dir: str | Path) -> tuple[str | None, list[str]]:
    """(task name, swept keys) of a multirun directory, from its ``multirun.yaml``; (None, []) without one."""
    path = Path(sweep_dir) / MULTIRUN_FILE
    if not path.is_file():
        return None, []
    cfg = OmegaConf.load(path)
    hydra = cfg.get("hydra") or {}
    overrides = OmegaConf.select(cfg, "hydra.overrides.task", default=[]) or []
    params = (hydra.get("sweeper") or {}).get("params") or {}
    return cfg.get("task_name"), swept_keys(overrides, params)


def group_name(sweep_dir: str | Path) -> str:
    """The W&B group of a sweep's runs: task, swept keys and the directory (unique per sweep)."""
    sweep_dir = Path(sweep_dir).resolve()
    task, keys = read_sweep(sweep_dir)
    if task is None:
        return sweep_dir.name
    what = f"{task}: {' x '.join(keys)}" if keys else str(task)
    return f"{what[: MAX_GROUP - len(sweep_dir.name) - 3]} ({sweep_dir.name})"


def varying_overrides(job_overrides: Iterable[str], keys: Sequence[str]) -> list[str]:
    """This job's values of the swept keys, in the sweep's order (``["optimizer.lr=3e-4", "seed=1"]``)."""
    by_key = {}
    for item in job_overrides:
        key, _, _ = item.partition("=")
        by_key[key.lstrip("+~")] = item.lstrip("+~")
    return [by_key[k] for k in keys if k in by_key]


def run_name(task: str, kind: str, varying: Sequence[str], fallback: str) -> str:
    """``demo finetune seed=1 optimizer.lr=0.0003``; a single run ends with its run directory's time instead."""
    return " ".join([task, kind, *(varying or [fallback])])


def run_tags(varying: Sequence[str], choices: Mapping[str, str | None], configured: Iterable[str] = ()) -> list[str]:
    """The configured tags, the swept overrides and the main group choices (``finetune=e2e``), each once."""
    tags = [*configured, *varying, *(f"{group}={option}" for group, option in choices.items() if option)]
    return list(dict.fromkeys(tag[:MAX_TAG] for tag in tags))
