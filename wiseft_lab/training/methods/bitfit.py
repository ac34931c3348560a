"""BitFit (Ben Zaken et al., 2022) for CLIP: every bias of both towers, plus the head's free part.

The text-tower biases only learn if the text tower is in the forward pass, so the head is derived from it
as in CLIPFit (``head.weight`` = the class prompts through the text tower, recomputed every step) and the
head's own free entry, its per-class bias ``head.bias``, is trained with the tower biases. ViT-B/16: 147 tower
bias tensors (171,008 parameters) plus ``head.bias``. The loss is cross-entropy; ``finetune.kd_lambda``
(default 0) adds CLIPFit's text KD term.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from wiseft_lab.training.registry import register_method
from wiseft_lab.training.text_tuning import TextHeadMethod
from wiseft_lab.training.trainable import Trainable


def is_bias(name: str) -> bool:
    """``*.bias`` and fused biases such as ``attn.in_proj_bias``."""
    return name.rsplit(".", 1)[-1].endswith("bias")


def tower_biases(model: nn.Module) -> set[str]:
    return {name for name, _ in model.named_parameters() if name.startswith("clip.") and is_bias(name)}


def bitfit_trainable(model: nn.Module) -> set[str]:
    return tower_biases(model) | {"head.bias"}


@register_method("bitfit")
@dataclass(kw_only=True)
class BitFit(TextHeadMethod):
    """Every bias of both towers plus ``head.bias``; ``kd_lambda > 0`` adds CLIPFit's text KD term."""

    trainable: ClassVar[Trainable] = Trainable(bitfit_trainable)

    kd_lambda: float = 0.0
