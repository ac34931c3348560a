"""``ImageClassifier``: an open_clip model's image tower followed by a linear head.

Its ``state_dict`` is the unit that is fine-tuned, interpolated, souped and saved. Keys keep open_clip's
names under ``clip.`` so that stripping the prefix gives an open_clip state dict again.
"""

from __future__ import annotations

import torch
from torch import nn

from wiseft_lab.models.zeroshot import ClassificationHead

# Attributes that make up the text tower of open_clip's CLIP (and CustomTextCLIP's ``text``).
TEXT_TOWER_ATTRS = ("transformer", "token_embedding", "positional_embedding", "ln_final", "text_projection",
                    "attn_mask", "text")


def drop_text_tower(clip: nn.Module) -> nn.Module:
    """Remove the text tower in place: image-only methods neither train nor need to save it."""
    for name in TEXT_TOWER_ATTRS:
        if hasattr(clip, name):
            delattr(clip, name)
    return clip


def has_text_tower(clip: nn.Module) -> bool:
    return hasattr(clip, "transformer") or hasattr(clip, "text")


class ImageClassifier(nn.Module):
    """``head(normalize(clip.encode_image(x)))``; the text tower is kept only when a method trains it."""

    def __init__(self, clip: nn.Module, head: ClassificationHead, keep_text: bool = False):
        super().__init__()
        self.clip = clip if keep_text else drop_text_tower(clip)
        self.head = head

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.clip.encode_image(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.image_features(images))
