"""Cross-dataset soups (model soups, Wortsman et al. 2022, Sec. 3.5): ``merge=cross_dataset_soup``.

The ingredients were fine-tuned on *other* data sets (each with its own head and classes); the run's eval suite
is the target (e.g. CIFAR-100, which none of them saw). The target's zero-shot model is built here: the run's
``model`` weights with a head over the reference set's classes from the zero-shot text tower (e2e fine-tuning
leaves the text tower untouched, so the soup's text tower is the zero-shot one; ingredients that kept theirs are
averaged like the rest). The soup averages, uniformly, every entry the zero-shot model and all ingredients share
(the towers; never a head: :func:`~wiseft_lab.weight_space.cross.cross_dataset_soup`) and keeps the target head.
Evaluated: the zero-shot model, the soup, and each ingredient's towers under the target head.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wiseft_lab.io import write_json
from wiseft_lab.merging.pool import Ingredient, resolve_pool
from wiseft_lab.merging.registry import MergeContext, MergeResult, MergeStrategy, ModelEntry, register_merge
from wiseft_lab.models.checkpoint import StateDict, load_state_dict, read_meta, save_checkpoint
from wiseft_lab.models.templates import resolve_templates, template_text
from wiseft_lab.models.zeroshot import build_zeroshot_head
from wiseft_lab.weight_space.cross import cross_dataset_soup
from wiseft_lab.weight_space.ingredients import tensor_specs

log = logging.getLogger(__name__)

OUT_DIR = "cross_dataset_soup"


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


@register_merge("cross_dataset_soup")
@dataclass(kw_only=True)
class CrossDatasetSoup(MergeStrategy):
    """The uniform soup of models fine-tuned on other data sets (and the zero-shot one), scored on the target."""

    pool: Any = None               # a multirun directory, a glob of checkpoints, or a list of either
    checkpoint: str = "finetuned"  # which checkpoint of each job is an ingredient
    include_zeroshot: bool = True  # the zero-shot model is one ingredient (the paper's soups always contain it)
    eval_ingredients: bool = True  # also score each ingredient's towers under the target head

    def run(self, ctx: MergeContext) -> MergeResult:
        pool, skipped = resolve_pool(self.pool, str(self.checkpoint))
        for item in skipped:
            log.warning("Cross-dataset soup pool: skipping %s: %s", item["source"], item["reason"])
        if not pool:
            raise FileNotFoundError(f"No ingredient checkpoint found in merge.pool={self.pool!r}")
        zeroshot = target_zeroshot(ctx, pool[0])
        sources = [*([zeroshot] if self.include_zeroshot else []), *(i.checkpoint for i in pool)]
        state, keys = cross_dataset_soup(zeroshot, sources)
        names = [i.name for i in pool]
        record = {"target": read_meta(zeroshot).dataset, "ingredients": names,
                  "include_zeroshot": bool(self.include_zeroshot), "datasets": [read_meta(i.checkpoint).dataset
                                                                               for i in pool],
                  "averaged_keys": len(keys), "kept_keys": len(state) - len(keys)}
        write_json(ctx.run_dir / OUT_DIR / "soup.json", record)
        log.info("Cross-dataset soup of %d models: %d entries averaged, %d kept from the target's zero-shot model",
                 len(sources), len(keys), len(state) - len(keys))
        directory = save_checkpoint(ctx.run_dir / "checkpoints" / "cross_dataset_soup", state,
                                    read_meta(zeroshot).replace(method="cross_dataset_soup", soup=record))
        del state
        entries = [ModelEntry("zeroshot", 0.0, lambda: load_state_dict(zeroshot)),
                   ModelEntry("cross_dataset_soup", None, lambda: load_state_dict(directory),
                              extra={"n_ingredients": len(sources)}, tag="cross_dataset_soup")]
        if self.eval_ingredients:
            entries += [ModelEntry("ingredient", None, lambda c=i.checkpoint: _transplant(zeroshot, c),
                                   extra={"ingredient": i.name, "dataset": read_meta(i.checkpoint).dataset},
                                   tag=f"ingredient_{i.name.replace('/', '_')}") for i in pool]
        return MergeResult(entries, zeroshot)


def _transplant(zeroshot: Path, checkpoint: Path) -> StateDict:
    """An ingredient's shared entries under the target's head."""
    return cross_dataset_soup(zeroshot, [checkpoint])[0]
