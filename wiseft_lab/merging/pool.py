"""Ingredient pools: the checkpoints a soup is made of, found in a sweep directory, a glob or a list.

``merge.pool`` is a Hydra multirun directory (every job's ``checkpoints/<merge.checkpoint>``), a glob of checkpoints,
or a list of either. Jobs without a checkpoint (failed, unfinished) are skipped, saying which and why.
"""

from __future__ import annotations

import glob
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from wiseft_lab.config import ConfigError
from wiseft_lab.evaluation.suite import HOLDOUT
from wiseft_lab.merging.registry import ModelEntry
from wiseft_lab.models.checkpoint import META_FILE, is_checkpoint, load_state_dict, read_meta
from wiseft_lab.reporting.loggers import wandb_run_id
from wiseft_lab.reporting.wandb_names import group_name
from wiseft_lab.sweeps.summary import differing

log = logging.getLogger(__name__)

HOLDOUT_KEY = f"{HOLDOUT}/top1"
SOUP_KIND = "soups"


@dataclass
class Ingredient:
    name: str
    checkpoint: Path                 # directory with model.safetensors + meta.json
    holdout: float | None            # held-out top-1 recorded by its fine-tuning job
    run_dir: Path | None = None
    overrides: list[str] = field(default_factory=list)
    wandb_run: str | None = None
    meta_config: dict[str, Any] | None = None

    def record(self) -> dict[str, Any]:
        return {"name": self.name, "checkpoint": str(self.checkpoint), HOLDOUT_KEY: self.holdout,
                "run_dir": str(self.run_dir) if self.run_dir else None, "overrides": self.overrides,
                "wandb_run_id": self.wandb_run}


def _is_run_dir(path: Path) -> bool:
    return path.is_dir() and any((path / n).exists() for n in ("config.yaml", ".hydra", "checkpoints", "error.log"))


def _is_multirun_dir(path: Path) -> bool:
    return path.is_dir() and ((path / "multirun.yaml").is_file()
                              or any(_is_run_dir(c) for c in path.iterdir() if not c.name.startswith(".")))


def _job_sort_key(path: Path):
    return (0, int(path.name), "") if path.name.isdigit() else (1, 0, path.name)


def _failure(run_dir: Path, checkpoint: str) -> str:
    error = run_dir / "error.log"
    if error.is_file():
        lines = [line for line in error.read_text(errors="replace").splitlines() if line.strip()]
        return f"the job failed ({lines[-1].strip() if lines else 'see the log'}); see {error}"
    if (run_dir / "checkpoints" / checkpoint).is_dir():
        return f"checkpoints/{checkpoint} is incomplete (no {META_FILE}: killed while saving, or still running)"
    return f"no checkpoints/{checkpoint} (still running, killed, or not a fine-tuning run)"


def _overrides(run_dir: Path) -> list[str]:
    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return []
    try:
        return [str(o) for o in OmegaConf.load(path)]
    except Exception:  # noqa: BLE001 - a label, never worth failing over
        return []


def _ingredient(checkpoint: Path, run_dir: Path | None) -> Ingredient:
    meta = read_meta(checkpoint)
    holdout = meta.metrics.get(HOLDOUT_KEY)
    return Ingredient(name="", checkpoint=checkpoint, holdout=None if holdout is None else float(holdout),
                      run_dir=run_dir, overrides=_overrides(run_dir) if run_dir else [],
                      wandb_run=wandb_run_id(run_dir) if run_dir else None, meta_config=meta.config)


def _from_path(path: Path, checkpoint: str, found: list[Ingredient], skipped: list[dict[str, str]]) -> None:
    if path.is_file() and path.suffix == ".safetensors":
        path = path.parent
    if is_checkpoint(path):
        run_dir = path.parent.parent if path.parent.name == "checkpoints" else None
        found.append(_ingredient(path, run_dir))
    elif _is_run_dir(path) and not _is_multirun_dir(path):
        target = path / "checkpoints" / checkpoint
        if is_checkpoint(target):
            found.append(_ingredient(target, path))
        else:
            skipped.append({"source": str(path), "reason": _failure(path, checkpoint)})
    elif _is_multirun_dir(path):
        jobs = sorted((c for c in path.iterdir() if _is_run_dir(c)), key=_job_sort_key)  # not the sweep's wandb/
        for job in jobs:
            target = job / "checkpoints" / checkpoint
            if is_checkpoint(target):
                found.append(_ingredient(target, job))
            else:
                skipped.append({"source": str(job), "reason": _failure(job, checkpoint)})
    elif not path.exists():
        skipped.append({"source": str(path), "reason": "does not exist"})
    else:
        skipped.append({"source": str(path), "reason": "not a checkpoint, run or multirun directory"})


def _name(ingredient: Ingredient, depth: int) -> str:
    base = ingredient.run_dir if ingredient.run_dir is not None else ingredient.checkpoint
    return "/".join(base.parts[-depth:])


def resolve_pool(pool: Any, checkpoint: str = "finetuned") -> tuple[list[Ingredient], list[dict[str, str]]]:
    """The ingredients of ``merge.pool`` (in job order) and the sources that were skipped, with the reason."""
    if pool is None or pool == "" or pool == "???":
        raise ValueError("merge.pool is not set: give a multirun directory (merge.pool=outputs/multirun/<task>/"
                         "<time>), a glob of checkpoints, or a list (merge.pool=[dir_a,dir_b]).")
    specs = list(pool) if isinstance(pool, (list, tuple, ListConfig)) else [pool]
    found: list[Ingredient] = []
    skipped: list[dict[str, str]] = []
    for spec in (str(s) for s in specs):
        if glob.has_magic(spec):
            matches = sorted(glob.glob(spec))
            if not matches:
                skipped.append({"source": spec, "reason": "the glob matches nothing"})
            for match in matches:
                _from_path(Path(match), checkpoint, found, skipped)
        else:
            _from_path(Path(spec), checkpoint, found, skipped)
    unique: dict[Path, Ingredient] = {}
    for ingredient in found:
        unique.setdefault(ingredient.checkpoint.resolve(), ingredient)
    found = list(unique.values())
    depth = 1
    while depth < 8 and len({_name(i, depth) for i in found}) < len(found):
        depth += 1
    for ingredient in found:
        ingredient.name = _name(ingredient, depth)
    return found, skipped


def varying_overrides(ingredients: Sequence[Ingredient]) -> dict[str, str]:
    """Name -> the overrides that differ across the pool (e.g. ``optimizer.lr=1e-05 seed=2``), for labels."""
    varying = differing([i.overrides for i in ingredients])
    return {i.name: " ".join(v) for i, v in zip(ingredients, varying, strict=True)}


def pool_group(cfg: DictConfig) -> str | None:
    """W&B group of a soup run: its pool's sweep directory name (the group of the ingredient runs)."""
    merge = cfg.get("merge") or {}
    pool = merge.get("pool") if merge.get("kind") == SOUP_KIND else None
    if isinstance(pool, str) and not glob.has_magic(pool) and _is_multirun_dir(Path(pool)):
        return group_name(pool)
    return None


def pool_group_of(pool: Sequence[Ingredient]) -> str | None:
    parents = {i.run_dir.parent.resolve() for i in pool if i.run_dir is not None}
    return group_name(next(iter(parents))) if len(parents) == 1 and _is_multirun_dir(next(iter(parents))) else None


def resolve_pretrained(pretrained: str | None, zeroshot: Path | None, pool: list[Ingredient]) -> Path:
    """``merge.pretrained``, else the run's zero-shot endpoint, else ``<first ingredient>/../zeroshot``."""
    candidates = [Path(pretrained)] if pretrained else [
        *([zeroshot] if zeroshot is not None else []), pool[0].checkpoint.parent / "zeroshot"]
    for path in candidates:
        if is_checkpoint(path):
            return path
    raise FileNotFoundError(f"No pre-trained (zero-shot) checkpoint (looked at {[str(p) for p in candidates]}): set "
                            "merge.pretrained=<checkpoint dir> or checkpoints.zeroshot=<dir>.")


def ingredient_entries(pool: list[Ingredient]) -> list[ModelEntry]:
    """Every ingredient as a model to evaluate (loaded when its turn comes)."""
    return [ModelEntry("ingredient", None, lambda c=i.checkpoint: load_state_dict(c),
                       extra={"ingredient": i.name, "n_ingredients": 1},
                       tag=f"ingredient_{i.name.replace('/', '_')}") for i in pool]


# ------------------------------------------------------------------------------------------------ held-out split
# What decides the held-out split a soup is scored on (data.splits.train_and_holdout), with the defaults a config
# that does not set them means.
SPLIT_KEYS: dict[str, Any] = {"dataset": None, "classes": None, "holdout_fraction": 0.0, "holdout_seed": 0}


def recorded_split(ingredient: Ingredient) -> dict[str, Any] | None:
    """The split keys of the data config its fine-tuning job recorded in ``meta.json`` (None if none recorded)."""
    data = (ingredient.meta_config or {}).get("data")
    return {k: data.get(k, d) for k, d in SPLIT_KEYS.items()} if isinstance(data, dict) else None


def _shown(split: Mapping[str, Any], keys: Sequence[str]) -> str:
    return ", ".join(f"data.{k}={split[k]}" for k in keys)


def pool_split(pool: Sequence[Ingredient]) -> dict[str, Any] | None:
    """The held-out split every ingredient was fine-tuned with; a pool whose ingredients differ is refused."""
    known = [(i.name, s) for i in pool if (s := recorded_split(i)) is not None]
    if not known:
        return None
    first_name, first = known[0]
    for name, split in known[1:]:
        differ = [k for k in SPLIT_KEYS if split[k] != first[k]]
        if differ:
            raise ConfigError(
                f"The soup's ingredients were fine-tuned on different held-out splits: {first_name} with "
                f"{_shown(first, differ)}, {name} with {_shown(split, differ)}. A soup is chosen and scored on one "
                "split: give merge.pool the ingredients of one data config.")
    return first


def explicit_data_keys(overrides: Sequence[str]) -> set[str]:
    """The split keys a command line sets (``data=<option>`` sets the data set; ``data.<key>...=`` that key)."""
    keys: set[str] = set()
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key == "data":
            keys |= {"dataset", "classes"}
        elif key.startswith("data."):
            keys.add(key.split(".")[1])
    return keys & set(SPLIT_KEYS)


def adopt_pool_split(cfg: DictConfig, overrides: Sequence[str]) -> DictConfig:
    """A soup run's data config with the split keys of its pool's recorded configs, so it scores the ingredients on
    the split they held out. A value set on the command line that differs is an error naming both
    (``merge.rescore_holdout=true`` keeps it: every ingredient is then re-scored on this run's split)."""
    merge = cfg.get("merge") or {}
    if merge.get("kind") != SOUP_KIND or merge.get("pool") in (None, "", "???") or "data" not in cfg:
        return cfg
    split = pool_split(resolve_pool(merge.pool, str(merge.get("checkpoint", "finetuned")))[0])
    if split is None:
        return cfg
    mine = {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
            for k, v in ((k, cfg.data.get(k, d)) for k, d in SPLIT_KEYS.items())}
    differ = [k for k in SPLIT_KEYS if mine[k] != split[k]]
    explicit = [k for k in differ if k in explicit_data_keys(overrides)]
    if explicit and not merge.get("rescore_holdout"):
        raise ConfigError(
            f"This soup run sets {_shown(mine, explicit)}, but its pool's ingredients were fine-tuned with "
            f"{_shown(split, explicit)}: their held-out accuracies belong to that split. Drop the override (the "
            "split is taken from the pool), or add merge.rescore_holdout=true to re-score every ingredient on "
            "this run's split.")
    adopted = [k for k in differ if k not in explicit]
    if not adopted:
        return cfg
    cfg = cfg.copy()
    with open_dict(cfg):
        for key in adopted:
            cfg.data[key] = split[key]
    log.info("Held-out split taken from the pool's recorded configs: %s", _shown(split, adopted))
    return cfg
