"""Training losses (pure functions of a model and a batch): cross-entropy with mixup, the text-head loss with
CLIPFit's distillation term, and CLIP's contrastive loss."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from wiseft_lab.models.text_head import PromptBank
from wiseft_lab.models.zeroshot import class_weights, normalize
from wiseft_lab.training.augment import mixup_batch

Batch = tuple[torch.Tensor, torch.Tensor]
LossFn = Callable[[nn.Module, Batch], torch.Tensor]


def cross_entropy_loss(label_smoothing: float = 0.0, mixup_alpha: float = 0.0) -> LossFn:
    """Cross-entropy with label smoothing; ``mixup_alpha > 0`` mixes each training batch first (mixup).

    Mixup applies only in train mode: ``lam ~ Beta(alpha, alpha)``, inputs ``lam*x + (1-lam)*x[perm]``, loss
    ``lam*CE(y) + (1-lam)*CE(y[perm])`` (:func:`wiseft_lab.training.augment.mixup_batch`).
    """
    def loss(model: nn.Module, batch: Batch) -> torch.Tensor:
        inputs, labels = batch
        if mixup_alpha and model.training:
            mixed, labels_a, labels_b, lam = mixup_batch(inputs, labels, float(mixup_alpha))
            logits = model(mixed).float()
            return (lam * F.cross_entropy(logits, labels_a, label_smoothing=label_smoothing)
                    + (1.0 - lam) * F.cross_entropy(logits, labels_b, label_smoothing=label_smoothing))
        return F.cross_entropy(model(inputs).float(), labels, label_smoothing=label_smoothing)
    return loss


def image_embeddings(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    return normalize(model.image_features(images).float())


def kd_term(text: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """CLIPFit's regulariser ``1 - mean_p cos(t_p, t_p^orig)`` (CosineSimilarity, eps 1e-7)."""
    return 1.0 - F.cosine_similarity(text.float(), original.float(), dim=-1, eps=1e-7).mean()


def text_head_loss(bank: PromptBank, *, kd_lambda: float = 0.0, original: torch.Tensor | None = None,
                   label_smoothing: float = 0.0) -> LossFn:
    """Cross-entropy of ``head(image)`` with the head recomputed through the text tower, plus CLIPFit's KD term.

    ``logits = logit_scale.exp() * norm(image) @ norm(text).T + head.bias``; with ``kd_lambda > 0`` the loss adds
    ``kd_lambda * (1 - mean cos(text_p, original_p))`` over every prompt ``p``, ``original`` being the text
    features of the same prompts from the frozen original text tower.
    """
    if kd_lambda and original is None:
        raise ValueError("The knowledge-distillation term needs the original text features.")

    def loss(model: nn.Module, batch: Batch) -> torch.Tensor:
        images, labels = batch
        text = model.clip.encode_text(bank.tokens).float()
        weights = class_weights(text, bank.num_classes, model.clip.logit_scale)
        logits = F.linear(image_embeddings(model, images), weights, model.head.bias.float())
        value = F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
        if kd_lambda:
            value = value + kd_lambda * kd_term(text, original)
        return value
    return loss


def clip_contrastive_loss(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """open_clip's ``ClipLoss`` on one device: mean of image->text and text->image cross-entropy."""
    logits = logit_scale.exp() * normalize(image.float()) @ normalize(text.float()).T
    target = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
