"""The output-space ensemble baseline: the mean of the ingredients' logits (not a weight-space soup)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torch.func import functional_call


class OutputEnsemble(nn.Module):
    """``mean_i model(x; theta_i)``: one architecture (``skeleton``) run with each member's weights.

    Unlike a soup, the ensemble costs one forward pass per member and keeps every member's weights (on the
    skeleton's device). The skeleton's own weights are not used.
    """

    def __init__(self, skeleton: nn.Module, states: Sequence[Mapping[str, torch.Tensor]]):
        super().__init__()
        if not states:
            raise ValueError("An ensemble needs at least one member")
        self.skeleton = skeleton
        device = next(skeleton.parameters()).device
        self.members = [{k: v.to(device) for k, v in state.items()} for state in states]

    def member_logits(self, images: torch.Tensor) -> torch.Tensor:
        """Every member's logits, ``(members, batch, classes)``: the evaluation projects each member's logits onto a
        set's classes before averaging them (for ObjectNet's max over groups the order matters)."""
        return torch.stack([functional_call(self.skeleton, state, (images,)).float() for state in self.members])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.member_logits(images).mean(dim=0)
