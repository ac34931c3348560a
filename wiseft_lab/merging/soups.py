"""The soups strategy: ``merge=soups`` (and ``uniform_soup``, ``greedy_soup``, ``learned_soup``, ``fisher``: the
same strategy with one recipe) over a pool of fine-tuned checkpoints (:mod:`wiseft_lab.merging.pool`).

Every recipe of ``recipes`` makes one soup; the baselines (the best single ingredient by held-out accuracy, every
other ingredient for the plot, the output-space ensemble, the WiSE-FT curve of the best ingredient) are evaluated
next to them. Artifacts under ``<run>/soups/``: ``pool.json``, the greedy trace and ingredient list, the learned
coefficients, and ``soups.json`` that the report step turns into ``soups.md``/``soups.csv``/``soups.png``. Soups are
saved as checkpoints under ``<run>/checkpoints/<soup>`` as they are made, so that one soup at a time is in memory.

The weight-space math lives in :mod:`wiseft_lab.weight_space` (``soups``, ``learned``, ``fisher``); this module
resolves the pool, feeds it the held-out data and records what happened.
"""

from __future__ import annotations

import functools
import itertools
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from wiseft_lab.config import ConfigError
from wiseft_lab.data.cache import PreparedSet
from wiseft_lab.distributed import gather_shards, shard
from wiseft_lab.io import write_csv, write_json, write_jsonl, write_safetensors
from wiseft_lab.merging.pool import (
    HOLDOUT_KEY,
    Ingredient,
    pool_group_of,
    resolve_pool,
    varying_overrides,
)
from wiseft_lab.merging.registry import (
    MergeContext,
    MergeResult,
    MergeStrategy,
    ModelEntry,
    cached_loader,
    register_merge,
)
from wiseft_lab.models.checkpoint import StateDict, is_checkpoint, load_state_dict, read_meta, save_checkpoint
from wiseft_lab.models.ensemble import OutputEnsemble
from wiseft_lab.precision import autocast
from wiseft_lab.weight_space.cross import HEAD_PREFIX
from wiseft_lab.weight_space.deltas import shared_except
from wiseft_lab.weight_space.fisher import FISHER_FLOOR, fisher_merge
from wiseft_lab.weight_space.ingredients import check_pool
from wiseft_lab.weight_space.interpolate import interpolate, interpolation_path
from wiseft_lab.weight_space.landscape import pairwise_angles
from wiseft_lab.weight_space.learned import HeadOnly, LearnedSoupConfig, learned_soup
from wiseft_lab.weight_space.soups import greedy_order, greedy_soup, uniform_soup

log = logging.getLogger(__name__)

# recipe -> row label in results.jsonl / soups.md
RECIPES = {"uniform": "uniform_soup", "greedy": "greedy_soup", "learned": "learned_soup",
           "learned_per_layer": "learned_soup_per_layer", "fisher": "fisher_soup"}
PAIR_MODEL = "pair_average"  # the average of two ingredients (merge.angles)
SOUPS_DIR = "soups"
SUMMARY_FILE = "soups.json"


@dataclass
class LearnedOptions:
    """The learned soup (``merge.learned``): AdamW without weight decay on the shuffled held-out split."""

    epochs: int = 5
    lr: float = 0.05
    batch_size: int = 256
    streaming: bool | str | None = "auto"  # auto: in memory only when the pool fits max_memory_gb
    max_memory_gb: float = 2.0
    seed: int = 0  # held-out shuffling

    def config(self, *, per_layer: bool, precision: str) -> LearnedSoupConfig:
        """The optimisation these options ask for (``streaming: auto`` leaves the choice to the pool's size)."""
        streaming = self.streaming
        return LearnedSoupConfig(epochs=int(self.epochs), lr=float(self.lr), per_layer=per_layer,
                                 streaming=None if streaming in (None, "auto") else bool(streaming),
                                 max_memory_gb=float(self.max_memory_gb), precision=precision)

    def batches(self, prepared: PreparedSet, device: torch.device) -> Callable[[int], Iterator]:
        """``batches(epoch)``: the held-out split in a new seeded order every epoch, normalised, on ``device``."""
        batch_size, seed = int(self.batch_size), int(self.seed)

        def batches(epoch: int):
            generator = torch.Generator().manual_seed(seed * 1000 + epoch)
            for images, labels in prepared.batches(batch_size, device, generator):
                yield images, labels.to(device)
        return batches

    def feature_batches(self, features: torch.Tensor, labels: torch.Tensor,
                        device: torch.device) -> Callable[[int], Iterator]:
        """``batches(epoch)`` over image-tower outputs computed once, in the order :meth:`batches` gives a decoded
        set's images."""
        batch_size, seed = int(self.batch_size), int(self.seed)

        def batches(epoch: int):
            order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed * 1000 + epoch))
            for start in range(0, len(order), batch_size):
                rows = order[start:start + batch_size]
                yield features[rows].to(device), labels[rows].to(device)
        return batches


@dataclass
class FisherOptions:
    """Fisher merging (``merge.fisher``): the diagonal Fisher of each ingredient on the held-out split."""

    floor: float = FISHER_FLOOR  # Fisher values are floored at this (WiSE-FT's --fisher_floor)
    n_examples: int | None = None  # held-out examples per estimate (None: all), one at a time
    train_mode: bool = False  # wise-ft estimates in train mode (on its test loader); eval mode avoids per-example BN
    seed: int = 0  # sampling of the labels from the model's softmax
    save: bool = False  # keep each ingredient's Fisher under <run>/soups/fisher/


@dataclass
class SoupOutcome:
    label: str
    state: StateDict
    extra: dict[str, Any]


@dataclass
class _Kitchen:
    """One soup run's working state: the pool, its held-out scores, where things go, what was recorded."""

    options: Soups
    ctx: MergeContext
    pool: list[Ingredient]
    holdout: list[float | None]
    out_dir: Path
    template: Path
    summary: dict[str, Any]

    @property
    def sources(self) -> list[Path]:
        return [i.checkpoint for i in self.pool]

    @property
    def names(self) -> list[str]:
        return [i.name for i in self.pool]

    @property
    def prepared(self) -> PreparedSet | None:
        return self.ctx.holdout_set()

    def score(self, state: StateDict) -> float:
        return self.ctx.score(self.template, state)

    def need_holdout(self, what: str) -> None:
        if self.prepared is None:
            raise ConfigError(f"{what} needs a held-out split, and the ingredients were fine-tuned without one "
                              "(data.holdout_fraction=0, or no recorded data config): fine-tune them with "
                              "data.holdout_fraction=0.02 (the papers' 2%). A split carved here instead "
                              "(data.holdout_fraction=<f> merge.rescore_holdout=true) holds images they trained on.")

    def need_linear_head(self, what: str) -> None:
        if read_meta(self.template).head == "text":
            raise ValueError(f"{what} is not supported for checkpoints whose head is derived from the text tower "
                             "(the head of a mixed model must be rebuilt); use the uniform or greedy soup.")

    def skeleton(self) -> torch.nn.Module:
        return self.ctx.models.skeleton(self.template)


def _uniform(kitchen: _Kitchen, recipe: str) -> SoupOutcome:
    names = kitchen.names
    state = uniform_soup(kitchen.sources, accumulate=kitchen.options.accumulate, names=names,
                         on_ingredient=lambda i: log.info("Uniform soup: added %s (%d/%d)", names[i], i + 1,
                                                          len(names)))
    return SoupOutcome(RECIPES[recipe], state, {"n_ingredients": len(names)})


def _greedy(kitchen: _Kitchen, recipe: str) -> SoupOutcome:
    kitchen.need_holdout("The greedy soup")
    trace_path = kitchen.out_dir / "greedy_trace.jsonl"
    steps: list[dict] = []

    def on_step(step) -> None:  # written as it goes: a killed run keeps its trace
        steps.append(vars(step).copy())
        write_jsonl(trace_path, steps)
        kitchen.ctx.log_metrics({"greedy/step": step.step, "greedy/holdout_top1": step.holdout,
                                 "greedy/accepted": int(step.accepted), "greedy/n_ingredients": step.n_ingredients},
                                None)

    # Candidates are built in the tensors of the model that scores them: the soup + that model, nothing more.
    result = greedy_soup(kitchen.sources, kitchen.holdout, kitchen.score, accept=kitchen.options.accept,
                         names=kitchen.names, accumulate=kitchen.options.accumulate, on_step=on_step,
                         candidate_into=kitchen.skeleton().state_dict())
    write_csv(kitchen.out_dir / "greedy_trace.csv", result.trace_rows())
    info = {"ingredients": result.ingredients, "order": result.order, "accept": result.accept,
            HOLDOUT_KEY: result.holdout, "trace": str(trace_path)}
    write_json(kitchen.out_dir / "greedy_soup.json", info)
    kitchen.summary["greedy"] = info
    return SoupOutcome(RECIPES[recipe], result.state, {"n_ingredients": len(result.ingredients),
                                                       HOLDOUT_KEY: result.holdout})


@torch.no_grad()
def _holdout_features(kitchen: _Kitchen) -> tuple[torch.Tensor, torch.Tensor]:
    """The shared image tower's outputs on the held-out split (eval mode, the run's autocast), sharded over the ranks
    and gathered."""
    ctx, prepared = kitchen.ctx, kitchen.prepared
    model = ctx.models.load(kitchen.skeleton(), load_state_dict(kitchen.sources[0])).eval()
    mine = shard(len(prepared))
    outputs, labels = [], []
    for images, y in prepared.batches(int(kitchen.options.learned.batch_size), ctx.device, examples=mine):
        with autocast(ctx.device, ctx.precision):
            outputs.append(model.image_features(images))
        labels.append(torch.as_tensor(y))
    return gather_shards(torch.cat(outputs), len(prepared)), gather_shards(torch.cat(labels), len(prepared))


def _learned(kitchen: _Kitchen, recipe: str) -> SoupOutcome:
    per_layer = recipe == "learned_per_layer"
    label = RECIPES[recipe]
    kitchen.need_holdout("The learned soup")
    kitchen.need_linear_head("The learned soup")
    options, ctx = kitchen.options.learned, kitchen.ctx
    config = options.config(per_layer=per_layer, precision=ctx.precision)
    module, batches, keys = kitchen.skeleton(), options.batches(kitchen.prepared, ctx.device), None
    if shared_except(kitchen.sources, HEAD_PREFIX):  # linear-classifier ingredients: one tower pass, then heads
        log.info("%s: the ingredients share their image tower; training on its held-out outputs, computed once",
                 label)
        module = HeadOnly(kitchen.skeleton().head)
        batches = options.feature_batches(*_holdout_features(kitchen), ctx.device)
        keys = [k for k in check_pool(kitchen.sources) if k.startswith(HEAD_PREFIX)]
    result = learned_soup(module, kitchen.sources, batches, config, names=kitchen.names, device=ctx.device,
                          on_step=lambda r: ctx.log_metrics({f"{label}/{k}": v for k, v in r.items()}, None),
                          keys=keys)
    info = {"ingredients": kitchen.names, "rows": result.rows, "coefficients": result.coefficients.tolist(),
            "beta": result.beta, "streaming": result.streaming, "epochs": config.epochs, "lr": config.lr,
            "history": result.history}
    write_json(kitchen.out_dir / f"{label}.json", info)
    write_safetensors(kitchen.out_dir / f"{label}_coefficients.safetensors", {"coefficients": result.coefficients})
    kitchen.summary[label] = {k: info[k] for k in ("beta", "streaming")}
    if not per_layer:
        kitchen.summary[label]["coefficients"] = dict(zip(kitchen.names, result.coefficients[0].tolist(),
                                                          strict=True))
    return SoupOutcome(label, result.state, {"n_ingredients": len(kitchen.pool)})


def _fisher(kitchen: _Kitchen, recipe: str) -> SoupOutcome:
    kitchen.need_holdout("Fisher merging")
    kitchen.need_linear_head("Fisher merging")
    options, ctx = kitchen.options.fisher, kitchen.ctx
    limit = options.n_examples

    def fisher_of(index: int, state: StateDict):
        fisher = ctx.fisher(kitchen.template, state, n_examples=None if limit is None else int(limit),
                            train_mode=bool(options.train_mode), seed=int(options.seed))
        log.info("Fisher of %s estimated (%d/%d)", kitchen.names[index], index + 1, len(kitchen.pool))
        if options.save:
            name = kitchen.names[index].replace("/", "_")
            write_safetensors(kitchen.out_dir / "fisher" / f"{name}.safetensors", fisher)
        return fisher

    floor = float(options.floor)
    state = fisher_merge(kitchen.sources, fisher_of, floor=floor, names=kitchen.names)
    kitchen.summary["fisher_soup"] = {"floor": floor, "n_examples": limit}
    return SoupOutcome(RECIPES[recipe], state, {"n_ingredients": len(kitchen.pool)})


RECIPE_FNS: dict[str, Callable[[_Kitchen, str], SoupOutcome]] = {
    "uniform": _uniform, "greedy": _greedy, "learned": _learned, "learned_per_layer": _learned, "fisher": _fisher}


@register_merge("soups")
@dataclass(kw_only=True)
class Soups(MergeStrategy):
    """Model soups over ``pool``: every recipe of ``recipes``, beside the best ingredient and the ensemble."""

    recipes: list[str] = field(default_factory=lambda: ["uniform", "greedy", "learned", "learned_per_layer"])
    pool: Any = None               # a multirun directory, a glob of checkpoints, or a list of either
    checkpoint: str = "finetuned"  # which checkpoint of each job is an ingredient
    accumulate: str = "fp32"       # uniform/greedy arithmetic: fp32 (the reference) | fp64
    accept: str = "gt"             # greedy: gt = strictly better held-out accuracy (the reference) | ge (the paper)
    rescore_holdout: bool = False  # re-measure every ingredient's held-out accuracy instead of reading meta.json
    save: bool = True              # write every soup as a checkpoint under <run>/checkpoints/<soup>
    include_baselines: bool = True  # the best ingredient (by held-out accuracy) and the output-space ensemble
    ensemble: bool = True          # the mean-logits ensemble of all ingredients (holds every ingredient)
    eval_ingredients: bool = True  # evaluate every ingredient (the figure's points); false: the best one only
    wiseft_alphas: list[float] = field(default_factory=list)  # WiSE-FT curve of the best ingredient
    angles: bool = False           # angles between the fine-tuning deltas + every pair's average (model soups Fig. 3)
    learned: LearnedOptions = field(default_factory=LearnedOptions)
    fisher: FisherOptions = field(default_factory=FisherOptions)

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.learned, Mapping):
            self.learned = LearnedOptions(**self.learned)
        if isinstance(self.fisher, Mapping):
            self.fisher = FisherOptions(**self.fisher)
        unknown = [r for r in self.recipes if r not in RECIPE_FNS]
        if unknown:
            raise ValueError(f"Unknown soup recipes {unknown}; choose from {sorted(RECIPE_FNS)}")

    def run(self, ctx: MergeContext) -> MergeResult:
        pool, skipped = resolve_pool(self.pool, str(self.checkpoint))
        for item in skipped:
            log.warning("Soup pool: skipping %s: %s", item["source"], item["reason"])
        if not pool:
            raise FileNotFoundError(f"No ingredient checkpoint found in merge.pool={self.pool!r}"
                                    + (f" ({len(skipped)} sources skipped, see above)" if skipped else ""))
        check_pool([i.checkpoint for i in pool], [i.name for i in pool])
        classnames = {tuple(read_meta(i.checkpoint).classnames) for i in pool}
        if len(classnames) > 1:
            log.warning("The ingredients' heads were built for different class names: their soup is unlikely to "
                        "mean much.")
        log.info("Soup pool: %d ingredients (%s)%s", len(pool), ", ".join(i.name for i in pool),
                 f", {len(skipped)} skipped" if skipped else "")
        template = pool[0].checkpoint
        kitchen = _Kitchen(self, ctx, pool, [i.holdout for i in pool], ctx.run_dir / SOUPS_DIR, template, {})
        scorable = kitchen.prepared is not None
        for index, ingredient in enumerate(pool):
            if (self.rescore_holdout or kitchen.holdout[index] is None) and scorable:
                if not self.rescore_holdout:
                    log.info("Ingredient %s has no recorded held-out accuracy: measuring it now", ingredient.name)
                kitchen.holdout[index] = float(kitchen.score(load_state_dict(ingredient.checkpoint)))
        holdout = kitchen.holdout
        known = all(h is not None for h in holdout)
        best = greedy_order(holdout)[0] if known else None
        labels = varying_overrides(pool)
        summary = kitchen.summary
        summary.update({
            "pool_spec": OmegaConf.to_container(self.pool) if OmegaConf.is_config(self.pool) else self.pool,
            "recipes": list(self.recipes),
            "ingredients": [{**i.record(), HOLDOUT_KEY: holdout[k], "label": labels[i.name]}
                            for k, i in enumerate(pool)],
            "skipped": skipped,
            "best_individual": pool[best].name if best is not None else None,
            "wandb_group": pool_group_of(pool),
        })
        write_json(kitchen.out_dir / "pool.json", {k: summary[k] for k in ("pool_spec", "ingredients", "skipped")})

        entries: list[ModelEntry] = []
        if best is not None and (self.include_baselines or self.eval_ingredients):
            entries.append(_ingredient_entry(pool[best], holdout[best], best=True))
        if not known and self.recipes:
            missing = [pool[k].name for k, h in enumerate(holdout) if h is None]
            log.warning("No held-out accuracy for %s (and no held-out split in this run to measure it)", missing)
        for recipe in self.recipes:
            outcome = RECIPE_FNS[recipe](kitchen, recipe)
            if HOLDOUT_KEY not in outcome.extra and scorable:
                outcome.extra[HOLDOUT_KEY] = float(kitchen.score(outcome.state))
            used = summary["greedy"]["ingredients"] if recipe == "greedy" else kitchen.names
            record = {"recipe": recipe, "ingredients": used, **outcome.extra}
            summary.setdefault("soups", {})[outcome.label] = record
            if self.save:
                directory = self._save(ctx, template, outcome, {**record, **(summary.get(outcome.label) or {})})
                record["checkpoint"] = str(directory)
                weights = _lazy_state(directory)
            else:
                weights = _constant(outcome.state)
            entries.append(ModelEntry(outcome.label, None, weights, extra=dict(outcome.extra), tag=outcome.label))
            del outcome
            write_json(kitchen.out_dir / SUMMARY_FILE, summary)
        if self.eval_ingredients:
            entries += [_ingredient_entry(i, holdout[k], best=False) for k, i in enumerate(pool) if k != best]
        if self.include_baselines and self.ensemble:
            entries.append(ModelEntry("ensemble", None, None, extra={"n_ingredients": len(pool)}, tag="ensemble",
                                      module=lambda: OutputEnsemble(kitchen.skeleton(),
                                                                    [load_state_dict(i.checkpoint) for i in pool])))
        if self.angles:
            entries += _pair_entries(kitchen, summary)
        alphas = [float(a) for a in self.wiseft_alphas]
        if alphas and best is not None:
            entries += _wiseft_entries(pool[best], alphas)
        write_json(kitchen.out_dir / SUMMARY_FILE, summary)
        return MergeResult(entries, template)

    def _save(self, ctx: MergeContext, template: Path, outcome: SoupOutcome, info: dict[str, Any]) -> Path:
        meta = read_meta(template).replace(
            method=outcome.label, trainable=[], epoch=None, step=None, soup=info,
            metrics={k: v for k, v in outcome.extra.items() if k == HOLDOUT_KEY},
            config=OmegaConf.to_container(ctx.run_cfg.merge, resolve=True) if "merge" in ctx.run_cfg else None)
        return save_checkpoint(ctx.run_dir / "checkpoints" / outcome.label, outcome.state, meta)


def _lazy_state(path: Path) -> Callable[[], StateDict]:
    return lambda: load_state_dict(path)


def _constant(state: StateDict) -> Callable[[], StateDict]:
    return lambda: state


def _ingredient_entry(ingredient: Ingredient, holdout: float | None, *, best: bool) -> ModelEntry:
    extra = {"ingredient": ingredient.name, "best_individual": best, "n_ingredients": 1}
    if holdout is not None:
        extra[HOLDOUT_KEY] = holdout
    return ModelEntry("ingredient", None, _lazy_state(ingredient.checkpoint), extra=extra,
                      tag=f"ingredient_{ingredient.name.replace('/', '_')}")


def _pair_entries(kitchen: _Kitchen, summary: dict[str, Any]) -> list[ModelEntry]:
    """The angle between every two ingredients' fine-tuning deltas (from the zero-shot checkpoint beside the first
    ingredient) into ``summary["angles"]``, and each pair's average as a model to evaluate (model soups Fig. 3)."""
    zeroshot = kitchen.pool[0].checkpoint.parent / "zeroshot"
    if not is_checkpoint(zeroshot):
        log.warning("merge.angles: no zero-shot checkpoint next to %s; no angles", kitchen.pool[0].checkpoint)
        return []
    degrees = pairwise_angles(zeroshot, kitchen.sources, names=kitchen.names)
    summary["angles"] = {"zeroshot": str(zeroshot), "names": kitchen.names, "degrees": degrees}
    entries = []
    for a, b in itertools.combinations(range(len(kitchen.pool)), 2):
        first, second = kitchen.pool[a], kitchen.pool[b]
        entries.append(ModelEntry(
            PAIR_MODEL, None, lambda f=first.checkpoint, s=second.checkpoint: interpolate(
                load_state_dict(f), load_state_dict(s), 0.5),
            extra={"pair": [first.name, second.name], "angle": degrees[a][b], "n_ingredients": 2},
            tag=f"pair_{first.name.replace('/', '_')}+{second.name.replace('/', '_')}"))
    return entries


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
    path = functools.cache(lambda: interpolation_path(theta_0(), theta_1()))
    entries += [ModelEntry("wiseft", a, lambda a=a: path()(a),
                           extra={"ingredient": best.name}) for a in alphas]
    return entries
