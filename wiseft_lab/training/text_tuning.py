"""The recipe of the methods whose head is derived from the text tower (CLIPFit, BitFit): cross-entropy through
the text head, recomputed every step, plus CLIPFit's distillation term towards the original text features.
:class:`TextHeadMethod` is their common base: they differ in the entries they train and the KD weight."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from wiseft_lab.models.classifier import ImageClassifier
from wiseft_lab.models.text_head import PromptBank, refresh_text_head
from wiseft_lab.precision import autocast
from wiseft_lab.training.augment import coop_train_transform
from wiseft_lab.training.job import FinetuneJob, FinetuneMethod
from wiseft_lab.training.losses import text_head_loss

TRAIN_TRANSFORMS = ("openclip", "coop")


def train_text_head(method: FinetuneMethod, job: FinetuneJob, *, kd_lambda: float = 0.0,
                    train_transform: str = "openclip") -> ImageClassifier:
    """Fine-tune ``job.model``'s selected entries with the text-head loss (the head follows the text tower).

    ``original`` text features for the KD term come from the model as handed over (the zero-shot text tower,
    before any resumed state is loaded), computed once with the training precision. ``train_transform``:
    ``openclip`` (open_clip's train transform) or ``coop`` (Dassl's random resized crop + flip).
    """
    if train_transform not in TRAIN_TRANSFORMS:
        raise ValueError(f"finetune.train_transform must be one of {TRAIN_TRANSFORMS}, not {train_transform!r}")
    model = job.model
    device = next(model.parameters()).device
    bank = PromptBank(job.bundle.tokenizer, job.meta.classnames, job.meta.templates, device)
    original = None
    if kd_lambda:
        model.eval()
        with torch.no_grad(), autocast(device, job.precision):
            original = model.clip.encode_text(bank.tokens).float()
    transform = (coop_train_transform(job.bundle.preprocess_val) if train_transform == "coop"
                 else job.bundle.preprocess_train)
    data = job.data(transform)
    loss = text_head_loss(bank, kd_lambda=kd_lambda, original=original, label_smoothing=method.label_smoothing)
    method.train(job, model, data.dataset, loss_fn=loss, before_save=lambda: refresh_text_head(model, bank))
    refresh_text_head(model, bank)
    return model


@dataclass(kw_only=True)
class TextHeadMethod(FinetuneMethod):
    """A method trained with :func:`train_text_head`; subclasses set ``trainable`` and the ``kd_lambda`` default."""

    head: ClassVar[str] = "text"

    kd_lambda: float = 0.0          # > 0 adds CLIPFit's text KD term
    train_transform: str = "coop"   # coop: Dassl's random resized crop (scale 0.08-1) + flip; openclip: open_clip's

    def run(self, job: FinetuneJob) -> ImageClassifier:
        return train_text_head(self, job, kd_lambda=float(self.kd_lambda), train_transform=self.train_transform)
