"""The zero-shot head has the exact semantics of the official WiSE-FT code (hand-computed example)."""

from __future__ import annotations

import math

import torch
from torch import nn

from wiseft_lab import build_zeroshot_head
from wiseft_lab.models.templates import resolve_templates
from wiseft_lab.models.zeroshot import ClassificationHead


class FakeClip(nn.Module):
    """encode_text returns a fixed vector per prompt string, so the head can be computed by hand."""

    def __init__(self, table: dict[str, list[float]], logit_scale: float):
        super().__init__()
        self.table = table
        self.prompts: list[str] = []
        self.logit_scale = nn.Parameter(torch.tensor(logit_scale))

    def tokenizer(self, texts: list[str]) -> torch.Tensor:
        start = len(self.prompts)
        self.prompts.extend(texts)
        return torch.arange(start, start + len(texts))

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.tensor([self.table[self.prompts[int(t)]] for t in tokens])


def test_head_matches_hand_computed_example():
    table = {
        "a cat.": [3.0, 4.0], "the cat!": [0.0, 2.0],  # normalised: (0.6, 0.8), (0, 1)
        "a dog.": [1.0, 0.0], "the dog!": [5.0, 0.0],  # normalised: (1, 0), (1, 0)
    }
    model = FakeClip(table, logit_scale=math.log(10.0))
    head = build_zeroshot_head(model, model.tokenizer, ["cat", "dog"], ["a {}.", lambda c: f"the {c}!"])
    # cat: mean of (0.6, 0.8) and (0, 1) = (0.3, 0.9); normalised = (0.3, 0.9) / sqrt(0.9); times 10.
    cat = torch.tensor([0.3, 0.9]) / math.sqrt(0.9) * 10
    dog = torch.tensor([10.0, 0.0])
    torch.testing.assert_close(head.weight.data, torch.stack([cat, dog]))
    assert torch.equal(head.bias.data, torch.zeros(2)) and head.bias.requires_grad
    assert isinstance(head, nn.Linear) and head.weight.shape == (2, 2)
    # Applied to L2-normalised image features: (2, 0) -> (1, 0).
    logits = head(torch.tensor([[2.0, 0.0]]))
    torch.testing.assert_close(logits, torch.tensor([[cat[0].item(), 10.0]]))


def test_template_sets_come_from_open_clip():
    assert len(resolve_templates("openai_imagenet")) == 80
    assert resolve_templates("simple") == ("a photo of a {}.",)
    assert callable(resolve_templates("openai_imagenet")[0])


def test_head_on_real_open_clip_model(tiny_bundle):
    model, tokenizer = tiny_bundle.model, tiny_bundle.tokenizer
    head = build_zeroshot_head(model, tokenizer, ["circle", "square", "star"], "openai_imagenet")
    norms = head.weight.norm(dim=-1)
    torch.testing.assert_close(norms, torch.full((3,), model.logit_scale.exp().item()))
    assert isinstance(head, ClassificationHead) and head.normalize
