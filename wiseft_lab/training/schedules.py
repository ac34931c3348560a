"""Learning-rate schedules, stepped once per optimisation step."""

from __future__ import annotations

import logging
import math

import torch

log = logging.getLogger(__name__)


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


def epoch_warmup_cosine_lr(epoch: int, base_lr: float, epochs: int, warmup_epochs: int = 1,
                           warmup_lr: float = 1e-5) -> float:
    """CoOp/CLIPFit's lr for a 0-based ``epoch`` (Dassl ``cosine`` + ``ConstantWarmupScheduler``, recount on).

    ``warmup_lr`` for the first ``warmup_epochs`` epochs, then ``0.5 * base_lr * (1 + cos(pi * t / epochs))`` with
    ``t = epoch - warmup_epochs``: the cosine restarts at the full lr after the warm-up and runs over ``epochs``
    (the whole run's length), so the last epoch does not reach 0.
    """
    if epoch < warmup_epochs:
        return warmup_lr
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * (epoch - warmup_epochs) / epochs))


class EpochWarmupCosine:
    """:func:`epoch_warmup_cosine_lr` per epoch, for a trainer that calls ``set_step`` every optimisation step.

    The epoch of a step is ``step // steps_per_epoch`` with ``steps_per_epoch = ceil(total_steps / epochs)``;
    ``epochs`` must be the number of epochs the trainer runs (the config interpolates ``finetune.epochs``).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, total_steps: int, epochs: int, warmup_epochs: int = 1,
                 warmup_lr: float = 1e-5, warmup_steps: int | None = None):
        if warmup_steps is not None:  # a preset's per-step warm-up, when a method (finetune=clipfit) swapped schedules
            log.warning("scheduler.warmup_steps=%s does not apply to CoOp/CLIPFit's per-epoch schedule (its warm-up is "
                        "warmup_epochs=%d at warmup_lr=%g): not used", warmup_steps, warmup_epochs, warmup_lr)
        if epochs <= 0:
            raise ValueError(f"epochs must be positive, got {epochs}")
        self.optimizer = optimizer
        self.epochs = int(epochs)
        self.steps_per_epoch = max(1, math.ceil(int(total_steps) / self.epochs))
        self.warmup_epochs = int(warmup_epochs)
        self.warmup_lr = float(warmup_lr)
        self.base_lrs = [group.setdefault("initial_lr", group["lr"]) for group in optimizer.param_groups]

    def epoch_lr(self, epoch: int, base_lr: float) -> float:
        return epoch_warmup_cosine_lr(epoch, base_lr, self.epochs, self.warmup_epochs, self.warmup_lr)

    def set_step(self, step: int) -> float:
        epoch = step // self.steps_per_epoch
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = self.epoch_lr(epoch, base)
        return self.optimizer.param_groups[0]["lr"]
