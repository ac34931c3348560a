"""The merge stage: the endpoints plus what ``merge`` makes of them, as entries for the evaluate stage."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from wiseft_lab.merging.registry import MergeContext, MergeResult, ModelEntry, cached_loader
from wiseft_lab.models.checkpoint import StateDict, read_meta, save_checkpoint
from wiseft_lab.pipeline.context import RunContext
from wiseft_lab.pipeline.finetune import Endpoints


@dataclass
class Candidates:
    """Everything the evaluate stage scores, and the checkpoint whose architecture they share."""

    entries: list[ModelEntry]
    template: Path
    select_alpha: list[str] = field(default_factory=list)  # alpha-selection rules applied after the evaluation


def merge_context(ctx: RunContext, endpoints: Endpoints) -> MergeContext:
    return MergeContext(run_cfg=ctx.cfg, run_dir=ctx.run_dir, device=ctx.device, precision=ctx.precision,
                        zeroshot=endpoints.zeroshot, finetuned=endpoints.finetuned, models=ctx.models,
                        holdout=ctx.holdout_suite(), eval_batch_size=ctx.cfg.eval.batch_size,
                        suite=lambda: ctx.suite(ctx.task().train.classnames),
                        train_subset=ctx.train_subset_suite,
                        log_metrics=ctx.logger.log)


def merge(ctx: RunContext, endpoints: Endpoints, *, run_strategy: bool = True) -> Candidates:
    """The endpoints (given or produced) and, with ``run_strategy``, the merged models; saves those asked for."""
    cache: dict[Path, StateDict] = {}
    entries = [ModelEntry(name, alpha, cached_loader(path, cache))
               for name, alpha, path in (("zeroshot", 0.0, endpoints.zeroshot), ("finetuned", 1.0, endpoints.finetuned))
               if path]
    result = MergeResult([])
    if run_strategy:
        result = ctx.strategy.run(merge_context(ctx, endpoints))
    template = endpoints.zeroshot or endpoints.finetuned or result.template
    if template is None:
        raise FileNotFoundError(
            "Nothing to evaluate or merge: run the finetune stage, or pass checkpoints.zeroshot=<dir> and/or "
            "checkpoints.finetuned=<dir> (directories with model.safetensors + meta.json).")
    for entry in result.entries:
        if entry.save_as:
            model = ctx.models.load(ctx.models.skeleton(template), entry.weights())
            meta = read_meta(template).replace(method=entry.save_as, merge=dict(entry.extra))
            save_checkpoint(ctx.checkpoint_dir / entry.save_as, model, meta)
    return Candidates(entries + result.entries, template, result.select_alpha)
