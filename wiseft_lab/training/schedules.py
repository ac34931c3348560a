"""Learning-rate schedules, stepped once per optimisation step."""

from __future__ import annotations

import math

import torch


def warmup_cosine_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """WiSE-FT's ``cosine_lr`` as a multiplier of the base lr.

    ``(step + 1) / warmup`` during warm-up, then ``0.5 * (1 + cos(pi * (step - warmup) / (total - warmup)))``.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = total_steps - warmup_steps
    if decay_steps <= 0:
        return 0.0
    return 0.5 * (1.0 + math.cos(math.pi * (step - warmup_steps) / decay_steps))


class WarmupCosine:
    """Sets every param group's lr to ``base_lr * warmup_cosine_factor(step)`` before each step.

    Stateless apart from the base lrs, so resuming is ``set_step(step)``: nothing to pickle.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0):
        self.optimizer = optimizer
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.base_lrs = [group.setdefault("initial_lr", group["lr"]) for group in optimizer.param_groups]

    def factor(self, step: int) -> float:
        return warmup_cosine_factor(step, self.warmup_steps, self.total_steps)

    def set_step(self, step: int) -> float:
        factor = self.factor(step)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base * factor
        return self.optimizer.param_groups[0]["lr"]


class Constant(WarmupCosine):
    """A fixed lr (after an optional linear warm-up), for probes and ablations."""

    def factor(self, step: int) -> float:
        return (step + 1) / self.warmup_steps if step < self.warmup_steps else 1.0
