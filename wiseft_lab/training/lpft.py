"""LP-FT (Kumar et al., ICLR 2022): linear probing, then full fine-tuning from the probed head.

Stage 1 trains only the head, initialised from the zero-shot head, on frozen image features (computed once
with eval preprocessing and cached like ``lc``), with ``finetune.lp`` settings (epochs, lr, weight decay;
cosine schedule without warm-up). Its result is kept as ``checkpoints/lp``. Stage 2 is ``e2e`` (image tower
and head, the configured optimiser and schedule) starting from that head; its result is the usual
``checkpoints/finetuned``. WiSE-FT interpolates either against the zero-shot model, e.g.
``stages=[merge,evaluate] checkpoints.zeroshot=<run>/checkpoints/zeroshot checkpoints.finetuned=<run>/checkpoints/lp``.
"""

from __future__ import annotations

import dataclasses
import functools
import logging

from wiseft_lab.models.checkpoint import is_checkpoint, load_state_dict, save_checkpoint
from wiseft_lab.models.classifier import ImageClassifier
from wiseft_lab.training.loop import latest_epoch_dir
from wiseft_lab.training.methods import (
    FinetuneJob,
    finetune_end_to_end,
    is_image_tower_or_head,
    register_method,
    train_head_on_features,
)
from wiseft_lab.training.schedules import WarmupCosine

log = logging.getLogger(__name__)

LP_CHECKPOINT = "lp"
LP_EPOCHS_DIR = "lp_epochs"


def linear_probe(job: FinetuneJob) -> None:
    """Stage 1: the head alone on frozen features, then ``checkpoints/lp``."""
    lp = dict(job.options.get("lp") or {})
    epochs = int(lp.get("epochs", job.loop.epochs))
    overrides = {k: lp[k] for k in ("lr", "weight_decay") if lp.get(k) is not None}
    head_names = [name for name, p in job.model.named_parameters() if name.startswith("head.")]
    for name, param in job.model.named_parameters():
        param.requires_grad_(name.startswith("head."))
    meta = {**job.meta, "stage": "lp", "trainable": head_names}
    train_head_on_features(
        job, checkpoint_dir=job.checkpoint_dir / LP_EPOCHS_DIR, loop=dataclasses.replace(job.loop, epochs=epochs),
        optimizer_factory=functools.partial(job.optimizer_factory, **overrides),
        scheduler_factory=functools.partial(WarmupCosine, warmup_steps=int(lp.get("warmup_steps", 0))), meta=meta)
    save_checkpoint(job.checkpoint_dir / LP_CHECKPOINT, job.model, {**meta, "epoch": epochs})
    log.info("LP-FT stage 1 (linear probe) checkpoint: %s", job.checkpoint_dir / LP_CHECKPOINT)


@register_method("lpft", trainable=is_image_tower_or_head, augments=True, caches_features=True)
def finetune_lpft(job: FinetuneJob) -> ImageClassifier:
    """Stage 1 (skipped when its checkpoint exists or stage 2 is being resumed), then stage 2 (``e2e``)."""
    stage2_started = job.resume and latest_epoch_dir(job.checkpoint_dir) is not None
    lp_dir = job.checkpoint_dir / LP_CHECKPOINT
    trainable = {name for name, p in job.model.named_parameters() if p.requires_grad}
    if stage2_started:
        log.info("LP-FT: resuming stage 2 from %s", job.checkpoint_dir)
    elif job.resume and is_checkpoint(lp_dir):
        job.model.load_state_dict(load_state_dict(lp_dir), strict=True)
        log.info("LP-FT: stage 1 already done, loaded %s", lp_dir)
    else:
        linear_probe(job)
    for name, param in job.model.named_parameters():
        param.requires_grad_(name in trainable)
    return finetune_end_to_end(job)
