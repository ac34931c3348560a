"""Soups of models fine-tuned on different data sets (model soups, Sec. 3.5): only what they share is averaged.

Ingredients fine-tuned on other tasks carry heads over other classes (and may lack the text tower); the entries
every source has with the same shape and a floating dtype (the towers) are averaged uniformly, and every other
entry of ``template`` (the zero-shot model of the target task: its head over the target's classes) is kept. The
zero-shot model itself is one ingredient when it is among ``sources``. Streamed one tensor at a time.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from wiseft_lab.weight_space.deltas import iter_aligned
from wiseft_lab.weight_space.ingredients import Source, StateDict, iter_tensors, tensor_specs

HEAD_PREFIX = "head."  # a task's own head: never averaged across tasks, even when the shapes agree


def shared_keys(template: Source, sources: Sequence[Source]) -> list[str]:
    """The template's floating entries, heads aside, that every source has with the template's shape (its order)."""
    specs = [tensor_specs(source) for source in sources]
    return [key for key, (shape, floating) in tensor_specs(template).items()
            if floating and not key.startswith(HEAD_PREFIX) and all(s.get(key) == (shape, True) for s in specs)]


def cross_dataset_soup(template: Source, sources: Sequence[Source],
                       keys: Sequence[str] | None = None) -> tuple[StateDict, list[str]]:
    """``template`` with every shared entry replaced by the sources' mean (float32 at least); and those keys.

    ``keys``: the entries to average instead of what ``sources`` share, e.g. what a whole pool shares, so that one
    ingredient alone (``sources=[it]``) becomes a model of the target with exactly the entries a soup mixes.
    """
    if not sources:
        raise ValueError("A soup needs at least one ingredient")
    keys = shared_keys(template, sources) if keys is None else list(keys)
    state = {key: tensor.clone() for key, tensor in iter_tensors(template)}
    for key, tensors in iter_aligned(sources, keys):
        compute = torch.promote_types(state[key].dtype, torch.float32)
        state[key] = (sum(t.to(compute) for t in tensors) / len(sources)).to(state[key].dtype)
    return state, keys
