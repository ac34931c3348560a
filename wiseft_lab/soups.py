"""The soup merges: ``merge=uniform_soup | greedy_soup | learned_soup | fisher | soups`` over a pool of checkpoints.

The pool (``merge.pool``) is a Hydra multirun directory (every job's ``checkpoints/<merge.checkpoint>``), a glob
of checkpoints, or a list of either. Jobs without a checkpoint (failed, unfinished) are skipped, saying which
and why. Every recipe of ``merge.recipes`` makes one soup; the baselines (the best single ingredient by
held-out accuracy, every other ingredient for the plot, the output-space ensemble, the WiSE-FT curve of the
best ingredient) are evaluated next to them. Artifacts under ``<run>/soups/``: ``pool.json``, the greedy
trace and ingredient list, the learned coefficients, and ``soups.json`` that the report step turns into
``soups.md``/``soups.csv``/``soups.png``. Soups are saved as checkpoints under ``<run>/checkpoints/<soup>``.

The pure weight-space code lives in :mod:`wiseft_lab.weight_space` (``soups``, ``learned``, ``fisher``,
``ensemble``); this module resolves the pool, feeds it the held-out data and records what happened.
"""

from __future__ import annotations

import glob
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from wiseft_lab.evaluation.suite import HOLDOUT
from wiseft_lab.io import write_csv, write_json, write_jsonl, write_safetensors
from wiseft_lab.merging import MergeContext, ModelEntry, cached_loader, register_merge
from wiseft_lab.models.checkpoint import META_FILE, is_checkpoint, load_state_dict, read_meta, save_state_checkpoint
from wiseft_lab.weight_space.ensemble import OutputEnsemble
from wiseft_lab.weight_space.fisher import FISHER_FLOOR, diagonal_fisher, fisher_merge
from wiseft_lab.weight_space.interpolate import interpolate
from wiseft_lab.weight_space.learned import LearnedSoupConfig, learned_soup
from wiseft_lab.weight_space.soups import StateDict, check_pool, greedy_order, greedy_soup, uniform_soup

log = logging.getLogger(__name__)

HOLDOUT_KEY = f"{HOLDOUT}/top1"
SOUP_KINDS = ("uniform_soup", "greedy_soup", "learned_soup", "fisher", "soups")
# recipe -> row label in results.jsonl / soups.md
RECIPES = {"uniform": "uniform_soup", "greedy": "greedy_soup", "learned": "learned_soup",
           "learned_per_layer": "learned_soup_per_layer", "fisher": "fisher_soup"}
SOUPS_DIR = "soups"
SUMMARY_FILE = "soups.json"


# ----------------------------------------------------------------------------------------------- the pool
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


def _wandb_run_id(run_dir: Path) -> str | None:
    runs = sorted(p for p in run_dir.glob("wandb/*run-*") if p.is_dir())
    return runs[-1].name.rsplit("-", 1)[-1] if runs else None


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
    holdout = (meta.get("metrics") or {}).get(HOLDOUT_KEY)
    return Ingredient(name="", checkpoint=checkpoint, holdout=None if holdout is None else float(holdout),
                      run_dir=run_dir, overrides=_overrides(run_dir) if run_dir else [],
                      wandb_run=_wandb_run_id(run_dir) if run_dir else None, meta_config=meta.get("config"))


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
        jobs = sorted((c for c in path.iterdir() if c.is_dir() and not c.name.startswith(".")), key=_job_sort_key)
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
    common = set.intersection(*(set(i.overrides) for i in ingredients)) if ingredients else set()
    return {i.name: " ".join(o for o in i.overrides if o not in common) for i in ingredients}


def pool_group(cfg: DictConfig) -> str | None:
    """W&B group of a soup run: its pool's sweep directory name (the group of the ingredient runs)."""
    merge = cfg.get("merge") or {}
    pool = merge.get("pool") if merge.get("kind") in SOUP_KINDS else None
    if isinstance(pool, str) and not glob.has_magic(pool) and _is_multirun_dir(Path(pool)):
        return Path(pool).resolve().name
    return None


# ----------------------------------------------------------------------------------------------- held-out data
def shuffled_batches(prepared, batch_size: int, device: torch.device, seed: int) -> Callable[[int], Iterator]:
    """``batches(epoch)``: the held-out split in a new seeded order every epoch, normalised, on ``device``."""
    def batches(epoch: int):
        generator = torch.Generator().manual_seed(seed * 1000 + epoch)
        for images, labels in prepared.batches(batch_size, device, generator):
            yield images, labels.to(device)
    return batches


# ----------------------------------------------------------------------------------------------- the stage
@dataclass
class SoupJob:
    ctx: MergeContext
    pool: list[Ingredient]
    holdout: list[float | None]
    out_dir: Path
    template: Path
    score: Callable[[StateDict], float] | None
    prepared: Any  # the held-out PreparedSet, or None
    summary: dict[str, Any]

    @property
    def cfg(self) -> DictConfig:
        return self.ctx.cfg

    @property
    def sources(self) -> list[Path]:
        return [i.checkpoint for i in self.pool]

    @property
    def names(self) -> list[str]:
        return [i.name for i in self.pool]

    def need_holdout(self, what: str) -> None:
        if self.prepared is None:
            raise ValueError(f"{what} needs a held-out split: set data.holdout_fraction (the value the ingredients "
                             "were fine-tuned with, e.g. 0.02) so that this run carves the same split.")

    def need_linear_head(self, what: str) -> None:
        if read_meta(self.template).get("head") == "text":
            raise ValueError(f"{what} is not supported for checkpoints whose head is derived from the text tower "
                             "(the head of a mixed model must be rebuilt); use the uniform or greedy soup.")

    def skeleton(self) -> torch.nn.Module:
        return self.ctx.skeleton(self.template)


@dataclass
class SoupOutcome:
    label: str
    state: StateDict
    extra: dict[str, Any]


def _uniform(job: SoupJob, recipe: str) -> SoupOutcome:
    state = uniform_soup(job.sources, accumulate=job.cfg.get("accumulate", "fp32"), names=job.names,
                         on_ingredient=lambda i: log.info("Uniform soup: added %s (%d/%d)", job.names[i], i + 1,
                                                          len(job.pool)))
    return SoupOutcome(RECIPES[recipe], state, {"n_ingredients": len(job.pool)})


def _greedy(job: SoupJob, recipe: str) -> SoupOutcome:
    job.need_holdout("The greedy soup")
    trace_path = job.out_dir / "greedy_trace.jsonl"
    steps: list[dict] = []

    def on_step(step) -> None:  # written as it goes: a killed run keeps its trace
        steps.append(vars(step).copy())
        write_jsonl(trace_path, steps)
        job.ctx.log_metrics({"greedy/step": step.step, "greedy/holdout_top1": step.holdout,
                             "greedy/accepted": int(step.accepted), "greedy/n_ingredients": step.n_ingredients})

    # Candidates are built in the tensors of the model that scores them: the soup + that model, nothing more.
    result = greedy_soup(job.sources, job.holdout, job.score, accept=job.cfg.get("accept", "gt"), names=job.names,
                         accumulate=job.cfg.get("accumulate", "fp32"), on_step=on_step,
                         candidate_into=job.skeleton().state_dict())
    write_csv(job.out_dir / "greedy_trace.csv", result.trace_rows())
    info = {"ingredients": result.ingredients, "order": result.order, "accept": result.accept,
            HOLDOUT_KEY: result.holdout, "trace": str(trace_path)}
    write_json(job.out_dir / "greedy_soup.json", info)
    job.summary["greedy"] = info
    return SoupOutcome(RECIPES[recipe], result.state, {"n_ingredients": len(result.ingredients),
                                                       HOLDOUT_KEY: result.holdout})


def _learned(job: SoupJob, recipe: str) -> SoupOutcome:
    per_layer = recipe == "learned_per_layer"
    label = RECIPES["learned_per_layer" if per_layer else "learned"]
    job.need_holdout("The learned soup")
    job.need_linear_head("The learned soup")
    options = job.cfg.get("learned") or {}
    streaming = options.get("streaming", "auto")
    config = LearnedSoupConfig(epochs=int(options.get("epochs", 5)), lr=float(options.get("lr", 0.05)),
                               per_layer=per_layer, streaming=None if streaming in (None, "auto") else bool(streaming),
                               max_memory_gb=float(options.get("max_memory_gb", 2.0)), precision=job.ctx.precision)
    batches = shuffled_batches(job.prepared, int(options.get("batch_size", 256)), job.ctx.device,
                               int(options.get("seed", 0)))
    result = learned_soup(job.skeleton(), job.sources, batches, config, names=job.names, device=job.ctx.device,
                          on_step=lambda r: job.ctx.log_metrics({f"{label}/{k}": v for k, v in r.items()}))
    info = {"ingredients": job.names, "rows": result.rows, "coefficients": result.coefficients.tolist(),
            "beta": result.beta, "streaming": result.streaming, "epochs": config.epochs, "lr": config.lr,
            "history": result.history}
    write_json(job.out_dir / f"{label}.json", info)
    write_safetensors(job.out_dir / f"{label}_coefficients.safetensors", {"coefficients": result.coefficients})
    job.summary[label] = {k: info[k] for k in ("beta", "streaming")}
    if not per_layer:
        job.summary[label]["coefficients"] = dict(zip(job.names, result.coefficients[0].tolist(), strict=True))
    return SoupOutcome(label, result.state, {"n_ingredients": len(job.pool)})


def _fisher(job: SoupJob, recipe: str) -> SoupOutcome:
    job.need_holdout("Fisher merging")
    job.need_linear_head("Fisher merging")
    options = job.cfg.get("fisher") or {}
    skeleton = job.skeleton()
    save = bool(options.get("save", False))
    limit = options.get("n_examples")

    def fisher_of(index: int, state: StateDict):
        generator = torch.Generator().manual_seed(int(options.get("seed", 0)))
        examples = (images for images, _ in job.prepared.batches(64, job.ctx.device))
        fisher = diagonal_fisher(skeleton, state, examples, generator=generator,
                                 max_examples=None if limit is None else int(limit),
                                 train_mode=bool(options.get("train_mode", False)), precision=job.ctx.precision)
        log.info("Fisher of %s estimated (%d/%d)", job.names[index], index + 1, len(job.pool))
        if save:
            write_safetensors(job.out_dir / "fisher" / f"{job.names[index].replace('/', '_')}.safetensors", fisher)
        return fisher

    floor = float(options.get("floor", FISHER_FLOOR))
    state = fisher_merge(job.sources, fisher_of, floor=floor, names=job.names)
    job.summary["fisher_soup"] = {"floor": floor, "n_examples": limit}
    return SoupOutcome(RECIPES[recipe], state, {"n_ingredients": len(job.pool)})


RECIPE_FNS: dict[str, Callable[[SoupJob, str], SoupOutcome]] = {
    "uniform": _uniform, "greedy": _greedy, "learned": _learned, "learned_per_layer": _learned, "fisher": _fisher}


def _check_holdout_config(ctx: MergeContext, pool: Sequence[Ingredient]) -> None:
    """Warn when the ingredients' held-out split was carved from other data than this run's."""
    run_cfg = ctx.run_cfg
    if run_cfg is None or "data" not in run_cfg:
        return
    mine = OmegaConf.to_container(run_cfg.data, resolve=True)
    defaults = {"dataset": None, "holdout_fraction": 0.0, "holdout_seed": 0, "classes": None}
    for ingredient in pool:
        theirs = (ingredient.meta_config or {}).get("data")
        if not isinstance(theirs, dict):
            continue
        differ = [k for k, d in defaults.items() if theirs.get(k, d) != mine.get(k, d)]
        if differ:
            log.warning("Ingredient %s was fine-tuned with other data.%s than this run: its recorded held-out "
                        "accuracy was measured on another split (merge.rescore_holdout=true re-measures it here).",
                        ingredient.name, "/".join(differ))


def _save_soup(ctx: MergeContext, template: Path, outcome: SoupOutcome, info: dict[str, Any]) -> Path:
    meta = {k: v for k, v in read_meta(template).items() if k not in ("config", "metrics", "epoch", "step")}
    return save_state_checkpoint(ctx.run_dir / "checkpoints" / outcome.label, outcome.state, {
        **meta, "method": outcome.label, "trainable": [],
        "metrics": {k: v for k, v in outcome.extra.items() if k == HOLDOUT_KEY},
        "soup": info, "config": OmegaConf.to_container(ctx.cfg, resolve=True)})


def _lazy_state(path: Path) -> Callable[[], StateDict]:
    return lambda: load_state_dict(path)


def _constant(state: StateDict) -> Callable[[], StateDict]:
    return lambda: state


def soup_stage(ctx: MergeContext) -> list[ModelEntry]:
    cfg = ctx.cfg
    recipes = list(cfg.get("recipes") or [])
    unknown = [r for r in recipes if r not in RECIPE_FNS]
    if unknown:
        raise ValueError(f"Unknown soup recipes {unknown}; choose from {sorted(RECIPE_FNS)}")
    pool, skipped = resolve_pool(cfg.get("pool"), str(cfg.get("checkpoint", "finetuned")))
    for item in skipped:
        log.warning("Soup pool: skipping %s: %s", item["source"], item["reason"])
    if not pool:
        raise FileNotFoundError(f"No ingredient checkpoint found in merge.pool={cfg.get('pool')!r}"
                                + (f" ({len(skipped)} sources skipped, see above)" if skipped else ""))
    check_pool([i.checkpoint for i in pool], [i.name for i in pool])
    classnames = {tuple(read_meta(i.checkpoint).get("classnames") or ()) for i in pool}
    if len(classnames) > 1:
        log.warning("The ingredients' heads were built for different class names: their soup is unlikely to mean much.")
    log.info("Soup pool: %d ingredients (%s)%s", len(pool), ", ".join(i.name for i in pool),
             f", {len(skipped)} skipped" if skipped else "")
    template = pool[0].checkpoint
    ctx.template = template
    out_dir = ctx.run_dir / SOUPS_DIR
    prepared = ctx.holdout() if ctx.holdout is not None else None
    score = ctx.scorer_for(template) if (prepared is not None and ctx.scorer_for is not None) else None
    _check_holdout_config(ctx, pool)

    holdout: list[float | None] = [i.holdout for i in pool]
    rescore = bool(cfg.get("rescore_holdout", False))
    for index, ingredient in enumerate(pool):
        if (rescore or holdout[index] is None) and score is not None:
            if not rescore:
                log.info("Ingredient %s has no recorded held-out accuracy: measuring it now", ingredient.name)
            holdout[index] = float(score(load_state_dict(ingredient.checkpoint)))
    known = all(h is not None for h in holdout)
    best = greedy_order(holdout)[0] if known else None
    labels = varying_overrides(pool)
    summary: dict[str, Any] = {
        "pool_spec": OmegaConf.to_container(cfg.pool) if isinstance(cfg.get("pool"), ListConfig) else cfg.get("pool"),
        "recipes": recipes,
        "ingredients": [{**i.record(), HOLDOUT_KEY: holdout[k], "label": labels[i.name]} for k, i in enumerate(pool)],
        "skipped": skipped,
        "best_individual": pool[best].name if best is not None else None,
        "wandb_group": pool_group_of(pool),
    }
    write_json(out_dir / "pool.json", {k: summary[k] for k in ("pool_spec", "ingredients", "skipped")})
    job = SoupJob(ctx, pool, holdout, out_dir, template, score, prepared, summary)

    entries: list[ModelEntry] = []
    baselines = bool(cfg.get("include_baselines", True))
    if best is not None and (baselines or cfg.get("eval_ingredients", True)):
        entries.append(_ingredient_entry(pool[best], holdout[best], best=True))
    if not known and recipes:
        missing = [pool[k].name for k, h in enumerate(holdout) if h is None]
        log.warning("No held-out accuracy for %s (and no held-out split in this run to measure it)", missing)
    save = bool(cfg.get("save", True))
    for recipe in recipes:
        outcome = RECIPE_FNS[recipe](job, recipe)
        if HOLDOUT_KEY not in outcome.extra and score is not None:
            outcome.extra[HOLDOUT_KEY] = float(score(outcome.state))
        used = summary["greedy"]["ingredients"] if recipe == "greedy" else job.names
        record = {"recipe": recipe, "ingredients": used, **outcome.extra}
        summary.setdefault("soups", {})[outcome.label] = record
        if save:
            directory = _save_soup(ctx, template, outcome, {**record, **(summary.get(outcome.label) or {})})
            record["checkpoint"] = str(directory)
            weights = _lazy_state(directory)
        else:
            weights = _constant(outcome.state)
        entries.append(ModelEntry(outcome.label, None, weights, extra=dict(outcome.extra), tag=outcome.label))
        del outcome
        write_json(out_dir / SUMMARY_FILE, summary)
    if cfg.get("eval_ingredients", True):
        entries += [_ingredient_entry(i, holdout[k], best=False) for k, i in enumerate(pool) if k != best]
    if baselines and cfg.get("ensemble", True):
        entries.append(ModelEntry("ensemble", None, None, extra={"n_ingredients": len(pool)}, tag="ensemble",
                                  module=lambda: OutputEnsemble(job.skeleton(),
                                                                [load_state_dict(i.checkpoint) for i in pool])))
    alphas = [float(a) for a in cfg.get("wiseft_alphas") or []]
    if alphas and best is not None:
        entries += _wiseft_entries(pool[best], alphas)
    write_json(out_dir / SUMMARY_FILE, summary)
    return entries


def pool_group_of(pool: Sequence[Ingredient]) -> str | None:
    parents = {i.run_dir.parent.resolve() for i in pool if i.run_dir is not None}
    return next(iter(parents)).name if len(parents) == 1 and _is_multirun_dir(next(iter(parents))) else None


def _ingredient_entry(ingredient: Ingredient, holdout: float | None, *, best: bool) -> ModelEntry:
    extra = {"ingredient": ingredient.name, "best_individual": best, "n_ingredients": 1}
    if holdout is not None:
        extra[HOLDOUT_KEY] = holdout
    return ModelEntry("ingredient", None, _lazy_state(ingredient.checkpoint), extra=extra,
                      tag=f"ingredient_{ingredient.name.replace('/', '_')}")


def _wiseft_entries(best: Ingredient, alphas: Sequence[float]) -> list[ModelEntry]:
    """The WiSE-FT curve between the best ingredient and its own zero-shot checkpoint."""
    zeroshot = best.checkpoint.parent / "zeroshot"
    if not is_checkpoint(zeroshot):
        log.warning("merge.wiseft_alphas: no zero-shot checkpoint next to %s; skipping the WiSE-FT curve",
                    best.checkpoint)
        return []
    cache: dict[Path, StateDict] = {}
    theta_0, theta_1 = cached_loader(zeroshot, cache), cached_loader(best.checkpoint, cache)
    entries = [ModelEntry("zeroshot", 0.0, theta_0, extra={"ingredient": best.name})]
    entries += [ModelEntry("wiseft", a, lambda a=a: interpolate(theta_0(), theta_1(), a),
                           extra={"ingredient": best.name}) for a in alphas]
    return entries


for _kind in SOUP_KINDS:
    register_merge(_kind)(soup_stage)
