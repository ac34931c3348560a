"""CLIPFit (Li et al., EMNLP 2024): fine-tune a few bias and LayerNorm entries of CLIP, per tower.

As in the official ``trainers/ClipFit.py``:

* trainable, text tower: the bias of the second MLP linear layer of every block (``...mlp.c_proj.bias``);
* trainable, image tower: every LayerNorm gain and bias (``ln_pre``, each block's ``ln_1``/``ln_2``,
  ``ln_post``); a ResNet image tower has no LayerNorm, so it contributes nothing;
* nothing else (not the text LayerNorms, not the image MLP biases, not ``logit_scale``, not the head);
* class embeddings are recomputed at every step from one prompt per class through the text tower, and
  the loss is ``CE(logit_scale.exp() * norm(img) @ norm(txt).T) + lambda * (1 - mean_c cos(t_c, t_c^orig))``.

The rule is applied per tower: matching ``c_proj.bias`` and ``ln`` over the whole model would also pick the
image MLP biases and the text LayerNorms (126 tensors on ViT-B/16 instead of 64).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from wiseft_lab.training.registry import register_method
from wiseft_lab.training.text_tuning import TextHeadMethod
from wiseft_lab.training.trainable import Trainable

TEXT_TOWER_PREFIXES = ("clip.transformer.", "clip.text.")
IMAGE_TOWER_PREFIX = "clip.visual."


def text_mlp_out_biases(model: nn.Module) -> set[str]:
    """``c_proj.bias`` of every text block (the text tower's only ``c_proj`` is the MLP's second linear)."""
    return {name for name, _ in model.named_parameters()
            if name.startswith(TEXT_TOWER_PREFIXES) and "c_proj.bias" in name}


def image_layernorms(model: nn.Module) -> set[str]:
    """Gain and bias of every LayerNorm module of the image tower."""
    visual = model.clip.visual
    names = set()
    for module_name, module in visual.named_modules():
        if isinstance(module, nn.LayerNorm):
            prefix = f"{IMAGE_TOWER_PREFIX}{module_name}." if module_name else IMAGE_TOWER_PREFIX
            names.update(prefix + name for name, _ in module.named_parameters(recurse=False))
    return names


def clipfit_trainable(model: nn.Module) -> set[str]:
    return text_mlp_out_biases(model) | image_layernorms(model)


@register_method("clipfit")
@dataclass(kw_only=True)
class ClipFit(TextHeadMethod):
    """CLIPFit: CE through the text head plus ``kd_lambda`` times the text KD term (8, the base-to-novel value)."""

    trainable: ClassVar[Trainable] = Trainable(clipfit_trainable)

    kd_lambda: float = 8.0
