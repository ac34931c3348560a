"""Image features reused across models that share one image tower.

A linear-classifier sweep (``finetune=lc``: WiSE-FT over heads, soups of LC ingredients, base-to-novel heads)
evaluates many models whose image towers are bit-identical; only ``head.*`` differs. Running the tower once
per eval set and scoring every head on its outputs turns an 11-alpha sweep into one feature pass plus 11 small
matmuls. The tower is identified by its weights (compared exactly with the copy kept for the features), so a
different tower is never scored on stale features; the head is applied batch by batch under the same autocast as
``model(images)``, so the logits are the ones the full forward pass gives, bit for bit.
"""

from __future__ import annotations

import torch
from torch import nn


def image_tower(model: nn.Module) -> nn.Module | None:
    """The module whose outputs a feature cache may keep: an :class:`ImageClassifier`'s ``clip.visual``."""
    clip = getattr(model, "clip", None)
    head = getattr(model, "head", None)
    if clip is None or head is None or not hasattr(model, "image_features"):
        return None
    return getattr(clip, "visual", None)


def _same_weights(tower: nn.Module, kept: dict[str, torch.Tensor]) -> bool:
    state = tower.state_dict()
    return state.keys() == kept.keys() and all(
        value.dtype == kept[name].dtype and value.shape == kept[name].shape and torch.equal(value, kept[name])
        for name, value in state.items())


class FeatureCache:
    """Per eval set, the tower outputs (and labels) of the last tower seen, batch by batch.

    ``bind(model)`` before scoring a model makes its tower the current one and clears the features when the tower
    differs from the one they came from. One copy of the tower's weights is kept to recognise it: comparing
    tensors exactly is cheaper than hashing them and cannot collide.
    """

    def __init__(self) -> None:
        self._weights: dict[str, torch.Tensor] | None = None
        self._versions: list[tuple[int, int]] = []  # (id, in-place version) of the bound tower's tensors
        self._sets: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self.passes = 0  # tower passes over a set (one per set and distinct tower when the cache works)

    def bind(self, model: nn.Module) -> None:
        tower = image_tower(model)
        if tower is None:
            self._weights, self._sets, self._versions = None, {}, []
            return
        versions = [(id(t), t._version) for t in tower.state_dict(keep_vars=True).values()]
        if versions == self._versions:  # the very tensors bound last time, untouched since: no comparison needed
            return
        if self._weights is None or not _same_weights(tower, self._weights):
            self._weights = {name: value.detach().clone() for name, value in tower.state_dict().items()}
            self._sets = {}
        self._versions = versions

    def get(self, set_name: str) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        """The ``(features, labels)`` batches of ``set_name`` for the bound tower, or None."""
        return self._sets.get(set_name)

    def put(self, set_name: str, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.passes += 1
        if self._weights is not None:
            self._sets[set_name] = batches
