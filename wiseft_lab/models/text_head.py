"""Heads derived from the text tower: the class prompts encoded by the model's own (possibly tuned) text tower.

CLIPFit, BitFit and FLYP train the text tower, so their head is a function of it: ``head.weight`` is the zero-shot
formula applied to the current text tower (:func:`refresh_text_head`), rebuilt after every load, interpolation or
soup of such a checkpoint (:func:`finalize_text_head`), so that WiSE-FT at ``alpha`` evaluates the head of the
interpolated text tower, not an interpolation of two heads. Prompts are written as CoOp/CLIPFit write them
(underscores in class names become spaces).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from wiseft_lab.models.checkpoint import CheckpointMeta
from wiseft_lab.models.classifier import has_text_tower
from wiseft_lab.models.templates import Template, fill_template
from wiseft_lab.models.zeroshot import ClassificationHead, class_weights, zeroshot_bias


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


def finalize_text_head(model: nn.Module, meta: CheckpointMeta, tokenizer: Callable) -> bool:
    """Rebuild the head from the model's text tower when the checkpoint's method derives it from text.

    Applied after every load (and so after every interpolation or soup) of such a checkpoint; a no-op for
    linear heads. Returns whether the head was rebuilt.
    """
    if meta.head != "text":
        return False
    if not has_text_tower(model.clip):
        raise ValueError("The checkpoint's head is derived from the text tower, but the model has no text tower.")
    refresh_text_head(model, PromptBank(tokenizer, meta.classnames, meta.templates))
    return True
