"""The zero-shot classification head, with the exact semantics of the official WiSE-FT code.

For each class: encode every prompt template, L2-normalise each text embedding, average them,
L2-normalise the mean, and scale by ``logit_scale.exp()``. The head is a linear layer
``[num_classes, dim]`` with a zero (trainable) bias that is applied to L2-normalised image features.

Models trained with the sigmoid loss (SigLIP) also learn a ``logit_bias``: their logits are
``logit_scale.exp() * cos + logit_bias`` and ``sigmoid(logits)`` is the probability of each image-text match
(open_clip ``model.py: CLIP.get_logits``, ``loss.py: SigLipLoss``; transformers ``SiglipModel``). Their zero-shot
head starts with every class's bias at ``logit_bias``, so the head's logits are the model's and a sigmoid of them
gives SigLIP's probabilities; the argmax and softmax are unchanged by this shared shift.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from wiseft_lab.models.templates import Template, fill_template, resolve_templates


class ClassificationHead(nn.Linear):
    """A linear layer on L2-normalised features (WiSE-FT's ``ClassificationHead(normalize=True)``)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None, normalize: bool = True):
        num_classes, dim = weight.shape
        super().__init__(dim, num_classes)
        self.normalize = normalize
        with torch.no_grad():
            self.weight.copy_(weight)
            self.bias.copy_(bias if bias is not None else torch.zeros(num_classes))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.normalize:
            features = features / features.norm(dim=-1, keepdim=True)
        return super().forward(features)


def normalize(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def class_weights(text_features: torch.Tensor, num_classes: int, logit_scale: torch.Tensor) -> torch.Tensor:
    """The zero-shot head's formula on class-major prompt embeddings ``[classes * templates, dim]``.

    Each prompt embedding is normalised, averaged over the templates of its class, normalised again and
    scaled by ``logit_scale.exp()`` (differentiable: the text-head methods train through it).
    """
    per_class = normalize(text_features.float()).view(num_classes, -1, text_features.shape[-1]).mean(dim=1)
    return normalize(per_class) * logit_scale.exp().float()


@torch.no_grad()
def zeroshot_weights(
    model: nn.Module,
    tokenizer: Callable,
    classnames: Sequence[str],
    templates: str | Sequence[Template],
) -> torch.Tensor:
    """The ``[num_classes, dim]`` class-embedding matrix scaled by ``logit_scale.exp()``."""
    templates = resolve_templates(templates)
    device = next(model.parameters()).device
    rows = []
    for classname in classnames:  # one class at a time: 1000 classes x 80 templates would not fit at once
        tokens = tokenizer([fill_template(t, classname) for t in templates]).to(device)
        rows.append(class_weights(model.encode_text(tokens), 1, model.logit_scale))
    return torch.cat(rows)


def zeroshot_bias(model: nn.Module, num_classes: int) -> torch.Tensor | None:
    """The zero-shot head's initial bias: SigLIP's ``logit_bias`` for every class, None (zeros) for CLIP."""
    logit_bias = getattr(model, "logit_bias", None)
    return None if logit_bias is None else torch.full((num_classes,), float(logit_bias.detach()))


def build_zeroshot_head(
    model: nn.Module,
    tokenizer: Callable,
    classnames: Sequence[str],
    templates: str | Sequence[Template] = "openai_imagenet",
) -> ClassificationHead:
    """A :class:`ClassificationHead` initialised from text prompts, as WiSE-FT's zero-shot model."""
    was_training = model.training
    model.eval()
    weight = zeroshot_weights(model, tokenizer, classnames, templates)
    model.train(was_training)
    return ClassificationHead(weight.cpu(), zeroshot_bias(model, len(classnames))).to(weight.device)
