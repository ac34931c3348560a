"""Model Stock (Jang, Yun & Han, ECCV 2024): ``merge=model_stock`` over k >= 2 models fine-tuned from one start.

Per state-dict tensor, the ratio ``t = k cos / ((k - 1) cos + 1)`` towards the fine-tuned mean follows from the
mean pairwise cosine between the fine-tuning deltas (:mod:`wiseft_lab.weight_space.model_stock`): no held-out
search. The fine-tuned models come from ``pool`` (as for the soups: a multirun directory, a glob or a list); the
pre-trained model is ``pretrained`` (default: the run's zero-shot checkpoint, else the ``zeroshot`` checkpoint
beside the first ingredient). Evaluated next to the pre-trained model and every ingredient; the per-layer cosines
and ratios go to ``<run>/model_stock/model_stock.json``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from omegaconf import OmegaConf

from wiseft_lab.io import write_json
from wiseft_lab.merging.pool import ingredient_entries, resolve_pool, resolve_pretrained
from wiseft_lab.merging.registry import MergeContext, MergeResult, MergeStrategy, ModelEntry, register_merge
from wiseft_lab.models.checkpoint import load_state_dict, read_meta, save_checkpoint
from wiseft_lab.weight_space.model_stock import MODEL_STOCK_EPS, model_stock

log = logging.getLogger(__name__)

OUT_DIR = "model_stock"


@register_merge("model_stock")
@dataclass(kw_only=True)
class ModelStock(MergeStrategy):
    """Model Stock of the pool's fine-tuned models and the pre-trained one."""

    pool: Any = None               # a multirun directory, a glob of checkpoints, or a list of either
    checkpoint: str = "finetuned"  # which checkpoint of each job is an ingredient
    pretrained: str | None = None  # the common start; None: see resolve_pretrained
    exclude: list[str] = field(default_factory=list)  # keys merged by the plain mean (no ratio)
    eps: float = MODEL_STOCK_EPS
    eval_ingredients: bool = True  # also evaluate the pre-trained model and every ingredient

    def run(self, ctx: MergeContext) -> MergeResult:
        pool, skipped = resolve_pool(self.pool, str(self.checkpoint))
        for item in skipped:
            log.warning("Model Stock pool: skipping %s: %s", item["source"], item["reason"])
        if len(pool) < 2:
            raise ValueError(f"Model Stock needs at least two fine-tuned models; merge.pool={self.pool!r} gave "
                             f"{len(pool)}.")
        pretrained = resolve_pretrained(self.pretrained, ctx.zeroshot, pool)
        names = [i.name for i in pool]
        result = model_stock(pretrained, [i.checkpoint for i in pool], exclude=list(self.exclude),
                             eps=float(self.eps), names=names)
        record = {"pretrained": str(pretrained), "ingredients": names, **result.record()}
        out = ctx.run_dir / OUT_DIR
        write_json(out / "model_stock.json", record)
        ratios = list(result.ratios.values())
        log.info("Model Stock of %d models: ratio t from %.3f to %.3f over %d tensors", result.k, min(ratios),
                 max(ratios), len(ratios))
        meta = read_meta(pretrained).replace(
            method="model_stock", trainable=[], epoch=None, step=None, metrics={},
            merge={"kind": "model_stock", "pretrained": str(pretrained), "ingredients": names},
            config=OmegaConf.to_container(ctx.run_cfg.merge, resolve=True) if "merge" in ctx.run_cfg else None)
        directory = save_checkpoint(ctx.run_dir / "checkpoints" / "model_stock", result.state, meta)
        del result
        entries = [ModelEntry("model_stock", None, lambda: load_state_dict(directory),
                              extra={"n_ingredients": len(pool)}, tag="model_stock")]
        if self.eval_ingredients:
            entries = [ModelEntry("zeroshot", 0.0, lambda: load_state_dict(pretrained)), *entries,
                       *ingredient_entries(pool)]
        return MergeResult(entries, pretrained)
