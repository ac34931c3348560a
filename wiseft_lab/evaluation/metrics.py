"""Accuracy metrics (pure functions)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch


def top1_correct(logits: torch.Tensor, labels: torch.Tensor) -> int:
    """How many rows have their label as the arg-max (ties resolve to the lowest index, like argmax)."""
    return int((logits.argmax(dim=-1).cpu() == labels.cpu()).sum())


def top1(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Micro top-1 accuracy in [0, 1]."""
    if len(labels) == 0:
        raise ValueError("top-1 of an empty set is undefined")
    return top1_correct(logits, labels) / len(labels)


def average_over(metrics: Mapping[str, float], datasets: Sequence[str], metric: str = "top1") -> float | None:
    """Unweighted mean of ``<dataset>/<metric>`` over ``datasets`` (the papers' "avg shifts"); None if empty."""
    values = [metrics[f"{name}/{metric}"] for name in datasets]
    return sum(values) / len(values) if values else None


def harmonic_mean(base: float, novel: float) -> float:
    """Base-to-novel's summary, ``2 B N / (B + N)``; 0 when both are 0."""
    return 2 * base * novel / (base + novel) if base + novel > 0 else 0.0
