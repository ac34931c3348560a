"""BitFit (Ben Zaken et al., 2022) for CLIP: every bias of both towers, plus the head's free part.

The text-tower biases only learn if the text tower is in the forward pass, so the head is derived from it
as in CLIPFit (``head.weight`` = the class prompts through the text tower, recomputed every step) and the
head's own free entry, its per-class bias ``head.bias``, is trained with the tower biases. ViT-B/16: 147 tower
bias tensors (171,008 parameters) plus ``head.bias``. The loss is cross-entropy; ``finetune.kd_lambda``
(default 0) adds CLIPFit's text KD term.
"""

from __future__ import annotations

from torch import nn

from wiseft_lab.models.classifier import ImageClassifier
from wiseft_lab.training.methods import FinetuneJob, Trainable, register_method
from wiseft_lab.training.text_head import train_text_head


def is_bias(name: str) -> bool:
    """``*.bias`` and fused biases such as ``attn.in_proj_bias``."""
    return name.rsplit(".", 1)[-1].endswith("bias")


def tower_biases(model: nn.Module) -> set[str]:
    return {name for name, _ in model.named_parameters() if name.startswith("clip.") and is_bias(name)}


def bitfit_trainable(model: nn.Module) -> set[str]:
    return tower_biases(model) | {"head.bias"}


@register_method("bitfit", trainable=Trainable(bitfit_trainable), head="text")
def finetune_bitfit(job: FinetuneJob) -> ImageClassifier:
    return train_text_head(job, kd_lambda=float(job.options.get("kd_lambda", 0.0)))
