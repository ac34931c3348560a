"""Accuracy metrics (pure functions)."""

from __future__ import annotations

import torch


def top1_correct(logits: torch.Tensor, labels: torch.Tensor) -> int:
    """How many rows have their label as the arg-max (ties resolve to the lowest index, like argmax)."""
    return int((logits.argmax(dim=-1).cpu() == labels.cpu()).sum())


def top1(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Micro top-1 accuracy in [0, 1]."""
    if len(labels) == 0:
        raise ValueError("top-1 of an empty set is undefined")
    return top1_correct(logits, labels) / len(labels)


def harmonic_mean(base: float, novel: float) -> float:
    """Base-to-novel's summary, ``2 B N / (B + N)``; 0 when both are 0."""
    return 2 * base * novel / (base + novel) if base + novel > 0 else 0.0
