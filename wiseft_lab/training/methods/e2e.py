"""WiSE-FT's end-to-end fine-tuning: the image tower and the zero-shot-initialised head."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from wiseft_lab.models.classifier import ImageClassifier
from wiseft_lab.training.augment import with_randaugment
from wiseft_lab.training.job import FinetuneJob, FinetuneMethod
from wiseft_lab.training.losses import cross_entropy_loss
from wiseft_lab.training.registry import register_method
from wiseft_lab.training.trainable import Trainable, is_image_tower_or_head


@register_method("e2e")
@dataclass(kw_only=True)
class EndToEnd(FinetuneMethod):
    """Image tower and head, with open_clip's train-time augmentation.

    ``randaugment``: a timm RandAugment string (e.g. ``rand-m9-n2``) added after the random crop; ``mixup_alpha > 0``
    mixes batches with ``lam ~ Beta(alpha, alpha)`` (the model-soups search uses both).
    """

    trainable: ClassVar[Trainable] = Trainable.by_name(is_image_tower_or_head)

    mixup_alpha: float = 0.0
    randaugment: str | None = None

    def train_transform(self, job: FinetuneJob):
        """open_clip's train transform, with RandAugment when ``randaugment`` names one."""
        return with_randaugment(job.bundle.preprocess_train, self.randaugment)

    def run(self, job: FinetuneJob) -> ImageClassifier:
        data = job.data(self.train_transform(job))
        self.train(job, job.model, data.dataset,
                   loss_fn=cross_entropy_loss(self.label_smoothing, mixup_alpha=float(self.mixup_alpha or 0.0)))
        return job.model
