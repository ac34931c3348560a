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
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

from wiseft_lab.models.checkpoint import is_checkpoint, load_state_dict, save_checkpoint
from wiseft_lab.models.classifier import ImageClassifier
from wiseft_lab.training.job import FinetuneJob
from wiseft_lab.training.loop import latest_checkpoint_dir
from wiseft_lab.training.methods.e2e import EndToEnd
from wiseft_lab.training.methods.lc import train_head_on_features
from wiseft_lab.training.registry import register_method
from wiseft_lab.training.schedules import WarmupCosine
from wiseft_lab.training.trainable import is_head

log = logging.getLogger(__name__)

LP_CHECKPOINT = "lp"
LP_EPOCHS_DIR = "lp_epochs"


@dataclass
class LinearProbe:
    """Stage 1's settings (``finetune.lp``): ``None`` takes stage 2's epochs / the optimiser's lr and decay."""

    epochs: int | None = None
    lr: float | None = 1.0e-3
    weight_decay: float | None = 0.0
    warmup_steps: int = 0


@register_method("lpft")
@dataclass(kw_only=True)
class LPFT(EndToEnd):
    """Stage 1 (skipped when its checkpoint exists or stage 2 is being resumed), then stage 2 (``e2e``)."""

    caches_features: ClassVar[bool] = True

    lp: LinearProbe = field(default_factory=LinearProbe)

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.lp, Mapping):  # given without its _target_
            self.lp = LinearProbe(**self.lp)

    def linear_probe(self, job: FinetuneJob) -> None:
        """Stage 1: the head alone on frozen features, then ``checkpoints/lp``."""
        lp = self.lp
        epochs = self.epochs if lp.epochs is None else int(lp.epochs)
        overrides = {k: getattr(lp, k) for k in ("lr", "weight_decay") if getattr(lp, k) is not None}
        head_names = [name for name, _ in job.model.named_parameters() if is_head(name)]
        for name, param in job.model.named_parameters():
            param.requires_grad_(is_head(name))
        meta = job.meta.replace(stage="lp", trainable=head_names)
        train_head_on_features(
            self, job, checkpoint_dir=job.checkpoint_dir / LP_EPOCHS_DIR,
            loop=dataclasses.replace(self.loop(job), epochs=epochs),
            optimizer_factory=functools.partial(job.optimizer_factory, **overrides),
            scheduler_factory=functools.partial(WarmupCosine, warmup_steps=int(lp.warmup_steps)), meta=meta)
        save_checkpoint(job.checkpoint_dir / LP_CHECKPOINT, job.model, meta.replace(epoch=epochs))
        log.info("LP-FT stage 1 (linear probe) checkpoint: %s", job.checkpoint_dir / LP_CHECKPOINT)

    def run(self, job: FinetuneJob) -> ImageClassifier:
        stage2_started = job.resume and latest_checkpoint_dir(job.checkpoint_dir) is not None
        lp_dir = job.checkpoint_dir / LP_CHECKPOINT
        trainable = {name for name, p in job.model.named_parameters() if p.requires_grad}
        if stage2_started:
            log.info("LP-FT: resuming stage 2 from %s", job.checkpoint_dir)
        elif job.resume and is_checkpoint(lp_dir):
            job.model.load_state_dict(load_state_dict(lp_dir), strict=True)
            log.info("LP-FT: stage 1 already done, loaded %s", lp_dir)
        else:
            self.linear_probe(job)
        for name, param in job.model.named_parameters():
            param.requires_grad_(name in trainable)
        return super().run(job)
