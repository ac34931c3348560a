"""FLYP, "Finetune like you pretrain" (Goyal et al., CVPR 2023): contrastive fine-tuning of both towers.

Each training image is paired with a prompt of its class (a template drawn uniformly per example and step,
as FLYP's one-row-per-(image, template) CSV does) and the CLIP loss is minimised over the batch: symmetric
cross-entropy of ``logit_scale.exp() * norm(img) @ norm(txt).T`` against the diagonal (other examples of the
same class count as negatives, as in FLYP). Every CLIP entry is trained, ``logit_scale`` included (FLYP
optimises ``model.parameters()``); the head is the zero-shot head rebuilt from the fine-tuned text tower with
all templates, and is rebuilt again after every load or merge.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from wiseft_lab.models.classifier import ImageClassifier
from wiseft_lab.models.text_head import PromptBank, refresh_text_head
from wiseft_lab.training.job import FinetuneJob, FinetuneMethod
from wiseft_lab.training.losses import LossFn, clip_contrastive_loss
from wiseft_lab.training.registry import register_method
from wiseft_lab.training.trainable import Trainable


def clip_entries(model: nn.Module) -> set[str]:
    return {name for name, _ in model.named_parameters() if name.startswith("clip.")}


def sample_prompts(bank: PromptBank, labels: torch.Tensor) -> torch.Tensor:
    """One tokenised prompt per example: its class with a template drawn from the global (per-epoch seeded) RNG."""
    choice = torch.randint(bank.num_templates, (len(labels),))  # on the CPU: the same draws on every device
    return bank.per_class()[labels.cpu(), choice].to(bank.tokens.device)


def flyp_loss(bank: PromptBank) -> LossFn:
    def loss(model: nn.Module, batch) -> torch.Tensor:
        images, labels = batch
        text = model.clip.encode_text(sample_prompts(bank, labels))
        return clip_contrastive_loss(model.image_features(images), text, model.clip.logit_scale)
    return loss


@register_method("flyp")
@dataclass(kw_only=True)
class Flyp(FinetuneMethod):
    """Both towers (and ``logit_scale``) with the CLIP loss between images and prompts of their class."""

    trainable: ClassVar[Trainable] = Trainable(clip_entries)
    head: ClassVar[str] = "text"

    def run(self, job: FinetuneJob) -> ImageClassifier:
        model = job.model
        bank = PromptBank(job.bundle.tokenizer, job.meta.classnames, job.meta.templates,
                          next(model.parameters()).device)
        data = job.data(job.bundle.preprocess_train)
        self.train(job, model, data.dataset, loss_fn=flyp_loss(bank),
                   before_save=lambda: refresh_text_head(model, bank))
        refresh_text_head(model, bank)
        return model
