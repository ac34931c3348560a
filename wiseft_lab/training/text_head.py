"""Heads that are a function of the text tower (CLIPFit, BitFit, FLYP) and their prompts.

For these methods the classifier's ``head.weight`` is not a free parameter: it is
``logit_scale.exp() * normalize(mean_t normalize(encode_text(template_t(class))))``, exactly the zero-shot head
of :func:`wiseft_lab.models.zeroshot.zeroshot_weights`, but computed *through the (partly) trainable text
tower*. During training it is recomputed at every step (with gradients); after training, after loading a
checkpoint and after any weight-space merge it is rebuilt from the text tower the model has then
(:func:`finalize_text_head`), so that WiSE-FT at ``alpha`` evaluates the head of the interpolated text
tower, not an interpolation of two heads.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from wiseft_lab.models.classifier import has_text_tower
from wiseft_lab.models.zeroshot import (
    ClassificationHead,
    Template,
    class_weights,
    fill_template,
    normalize,
    register_templates,
    zeroshot_bias,
)
from wiseft_lab.precision import autocast
from wiseft_lab.training.augment import coop_train_transform

log = logging.getLogger(__name__)

# The one prompt per data set that CoOp and CLIPFit use (their ``CUSTOM_TEMPLATES``), keyed by this
# project's data config names. Registered as template sets ``coop_<name>``.
COOP_TEMPLATES: dict[str, str] = {
    "imagenet": "a photo of a {}.",
    "caltech101": "a photo of a {}.",
    "oxford_pets": "a photo of a {}, a type of pet.",
    "stanford_cars": "a photo of a {}.",
    "flowers102": "a photo of a {}, a type of flower.",
    "food101": "a photo of {}, a type of food.",
    "fgvc_aircraft": "a photo of a {}, a type of aircraft.",
    "sun397": "a photo of a {}.",
    "dtd": "a photo of a {}, a type of texture.",
    "eurosat": "a centered satellite photo of {}.",
    "ucf101": "a photo of a person doing {}.",
    "imagenet_sketch": "a photo of a {}.",
    "imagenetv2": "a photo of a {}.",
    "imagenet_a": "a photo of a {}.",
    "imagenet_r": "a photo of a {}.",
}
COOP_DEFAULT = "a photo of a {}."
for _name, _template in COOP_TEMPLATES.items():
    register_templates(f"coop_{_name}", (_template,))


def coop_templates(dataset_keys: Sequence[str | None]) -> tuple[str, ...]:
    """The CoOp/CLIPFit prompt of the first known key (data config choice, ``data.name``), else CoOp's default."""
    for key in dataset_keys:
        if key and str(key).lower() in COOP_TEMPLATES:
            return (COOP_TEMPLATES[str(key).lower()],)
    log.warning("No CoOp prompt registered for data set %s: using %r", [k for k in dataset_keys if k], COOP_DEFAULT)
    return (COOP_DEFAULT,)


def prompt_text(template: Template, classname: str) -> str:
    """A prompt as CoOp/CLIPFit write it: underscores in class names become spaces."""
    return fill_template(template, classname.replace("_", " "))


class PromptBank:
    """Every ``template(class)`` prompt tokenised once, class-major: row ``c * T + t``."""

    def __init__(self, tokenizer: Callable, classnames: Sequence[str], templates: Sequence[Template],
                 device: torch.device | str = "cpu"):
        if not templates:
            raise ValueError("A text head needs at least one prompt template.")
        self.classnames = list(classnames)
        self.templates = list(templates)
        texts = [prompt_text(t, c) for c in self.classnames for t in self.templates]
        self.tokens = tokenizer(texts).to(device)

    @property
    def num_classes(self) -> int:
        return len(self.classnames)

    @property
    def num_templates(self) -> int:
        return len(self.templates)

    def to(self, device: torch.device | str) -> PromptBank:
        self.tokens = self.tokens.to(device)
        return self

    def per_class(self) -> torch.Tensor:
        """Tokens as ``[classes, templates, context]``."""
        return self.tokens.view(self.num_classes, self.num_templates, -1)


def text_weights(clip: nn.Module, bank: PromptBank) -> torch.Tensor:
    """Head weights through ``clip``'s current text tower (with gradients when they are enabled)."""
    return class_weights(clip.encode_text(bank.tokens), bank.num_classes, clip.logit_scale)


@torch.no_grad()
def refresh_text_head(model: nn.Module, bank: PromptBank) -> None:
    """Overwrite ``model.head.weight`` with the head of the model's current text tower (bias untouched)."""
    was_training = model.training
    model.eval()
    weights = text_weights(model.clip, bank.to(model.head.weight.device))
    model.head.weight.copy_(weights.to(model.head.weight.dtype))
    model.train(was_training)


def build_text_head(clip: nn.Module, tokenizer: Callable, classnames: Sequence[str],
                    templates: Sequence[Template]) -> ClassificationHead:
    """A zero-shot head with the prompts written as the text-head methods write them (underscores as spaces)."""
    if not has_text_tower(clip):
        raise ValueError("This model has no text tower: keep it (finetune.keep_text=true) to build heads from text.")
    device = next(clip.parameters()).device
    was_training = clip.training
    clip.eval()
    with torch.no_grad():
        weights = text_weights(clip, PromptBank(tokenizer, classnames, templates, device))
    clip.train(was_training)
    return ClassificationHead(weights.cpu(), zeroshot_bias(clip, len(classnames))).to(device)


def finalize_text_head(model: nn.Module, meta: Mapping[str, Any], tokenizer: Callable) -> bool:
    """Rebuild the head from the model's text tower when the checkpoint's method derives it from text.

    Applied after every load (and so after every interpolation or soup) of such a checkpoint; a no-op for
    linear heads. Returns whether the head was rebuilt.
    """
    if meta.get("head") != "text":
        return False
    if not has_text_tower(model.clip):
        raise ValueError("The checkpoint's head is derived from the text tower, but the model has no text tower.")
    refresh_text_head(model, PromptBank(tokenizer, meta["classnames"], meta["templates"]))
    return True


# ----------------------------------------------------------------------------------------------- losses
def image_embeddings(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    return normalize(model.image_features(images).float())


def text_head_loss(bank: PromptBank, *, kd_lambda: float = 0.0, original: torch.Tensor | None = None,
                   label_smoothing: float = 0.0):
    """Cross-entropy of ``head(image)`` with the head recomputed through the text tower, plus CLIPFit's KD term.

    ``logits = logit_scale.exp() * norm(image) @ norm(text).T + head.bias``; with ``kd_lambda > 0`` the loss adds
    ``kd_lambda * (1 - mean cos(text_p, original_p))`` over every prompt ``p``, ``original`` being the text
    features of the same prompts from the frozen original text tower.
    """
    if kd_lambda and original is None:
        raise ValueError("The knowledge-distillation term needs the original text features.")

    def loss(model: nn.Module, batch) -> torch.Tensor:
        images, labels = batch
        text = model.clip.encode_text(bank.tokens).float()
        weights = class_weights(text, bank.num_classes, model.clip.logit_scale)
        logits = F.linear(image_embeddings(model, images), weights, model.head.bias.float())
        value = F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
        if kd_lambda:
            value = value + kd_lambda * kd_term(text, original)
        return value
    return loss


def kd_term(text: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """CLIPFit's regulariser ``1 - mean_p cos(t_p, t_p^orig)`` (CosineSimilarity, eps 1e-7)."""
    return 1.0 - F.cosine_similarity(text.float(), original.float(), dim=-1, eps=1e-7).mean()


def train_text_head(job, *, kd_lambda: float = 0.0):
    """Fine-tune ``job.model``'s selected entries with :func:`text_head_loss` (the head follows the text tower).

    ``original`` text features for the KD term come from the model as handed over (the zero-shot text tower,
    before any resumed state is loaded), computed once with the training precision.
    """
    from wiseft_lab.training.methods import run_trainer  # late: methods imports the method modules

    model = job.model
    device = next(model.parameters()).device
    bank = PromptBank(job.bundle.tokenizer, job.meta["classnames"], job.meta["templates"], device)
    original = None
    if kd_lambda:
        model.eval()
        with torch.no_grad(), autocast(device, job.loop.precision):
            original = model.clip.encode_text(bank.tokens).float()
    augmentation = job.options.get("train_transform", "openclip")
    if augmentation not in ("openclip", "coop"):
        raise ValueError(f"finetune.train_transform must be openclip or coop, not {augmentation!r}")
    transform = (coop_train_transform(job.bundle.preprocess_val) if augmentation == "coop"
                 else job.bundle.preprocess_train)
    data = job.train_data(transform=transform)
    loss = text_head_loss(bank, kd_lambda=kd_lambda, original=original, label_smoothing=job.label_smoothing)
    run_trainer(job, model, data.dataset, loss_fn=loss, before_save=lambda: refresh_text_head(model, bank))
    refresh_text_head(model, bank)
    return model
