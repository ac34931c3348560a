"""Cross-dataset soups (model soups, Wortsman et al. 2022, Sec. 3.5): ``merge=cross_dataset_soup``.

The ingredients were fine-tuned on *other* data sets (each with its own head and classes); the run's eval suite
is the target (e.g. CIFAR-100, which none of them saw). The target's zero-shot model is built here: the run's
``model`` weights with a head over the reference set's classes from the zero-shot text tower (e2e fine-tuning
leaves the text tower untouched, so the soup's text tower is the zero-shot one; ingredients that kept theirs are
averaged like the rest). Every soup mixes only the entries the zero-shot model and all ingredients share (the
towers; never a head: :func:`~wiseft_lab.weight_space.cross.cross_dataset_soup`) and keeps the target head.

``recipes``: ``uniform`` averages them all; ``greedy`` and ``learned`` choose on the target's held-out split (the
run's ``data.holdout_fraction`` of ``data``, the target's training set), because which ingredients help an unseen
task is the paper's point. Both run on each ingredient *transplanted* into the target (its shared entries in the
zero-shot model, written under ``<run>/cross_dataset_soup/ingredients/``): one pool of identical keys and heads,
so the in-distribution greedy and learned soups apply unchanged, restricted to the shared entries. Greedy starts
from the zero-shot model and tries the ingredients by their held-out accuracy under the target head.
Evaluated: the zero-shot model, each soup, and each ingredient's towers under the target head.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wiseft_lab.config import ConfigError
from wiseft_lab.io import write_json, write_safetensors
from wiseft_lab.merging.pool import HOLDOUT_KEY, Ingredient, resolve_pool
from wiseft_lab.merging.registry import MergeContext, MergeResult, MergeStrategy, ModelEntry, register_merge
from wiseft_lab.merging.soups import LearnedOptions
from wiseft_lab.models.checkpoint import StateDict, load_state_dict, read_meta, save_checkpoint
from wiseft_lab.models.templates import resolve_templates, template_text
from wiseft_lab.models.zeroshot import build_zeroshot_head
from wiseft_lab.weight_space.cross import cross_dataset_soup, shared_keys
from wiseft_lab.weight_space.ingredients import Source, load_all, tensor_specs
from wiseft_lab.weight_space.learned import learned_soup
from wiseft_lab.weight_space.soups import accepts, greedy_soup

log = logging.getLogger(__name__)

OUT_DIR = "cross_dataset_soup"
ZEROSHOT = "zeroshot"  # the zero-shot model's name among the ingredients
# recipe -> row label in results.jsonl and checkpoint name (the uniform soup keeps the strategy's name)
RECIPES = {"uniform": "cross_dataset_soup", "greedy": "cross_dataset_greedy_soup",
           "learned": "cross_dataset_learned_soup"}


def target_zeroshot(ctx: MergeContext, like: Ingredient) -> Path:
    """The target's zero-shot checkpoint (``<run>/checkpoints/zeroshot_target``), keys as ``like``'s."""
    reference = ctx.suite()
    target = reference.sets[reference.reference].data
    bundle = ctx.models.bundle()
    templates = resolve_templates(target.templates)
    head = build_zeroshot_head(bundle.model, bundle.tokenizer, target.classnames, templates).to("cpu")
    keys = tensor_specs(like.checkpoint)
    state = {f"clip.{k}": v.detach().to("cpu").clone() for k, v in bundle.model.state_dict().items()
             if f"clip.{k}" in keys}
    state.update({f"head.{k}": v.detach().clone() for k, v in head.state_dict().items()})
    meta = read_meta(like.checkpoint).replace(
        classnames=list(target.classnames), templates=[template_text(t) for t in templates], method="zeroshot",
        head="linear", dataset=reference.reference, trainable=[], epoch=None, step=None, metrics={}, config=None)
    return save_checkpoint(ctx.run_dir / "checkpoints" / "zeroshot_target", state, meta)


@dataclass
class _Target:
    """One run's target: its zero-shot model, the pool's shared entries, and the pool as models of the target."""

    ctx: MergeContext
    zeroshot: Path
    pool: list[Ingredient]
    include_zeroshot: bool
    keys: list[str] = field(default_factory=list)          # the entries every soup mixes
    holdout: list[float] = field(default_factory=list)     # each of :attr:`names`' held-out top-1 (greedy, learned)
    transplanted: list[Path] = field(default_factory=list)  # written on first use (greedy, learned)

    def _with_zeroshot(self, zeroshot: Any, ingredients: list[Any]) -> list[Any]:
        return [zeroshot, *ingredients] if self.include_zeroshot else ingredients

    @property
    def names(self) -> list[str]:
        return self._with_zeroshot(ZEROSHOT, [i.name for i in self.pool])

    @property
    def sources(self) -> list[Source]:
        """The ingredients as they are averaged uniformly (the zero-shot model first when it is one)."""
        return self._with_zeroshot(self.zeroshot, [i.checkpoint for i in self.pool])

    def transplant(self, checkpoint: Path) -> StateDict:
        """An ingredient's shared entries in the target's zero-shot model (its head, the target's)."""
        return cross_dataset_soup(self.zeroshot, [checkpoint], self.keys)[0]

    def aligned(self) -> list[Source]:
        """:attr:`sources` with every ingredient transplanted, on disk: a pool of one set of keys and one head."""
        if not self.transplanted:
            directory = self.ctx.run_dir / OUT_DIR / "ingredients"
            self.transplanted = [write_safetensors(directory / f"{k}_{i.name.replace('/', '_')}.safetensors",
                                                   self.transplant(i.checkpoint)) for k, i in enumerate(self.pool)]
        return self._with_zeroshot(self.zeroshot, self.transplanted)

    def score(self, state: StateDict) -> float:
        """Held-out top-1 on the target's split, under the target's head."""
        return self.ctx.score(self.zeroshot, state)


Recipe = Callable[["CrossDatasetSoup", _Target], tuple[StateDict, dict[str, Any]]]


def _uniform(options: CrossDatasetSoup, target: _Target) -> tuple[StateDict, dict[str, Any]]:
    state, _ = cross_dataset_soup(target.zeroshot, target.sources, target.keys)
    return state, {"recipe": "uniform", "ingredients": target.names}


def _greedy(options: CrossDatasetSoup, target: _Target) -> tuple[StateDict, dict[str, Any]]:
    # Candidates are built in the tensors of the model that scores them, as the in-distribution greedy soup.
    result = greedy_soup(target.aligned(), target.holdout, target.score, accept=options.accept, names=target.names,
                         candidate_into=target.ctx.models.skeleton(target.zeroshot).state_dict(),
                         first=0 if target.include_zeroshot else None, keys=target.keys)
    return result.state, {"recipe": "greedy", "ingredients": result.ingredients, "order": result.order,
                          "accept": result.accept, HOLDOUT_KEY: result.holdout, "trace": result.trace_rows()}


def _learned(options: CrossDatasetSoup, target: _Target) -> tuple[StateDict, dict[str, Any]]:
    ctx, learned = target.ctx, options.learned
    config = learned.config(per_layer=False, precision=ctx.precision)
    result = learned_soup(ctx.models.skeleton(target.zeroshot), target.aligned(),
                          learned.batches(ctx.holdout_set(), ctx.device), config, names=target.names,
                          device=ctx.device, keys=target.keys,
                          on_step=lambda r: ctx.log_metrics({f"{RECIPES['learned']}/{k}": v for k, v in r.items()},
                                                            None))
    weights = dict(zip(target.names, result.coefficients[0].tolist(), strict=True))
    return result.state, {"recipe": "learned", "ingredients": target.names, "coefficients": weights,
                          "beta": result.beta, "streaming": result.streaming, "epochs": config.epochs,
                          "lr": config.lr, "history": result.history}


RECIPE_FNS: dict[str, Recipe] = {"uniform": _uniform, "greedy": _greedy, "learned": _learned}


@register_merge("cross_dataset_soup")
@dataclass(kw_only=True)
class CrossDatasetSoup(MergeStrategy):
    """Soups of models fine-tuned on other data sets (and the zero-shot one), scored on the target."""

    recipes: list[str] = field(default_factory=lambda: ["uniform"])  # uniform | greedy | learned
    pool: Any = None               # a multirun directory, a glob of checkpoints, or a list of either
    checkpoint: str = "finetuned"  # which checkpoint of each job is an ingredient
    include_zeroshot: bool = True  # the zero-shot model is one ingredient (the paper's soups always contain it)
    eval_ingredients: bool = True  # also score each ingredient's towers under the target head
    accept: str = "ge"             # greedy: ge = kept unless held-out accuracy drops (the paper) | gt = must rise
    learned: LearnedOptions = field(default_factory=LearnedOptions)

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.learned, Mapping):
            self.learned = LearnedOptions(**self.learned)
        unknown = [r for r in self.recipes if r not in RECIPE_FNS]
        if unknown:
            raise ValueError(f"Unknown cross-dataset soup recipes {unknown}; choose from {sorted(RECIPE_FNS)}")
        accepts(0.0, 0.0, self.accept)  # validates the rule

    def run(self, ctx: MergeContext) -> MergeResult:
        chosen = [r for r in self.recipes if r != "uniform"]
        if chosen and ctx.holdout is None:
            raise ConfigError(
                f"The cross-dataset soup recipes {chosen} choose on the target's held-out split, and this run has "
                "none: give the target's training set and a split of it, e.g. data=cifar100 "
                "data.holdout_fraction=0.02 (the eval suite's reference set is the target).")
        pool, skipped = resolve_pool(self.pool, str(self.checkpoint))
        for item in skipped:
            log.warning("Cross-dataset soup pool: skipping %s: %s", item["source"], item["reason"])
        if not pool:
            raise FileNotFoundError(f"No ingredient checkpoint found in merge.pool={self.pool!r}")
        zeroshot = target_zeroshot(ctx, pool[0])
        meta = read_meta(zeroshot)
        if chosen and list(ctx.holdout_set().data.classnames) != list(meta.classnames):
            raise ConfigError(f"The held-out split's classes {ctx.holdout_set().data.classnames} are not the "
                              f"target's {meta.classnames}: set data= to the target's training set.")
        target = _Target(ctx, zeroshot, pool, bool(self.include_zeroshot))
        target.keys = shared_keys(zeroshot, target.sources)
        record: dict[str, Any] = {
            "target": meta.dataset, "ingredients": [i.name for i in pool], "include_zeroshot": target.include_zeroshot,
            "datasets": [read_meta(i.checkpoint).dataset for i in pool], "averaged_keys": len(target.keys),
            "kept_keys": len(tensor_specs(zeroshot)) - len(target.keys), "recipes": list(self.recipes), "soups": {}}
        log.info("Cross-dataset soups of %d models: %d entries mixed, %d kept from the target's zero-shot model",
                 len(target.sources), record["averaged_keys"], record["kept_keys"])
        if chosen:  # every ingredient's held-out accuracy as a model of the target: the greedy order
            target.holdout = [float(target.score(load_all(source))) for source in target.aligned()]
            record[HOLDOUT_KEY] = dict(zip(target.names, target.holdout, strict=True))
        entries = [ModelEntry("zeroshot", 0.0, lambda: load_state_dict(zeroshot))]
        for recipe in self.recipes:
            label = RECIPES[recipe]
            state, info = RECIPE_FNS[recipe](self, target)
            record["soups"][label] = info
            write_json(ctx.run_dir / OUT_DIR / "soup.json", record)
            directory = save_checkpoint(ctx.run_dir / "checkpoints" / label, state,
                                        meta.replace(method=label, soup={**info, "target": meta.dataset}))
            del state
            entries.append(ModelEntry(label, None, lambda d=directory: load_state_dict(d),
                                      extra={"n_ingredients": len(info["ingredients"])}, tag=label))
        if self.eval_ingredients:
            entries += [ModelEntry("ingredient", None, lambda c=i.checkpoint: target.transplant(c),
                                   extra={"ingredient": i.name, "dataset": read_meta(i.checkpoint).dataset},
                                   tag=f"ingredient_{i.name.replace('/', '_')}") for i in pool]
        return MergeResult(entries, zeroshot)
